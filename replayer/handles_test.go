package replayer

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tdfs/tdfs/wire"
)

func TestUnknownHandle(t *testing.T) {
	r := newTestReplayer(t, t.TempDir(), Options{})
	omit := wire.Time{Omit: true}
	for _, op := range []wire.Op{
		&wire.Write{Handle: 99, Data: []byte("x"), Mtime: omit},
		&wire.Write{Handle: 0, Data: []byte("x"), Mtime: omit},
		&wire.Release{Handle: 99},
		&wire.Fallocate{Handle: 99, Len: 10, Mtime: omit},
		&wire.Setattr{Handle: 99, Valid: wire.SetSize, Size: 1, Mtime: omit},
	} {
		if err := r.Apply(op); !errors.Is(err, ErrUnknownHandle) {
			t.Errorf("%s: %v, want ErrUnknownHandle", describe(op), err)
		}
	}
	if err := r.Apply(&wire.Create{Path: "f", Handle: 7, Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(&wire.Release{Handle: 7}); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(&wire.Release{Handle: 7}); !errors.Is(err, ErrUnknownHandle) {
		t.Errorf("second release: %v, want ErrUnknownHandle", err)
	}
}

// openFds counts this process's open file descriptors.
func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestHandleReuseClosesOld(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	base := openFds(t)
	omit := wire.Time{Omit: true}
	ops := []wire.Op{
		&wire.Create{Path: "a", Handle: 1, Mode: 0o644, Mtime: omit, DirMtime: omit},
		// The master released a (in an op this slave never saw, say) and
		// reused the id for b.
		&wire.Create{Path: "b", Handle: 1, Mode: 0o644, Mtime: omit, DirMtime: omit},
		&wire.Write{Handle: 1, Data: []byte("to b"), Mtime: omit},
	}
	for _, op := range ops {
		if err := r.Apply(op); err != nil {
			t.Fatal(err)
		}
	}
	if got := openFds(t); got != base+1 {
		t.Errorf("%d fds open, want %d: the old handle was not closed", got, base+1)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "b")); string(b) != "to b" {
		t.Errorf("b holds %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "a")); len(b) != 0 {
		t.Errorf("a holds %q", b)
	}
}

func TestResetHandles(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	base := openFds(t)
	omit := wire.Time{Omit: true}
	for h := uint64(1); h <= 3; h++ {
		if err := r.Apply(&wire.Create{Path: string(rune('a' + h)), Handle: h, Mode: 0o644, Mtime: omit, DirMtime: omit}); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.NumHandles(); n != 3 {
		t.Fatalf("%d handles, want 3", n)
	}
	r.ResetHandles()
	if n := r.NumHandles(); n != 0 {
		t.Errorf("%d handles after reset", n)
	}
	if got := openFds(t); got != base {
		t.Errorf("%d fds open after reset, want %d", got, base)
	}
	if err := r.Apply(&wire.Write{Handle: 2, Data: []byte("x"), Mtime: omit}); !errors.Is(err, ErrUnknownHandle) {
		t.Errorf("write after reset: %v, want ErrUnknownHandle", err)
	}
}
