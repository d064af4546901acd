package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/quictransport/wire"
	"github.com/tdfs/tdfs/replayer"
)

func newTestHandler(t *testing.T, dir, state string) *handler {
	t.Helper()
	r, err := replayer.New(dir, replayer.Options{Chown: os.Geteuid() == 0})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	h, err := newHandler(r, dir, state)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestDirtyMarker: a handler that applied ops without syncing leaves a
// marker; the next handler on that state dir refuses to follow anyone.
func TestDirtyMarker(t *testing.T) {
	base := t.TempDir()
	dir, state := filepath.Join(base, "r"), filepath.Join(base, "st")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	h := newTestHandler(t, dir, state)
	if _, _, err := h.State(); err != nil {
		t.Fatalf("fresh replica: %v", err)
	}
	run := wire.RunID{7}
	if err := h.Apply(run, 1, &wire.Mkdir{Path: "d", Mode: 0o755, Mtime: wire.Time{Omit: true}, DirMtime: wire.Time{Omit: true}}); err != nil {
		t.Fatal(err)
	}
	if err := h.Sync(run, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(state, dirtyFile)); !os.IsNotExist(err) {
		t.Fatalf("marker left after a sync: %v", err)
	}
	// Restart after a clean sync: usable, at seq 1 of run.
	h2 := newTestHandler(t, dir, state)
	if r, d, err := h2.State(); err != nil || r != run || d != 1 {
		t.Fatalf("after a clean stop: %x %d %v", r, d, err)
	}
	if err := h2.Apply(run, 2, &wire.Mkdir{Path: "e", Mode: 0o755, Mtime: wire.Time{Omit: true}, DirMtime: wire.Time{Omit: true}}); err != nil {
		t.Fatal(err)
	}
	// "Crash": a new handler without h2 having synced.
	h3 := newTestHandler(t, dir, state)
	if _, _, err := h3.State(); err == nil || errors.Is(err, quictransport.ErrUnverified) {
		t.Fatalf("after a crash with unsynced ops: %v, want a refusal no vouch overrides", err)
	}
}

// TestUnverifiedReplica: a non-empty replica without state is unverified
// until a vouched run records state in it.
func TestUnverifiedReplica(t *testing.T) {
	base := t.TempDir()
	dir, state := filepath.Join(base, "r"), filepath.Join(base, "st")
	if err := os.MkdirAll(filepath.Join(dir, "seeded"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := newTestHandler(t, dir, state)
	if _, _, err := h.State(); !errors.Is(err, quictransport.ErrUnverified) {
		t.Fatalf("seeded replica without state: %v, want ErrUnverified", err)
	}
	run := wire.RunID{9}
	if err := h.Sync(run, 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.State(); err != nil {
		t.Fatalf("after recording state: %v", err)
	}
}
