package slave

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

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

func TestLoadStateCorrupt(t *testing.T) {
	good := string(encodeState(State{Durable: 7}))
	cases := map[string]string{
		"empty":        "",
		"garbage":      "\x00\x01garbage",
		"truncated":    good[:len(good)-5],
		"no newline":   good[:len(good)-1],
		"extra line":   good + "more\n",
		"flipped":      good[:30] + "X" + good[31:],
		"bad magic":    "tdfs-slave-state 1" + good[len("tdfs-slave-state 2"):],
		"bad resync":   strings.Replace(good, "resyncing 0", "resyncing 2", 1),
		"bad checksum": good[:len(good)-9] + "00000000\n",
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
	// And the good one loads.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := LoadState(dir); err != nil || s.Durable != 7 {
		t.Errorf("LoadState of a good file = %+v, %v", s, err)
	}
}
