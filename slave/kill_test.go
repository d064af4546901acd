package slave

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tdfs/tdfs/internal/treecmp"
	"github.com/tdfs/tdfs/wire"
)

// killOps makes a seeded stream of n ops (1-based; op 1 is a RunStart):
// files created, written through their handles, released, renamed and
// unlinked, with Sync ops among them (nil: a Sync at that seq). Every time
// is explicit, so two replicas of the stream are identical.
func killOps(rng *rand.Rand, n int) []wire.Op {
	ops := make([]wire.Op, n+1)
	ops[1] = &wire.RunStart{Run: wire.RunID{7}}
	var files []string            // names in the tree
	var handles []uint64          // open, oldest first
	open := map[uint64]string{}   // handle -> the name it was opened under
	isOpen := map[string]uint64{} // name -> its handle, while open
	var handle uint64
	pick := func() (uint64, bool) {
		if len(handles) == 0 {
			return 0, false
		}
		return handles[rng.IntN(len(handles))], true
	}
	for seq := 2; seq <= n; seq++ {
		t := wire.Time{Sec: 1_000_000 + int64(seq)}
		h, anyOpen := pick()
		switch r := rng.IntN(12); {
		case r < 2 || len(files) == 0:
			handle++
			name := "f" + strconv.Itoa(seq)
			files = append(files, name)
			open[handle], isOpen[name] = name, handle
			handles = append(handles, handle)
			ops[seq] = &wire.Create{Path: name, Handle: handle, Mode: 0o644, Mtime: t, DirMtime: t}
		case r < 6 && anyOpen:
			data := make([]byte, 1+rng.IntN(8<<10))
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			ops[seq] = &wire.Write{Handle: h, Off: rng.Int64N(64 << 10), Data: data, Mtime: t}
		case r < 7 && anyOpen:
			delete(isOpen, open[h])
			delete(open, h)
			handles = slices.DeleteFunc(handles, func(x uint64) bool { return x == h })
			ops[seq] = &wire.Release{Handle: h}
		case r < 8:
			i := rng.IntN(len(files))
			if _, busy := isOpen[files[i]]; busy {
				ops[seq] = nil // a Sync instead: renaming an open file would change what its handle is recorded under
				continue
			}
			name := "r" + strconv.Itoa(seq)
			ops[seq] = &wire.Rename{OldPath: files[i], NewPath: name, OldDirMtime: t, NewDirMtime: t}
			files[i] = name
		case r < 9:
			i := rng.IntN(len(files))
			if _, busy := isOpen[files[i]]; busy {
				continue // a Sync
			}
			ops[seq] = &wire.Unlink{Path: files[i], DirMtime: t}
			files = append(files[:i], files[i+1:]...)
		}
		// else: nil, a Sync
	}
	return ops
}

// play applies ops from..to to h as the transport does (a Sync op is a
// Sync call) and returns the last seq synced (0 if none).
func play(t *testing.T, h *Replica, ops []wire.Op, from, to int) (synced uint64) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		var err error
		if ops[seq] == nil {
			err, synced = h.Sync(uint64(seq)), uint64(seq)
		} else {
			err = h.Apply(uint64(seq), ops[seq])
		}
		if err != nil {
			t.Fatalf("op %d (%v): %v", seq, ops[seq], err)
		}
	}
	return synced
}

// TestKillAnywhereResumes kills a slave (its Replica abandoned with its
// files open, as kill -9 leaves them to the kernel) after a random number
// of ops, again and again, sometimes with a save of its state torn in
// the middle (the slot it would have written next holds a random prefix
// of a record), and restarts it on the same state dir: each time it must
// come back at the last Sync as durable, not resyncing, resume after the
// last op it applied, and end with the tree of a replica that was never
// killed.
func TestKillAnywhereResumes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reopening handles needs CAP_DAC_READ_SEARCH (root)")
	}
	seed := time.Now().UnixNano()
	if v := os.Getenv("KILL_SEED"); v != "" {
		seed, _ = strconv.ParseInt(v, 10, 64)
	}
	t.Logf("seed %d (KILL_SEED)", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	const n = 400
	ops := killOps(rng, n)

	refDir, refState := dirs(t)
	ref := newTestHandler(t, refDir, refState)
	play(t, ref, ops, 1, n)
	if err := ref.Sync(n); err != nil {
		t.Fatal(err)
	}
	ref.Close()

	dir, state := dirs(t)
	var synced uint64
	next, kills := 1, 0
	for next <= n {
		h := newTestHandler(t, dir, state)
		st := h.State()
		if st.Durable != synced || st.Resyncing || st.Applied < st.Durable || int(st.Applied) != next-1 {
			t.Fatalf("after kill %d: %+v; want durable %d (the last Sync), applied %d, not resyncing", kills, st, synced, next-1)
		}
		stop := min(n, next+rng.IntN(40))
		if s := play(t, h, ops, next, stop); s != 0 {
			synced = s
		}
		next = stop + 1
		if next > n {
			if err := h.Sync(n); err != nil {
				t.Fatal(err)
			}
			h.Close()
			break
		}
		// kill -9: h is abandoned. Sometimes it died in the middle of
		// its next save: that slot holds part of a record.
		kills++
		if rng.IntN(3) == 0 {
			tearNextSlot(t, state, rng)
		}
	}
	if d, err := treecmp.Diff(refDir, dir, treecmp.Options{}); err != nil || d != "" {
		t.Fatalf("after %d kills the replica differs from one never killed (%v):\n%s", kills, err, d)
	}
	t.Logf("%d kills", kills)
}

// tearNextSlot writes a random prefix of a record into the slot the
// state's next save would use.
func tearNextSlot(t *testing.T, state string, rng *rand.Rand) {
	t.Helper()
	st, err := LoadState(state)
	if err != nil {
		t.Fatal(err)
	}
	st.gen++
	st.Durable = rng.Uint64()
	slot, err := encodeSlot(st)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(state, stateFile), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(slot[:rng.IntN(len(encodeState(st)))], int64(st.gen%2)*stateSlotSize); err != nil {
		t.Fatal(err)
	}
}
