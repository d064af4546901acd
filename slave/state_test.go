package slave

import (
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tdfs/tdfs/wire"
)

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestStateRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state-dir")
	s, err := LoadState(dir)
	if err != nil || !reflect.DeepEqual(s, State{}) {
		t.Fatalf("LoadState of a missing dir: %+v, %v; want zero, nil", s, err)
	}
	want := State{Durable: 1<<64 - 1, Resyncing: true}
	for i := range want.Run {
		want.Run[i] = byte(i * 17)
		want.Epoch[i] = byte(i * 3)
	}
	want.Lineage = []wire.Epoch{{1, 2}, {3, 4}}
	if err := SaveState(dir, want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir: %v, mode %v, want 0700", err, fi.Mode())
	}
	if got, err := LoadState(dir); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("LoadState = %+v, %v; want %+v", got, err, want)
	}
	want.Durable, want.Lineage, want.Resyncing = 42, nil, false
	if err := SaveState(dir, want); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadState(dir); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("LoadState after overwrite = %+v, %v; want %+v", got, err, want)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{stateFile}) {
		t.Errorf("state dir holds %v, want only %s (no temp file left)", names, stateFile)
	}
}

// TestSaveStateFailureLeavesNoTemp: when the rename fails the temp file
// goes, and the old state stays readable.
func TestSaveStateFailureLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	// A non-empty directory where the state file goes: rename fails.
	if err := os.MkdirAll(filepath.Join(dir, stateFile, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := SaveState(dir, State{Durable: 1}); err == nil {
		t.Fatal("SaveState over a directory succeeded")
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{stateFile}) {
		t.Errorf("state dir holds %v after a failed save", names)
	}
}

// slotFile returns a whole state file holding s in its slot.
func slotFile(t *testing.T, s State) string {
	t.Helper()
	slot, err := encodeSlot(s)
	if err != nil {
		t.Fatal(err)
	}
	file := []byte(strings.Repeat("\n", 2*stateSlotSize))
	copy(file[(s.gen%2)*stateSlotSize:], slot)
	return string(file)
}

func TestLoadStateCorrupt(t *testing.T) {
	rec := string(encodeState(State{Durable: 7, gen: 2}))
	pad := func(r string) string { return r + strings.Repeat("\n", 2*stateSlotSize-len(r)) }
	v2 := "tdfs-slave-state 2\nepoch " + strings.Repeat("0", 32) + "\nlineage -\nrun " + strings.Repeat("0", 32) +
		"\ndurable 7\nresyncing 0\n"
	v2 += fmt.Sprintf("crc32c %08x\n", crc32.Checksum([]byte(v2), castagnoli))
	cases := map[string]string{
		"empty":         "",
		"garbage":       "\x00\x01garbage",
		"one record":    rec,
		"truncated":     pad(rec[:len(rec)-5]),
		"flipped":       pad(rec[:30] + "X" + rec[31:]),
		"bad magic":     pad("tdfs-slave-state 1" + rec[len("tdfs-slave-state 3"):]),
		"bad resync":    pad(strings.Replace(rec, "resyncing 0", "resyncing 2", 1)),
		"bad dirty":     pad(strings.Replace(rec, "dirty 0", "dirty x", 1)),
		"bad checksum":  pad(rec[:len(rec)-9] + "00000000\n"),
		"wrong slot":    strings.Repeat("\n", stateSlotSize) + pad(rec)[:stateSlotSize],
		"both empty":    strings.Repeat("\n", 2*stateSlotSize),
		"too long":      slotFile(t, State{Durable: 7, gen: 2}) + "\n",
		"v2 extra line": v2 + "more\n",
		"v2 flipped":    v2[:30] + "X" + v2[31:],
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if s, err := LoadState(dir); !errors.Is(err, ErrBadState) {
				t.Errorf("LoadState = %+v, %v; want ErrBadState", s, err)
			}
		})
	}
	// And the good ones load: a whole file, and one of version 2.
	for name, content := range map[string]string{"v3": slotFile(t, State{Durable: 7, gen: 2}), "v2": v2} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if s, err := LoadState(dir); err != nil || s.Durable != 7 {
			t.Errorf("LoadState of a good %s file = %+v, %v", name, s, err)
		}
	}
}

// TestStateStoreTornSaves saves random states in place and, before each
// save, tears the slot the save would write (a crash in the middle of
// it: a random prefix of the new bytes over the old). LoadState must
// always return the state of the last save that completed, or the one
// torn if its bytes all landed: never another, never an error.
func TestStateStoreTornSaves(t *testing.T) {
	seed := time.Now().UnixNano()
	if v := os.Getenv("STATE_SEED"); v != "" {
		seed, _ = strconv.ParseInt(v, 10, 64)
	}
	t.Logf("seed %d (STATE_SEED)", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	dir := t.TempDir()
	st := stateStore{dir: dir}
	defer st.close()
	var last State
	random := func() State {
		s := State{Durable: rng.Uint64N(1 << 40), Resyncing: rng.IntN(2) == 0, Dirty: rng.IntN(2) == 0}
		s.Run[0], s.Epoch[0] = byte(rng.IntN(256)), byte(rng.IntN(256))
		for range rng.IntN(wire.MaxLineage + 1) {
			s.Lineage = append(s.Lineage, wire.Epoch{byte(rng.IntN(256))})
		}
		return s
	}
	for i := range 300 {
		next := random()
		if i > 0 && rng.IntN(3) == 0 {
			// A torn save of next: the new slot only partly written.
			next.gen = st.gen + 1
			slot, err := encodeSlot(next)
			if err != nil {
				t.Fatal(err)
			}
			n := rng.IntN(len(slot) + 1)
			if _, err := st.f.WriteAt(slot[:n], int64(next.gen%2)*stateSlotSize); err != nil {
				t.Fatal(err)
			}
			// Only a slot holding the whole new record may be taken.
			got, err := LoadState(dir)
			whole := n >= len(encodeState(next))
			if err != nil || !reflect.DeepEqual(got, last) && !(whole && reflect.DeepEqual(got, next)) {
				t.Fatalf("save %d torn after %d of %d bytes: LoadState = %+v, %v; want %+v", i, n, len(slot), got, err, last)
			}
		}
		if err := st.save(next); err != nil {
			t.Fatal(err)
		}
		next.gen = st.gen
		last = next
		if got, err := LoadState(dir); err != nil || !reflect.DeepEqual(got, last) {
			t.Fatalf("save %d: LoadState = %+v, %v; want %+v", i, got, err, last)
		}
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{stateFile}) {
		t.Errorf("state dir holds %v, want only %s", names, stateFile)
	}
}
