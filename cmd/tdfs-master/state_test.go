package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tdfs/tdfs/quictransport/wire"
)

func TestState(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if run, head, clean, err := loadState(dir); err != nil || run != (wire.RunID{}) || head != 0 || clean {
		t.Fatalf("no state: %x %d %v %v", run, head, clean, err)
	}
	run := wire.RunID{1, 2, 3, 15: 16}
	if err := saveState(dir, run, 0, false); err != nil {
		t.Fatal(err)
	}
	if got, head, clean, err := loadState(dir); err != nil || got != run || head != 0 || clean {
		t.Fatalf("running: %x %d %v %v", got, head, clean, err)
	}
	if err := saveState(dir, run, 1234, true); err != nil {
		t.Fatal(err)
	}
	if got, head, clean, err := loadState(dir); err != nil || got != run || head != 1234 || !clean {
		t.Fatalf("clean: %x %d %v %v", got, head, clean, err)
	}
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := loadState(dir); err == nil {
		t.Fatal("a damaged state file was accepted")
	}
}
