package slave

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdfs/tdfs/replayer"
	"github.com/tdfs/tdfs/wire"
)

var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// newTestHandler opens a handler on dir and state as tdfs-slave does. The
// replayer is not closed by Cleanup: tests that simulate kill -9 abandon
// it with its files open, as a dead process would (its fds close at exit).
func newTestHandler(t testing.TB, dir, state string) *Replica {
	t.Helper()
	r, err := replayer.New(dir, replayer.Options{Chown: os.Geteuid() == 0})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(r, dir, state, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func dirs(t *testing.T) (dir, state string) {
	base := t.TempDir()
	dir, state = filepath.Join(base, "r"), filepath.Join(base, "st")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, state
}

var omit = wire.Time{Omit: true}

// TestResumeAfterKill: a slave killed after applying ops it had not made
// durable resumes after the last one applied (same boot), with the file
// the master holds open reopened under its handle.
func TestResumeAfterKill(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reopening handles needs CAP_DAC_READ_SEARCH (root)")
	}
	dir, state := dirs(t)
	h := newTestHandler(t, dir, state)
	ops := []wire.Op{
		&wire.RunStart{Run: wire.RunID{1}},
		&wire.Create{Path: "f", Handle: 7, Mode: 0o644, Mtime: omit, DirMtime: omit},
		&wire.Write{Handle: 7, Off: 0, Data: []byte("hello "), Mtime: omit},
	}
	for i, op := range ops {
		if err := h.Apply(uint64(i+1), op); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Sync(3); err != nil {
		t.Fatal(err)
	}
	if err := h.Apply(4, &wire.Rename{OldPath: "f", NewPath: "g", OldDirMtime: omit, NewDirMtime: omit}); err != nil {
		t.Fatal(err)
	}
	// kill -9: h is abandoned without a sync.
	h2 := newTestHandler(t, dir, state)
	st := h2.State()
	if st.Resyncing || st.Applied != 4 || st.Durable != 3 || st.Run != (wire.RunID{1}) {
		t.Fatalf("after kill: %+v, want applied 4, durable 3, not resyncing", st)
	}
	// The master resends op 5 on: a write through the handle opened
	// before the kill lands in the renamed file.
	if err := h2.Apply(5, &wire.Write{Handle: 7, Off: 6, Data: []byte("world"), Mtime: omit}); err != nil {
		t.Fatal(err)
	}
	if err := h2.Sync(5); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "g")); err != nil || !bytes.Equal(b, []byte("hello world")) {
		t.Fatalf("g = %q, %v", b, err)
	}
	if st, err := LoadState(state); err != nil || st.Dirty {
		t.Fatalf("dirty after a sync: %+v, %v", st, err)
	}
}

// TestReapplyHalfDone: the op in progress at the kill is applied again
// idempotently (a rename that already happened is not an error).
func TestReapplyHalfDone(t *testing.T) {
	dir, state := dirs(t)
	h := newTestHandler(t, dir, state)
	if err := h.Apply(1, &wire.Mkdir{Path: "a", Mode: 0o755, Mtime: omit, DirMtime: omit}); err != nil {
		t.Fatal(err)
	}
	// Op 2 reached the tree, but the kill came before it was recorded.
	if err := os.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	h2 := newTestHandler(t, dir, state)
	if st := h2.State(); st.Applied != 1 || st.Resyncing {
		t.Fatalf("after kill: %+v", st)
	}
	if err := h2.Apply(2, &wire.Rename{OldPath: "a", NewPath: "b", OldDirMtime: omit, NewDirMtime: omit}); err != nil {
		t.Fatalf("re-applying a rename that happened: %v", err)
	}
	// Op 3 is not a re-application: a rename of a missing name fails.
	if err := h2.Apply(3, &wire.Rename{OldPath: "a", NewPath: "c", OldDirMtime: omit, NewDirMtime: omit}); err == nil {
		t.Fatal("rename of a missing name succeeded outside re-application")
	}
}

// TestHostCrash: a progress log from another boot says nothing about the
// tree: the replica needs a resync.
func TestHostCrash(t *testing.T) {
	dir, state := dirs(t)
	h := newTestHandler(t, dir, state)
	if err := h.Apply(1, &wire.Mkdir{Path: "a", Mode: 0o755, Mtime: omit, DirMtime: omit}); err != nil {
		t.Fatal(err)
	}
	h.Close()
	// Rewrite the progress log as if written before a reboot.
	p, _, err := openProgressAt(state, "00000000-0000-0000-0000-000000000000")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.applied(1); err != nil {
		t.Fatal(err)
	}
	p.close()
	h2 := newTestHandler(t, dir, state)
	if st := h2.State(); !st.Resyncing {
		t.Fatalf("after a host crash: %+v, want resyncing", st)
	}
}

// TestFollow: adopting a master is durable, and marks the tree for a
// resync until a pass ends and is synced.
func TestFollow(t *testing.T) {
	dir, state := dirs(t)
	h := newTestHandler(t, dir, state)
	e, parent := wire.Epoch{5}, wire.Epoch{4}
	if err := h.Follow(e, []wire.Epoch{parent}); err != nil {
		t.Fatal(err)
	}
	h2 := newTestHandler(t, dir, state)
	st := h2.State()
	if st.Epoch != e || len(st.Lineage) != 1 || st.Lineage[0] != parent || !st.Resyncing {
		t.Fatalf("after Follow: %+v", st)
	}
	noReply := func(wire.ResyncReply) error { return errors.New("no reply expected") }
	if err := h2.ApplyItem(10, &wire.ResyncBegin{Pass: 1, Rebase: true}, noReply); err != nil {
		t.Fatal(err)
	}
	if err := h2.ApplyItem(10, &wire.ResyncEnd{Pass: 1}, noReply); err != nil {
		t.Fatal(err)
	}
	if err := h2.Sync(10); err != nil {
		t.Fatal(err)
	}
	h3 := newTestHandler(t, dir, state)
	if st := h3.State(); st.Resyncing || st.Durable != 10 || st.Epoch != e {
		t.Fatalf("after a pass: %+v", st)
	}
}

// TestUnknownHandleAsksForResync: a write through a handle this replica
// never saw opened cannot be placed.
func TestUnknownHandleAsksForResync(t *testing.T) {
	dir, state := dirs(t)
	h := newTestHandler(t, dir, state)
	err := h.Apply(1, &wire.Write{Handle: 99, Data: []byte("x"), Mtime: omit})
	if !errors.Is(err, wire.ErrNeedsResync) || !h.State().Resyncing {
		t.Fatalf("write to an unknown handle: %v, state %+v", err, h.State())
	}
}

// TestDivergenceIsRecordedFirst: an op that proves the replica differs
// (a parent the slave lacks) asks for a resync, and the state file says
// resyncing before the error returns, so a slave killed right then does
// not resume as if its tree were the op stream's prefix. After the
// master's unclean restart (wire.Unclean) the slave applies tolerantly and
// counts itself resyncing likewise, until a repairing pass ends.
func TestDivergenceIsRecordedFirst(t *testing.T) {
	dir, state := dirs(t)
	h := newTestHandler(t, dir, state)
	if err := h.Apply(1, &wire.RunStart{Run: wire.RunID{1}}); err != nil {
		t.Fatal(err)
	}
	err := h.Apply(2, &wire.Create{Path: "gone/f", Mode: 0o644, Mtime: omit, DirMtime: omit})
	if !errors.Is(err, wire.ErrNeedsResync) {
		t.Fatalf("create under a missing dir: %v, want wire.ErrNeedsResync", err)
	}
	if st, err := LoadState(state); err != nil || !st.Resyncing {
		t.Fatalf("state file after the divergence: %+v, %v: want resyncing", st, err)
	}
	if st := h.State(); !st.Resyncing || st.Applied != 1 {
		t.Errorf("State after the divergence: %+v, want resyncing at 1", st)
	}

	dir, state = dirs(t)
	h = newTestHandler(t, dir, state)
	ops := []wire.Op{&wire.RunStart{Run: wire.RunID{2}}, &wire.Unclean{},
		&wire.Open{Path: "lost", Handle: 3, Mtime: omit}, // made by the crashed run, never sent
		&wire.Write{Handle: 3, Data: []byte("x"), Mtime: omit}}
	for i, op := range ops {
		if err := h.Apply(uint64(i+1), op); err != nil {
			t.Fatalf("op %d (%v) after an unclean start: %v", i+1, op.Type(), err)
		}
	}
	if st, err := LoadState(state); err != nil || !st.Resyncing {
		t.Fatalf("state file after an unclean start: %+v, %v: want resyncing", st, err)
	}
	// A repairing pass ends: resyncing clears (the transport syncs next).
	reply := func(wire.ResyncReply) error { return nil }
	for _, it := range []wire.ResyncItem{&wire.ResyncBegin{Pass: 1}, &wire.ResyncEnd{Pass: 1}} {
		if err := h.ApplyItem(4, it, reply); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Sync(4); err != nil {
		t.Fatal(err)
	}
	if st, err := LoadState(state); err != nil || st.Resyncing || st.Durable != 4 {
		t.Fatalf("state file after the pass: %+v, %v: want durable 4, not resyncing", st, err)
	}
	// Strict again: a difference now asks for a resync.
	if err := h.Apply(5, &wire.Mkdir{Path: "gone/d", Mode: 0o755, Mtime: omit, DirMtime: omit}); !errors.Is(err, wire.ErrNeedsResync) {
		t.Errorf("mkdir under a missing dir after the pass: %v, want wire.ErrNeedsResync", err)
	}
}

// TestLegacyDirtyMarker: a state dir of version 2 with its dirty marker
// file (a slave of the previous version killed without sync) is dirty:
// the replica recovers from the progress log, and the first save of the
// new state file removes the marker.
func TestLegacyDirtyMarker(t *testing.T) {
	dir, state := dirs(t)
	h := newTestHandler(t, dir, state)
	if err := h.Apply(1, &wire.RunStart{Run: wire.RunID{1}}); err != nil {
		t.Fatal(err)
	}
	if err := h.Sync(1); err != nil {
		t.Fatal(err)
	}
	if err := h.Apply(2, &wire.Mkdir{Path: "d", Mode: 0o755, Mtime: omit, DirMtime: omit}); err != nil {
		t.Fatal(err)
	}
	// The previous version's files: state 2 at durable 1, a dirty marker.
	v2 := "tdfs-slave-state 2\nepoch " + strings.Repeat("0", 32) + "\nlineage -\nrun 01" + strings.Repeat("0", 30) +
		"\ndurable 1\nresyncing 0\n"
	v2 += fmt.Sprintf("crc32c %08x\n", crc32.Checksum([]byte(v2), castagnoli))
	if err := os.WriteFile(filepath.Join(state, stateFile), []byte(v2), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, legacyDirtyFile), []byte("applied ops not yet durable\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// kill -9 and restart.
	h2 := newTestHandler(t, dir, state)
	if st := h2.State(); st.Applied != 2 || st.Durable != 1 || st.Resyncing {
		t.Fatalf("after the restart: %+v, want applied 2 (the progress log), durable 1", st)
	}
	if err := h2.Apply(3, &wire.Mkdir{Path: "d/e", Mode: 0o755, Mtime: omit, DirMtime: omit}); err != nil {
		t.Fatal(err)
	}
	if err := h2.Sync(3); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(state, legacyDirtyFile)); !os.IsNotExist(err) {
		t.Errorf("legacy dirty marker still there: %v", err)
	}
	if st, err := LoadState(state); err != nil || st.Dirty || st.Durable != 3 {
		t.Errorf("state after the sync: %+v, %v", st, err)
	}
	h2.Close()
}
