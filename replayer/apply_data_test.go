package replayer

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

func TestOpenRefusesNonRegular(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	applyAll(t, r,
		&wire.Mkdir{Path: "d", Mode: 0o755},
		&wire.Mknod{Path: "fifo", Mode: unix.S_IFIFO | 0o666},
		&wire.Mknod{Path: "sock", Mode: unix.S_IFSOCK | 0o666},
		&wire.Symlink{Path: "l", Target: "f"},
		&wire.Create{Path: "f", Mode: 0o644})
	for _, p := range []string{"d", "fifo", "sock", "l"} {
		if err := r.Apply(&wire.Open{Path: p, Handle: 1, Flags: wireOTrunc}); !errors.Is(err, wire.ErrRefused) {
			t.Errorf("open %s: %v, want wire.ErrRefused", p, err)
		}
		err := r.Apply(&wire.Setattr{Path: p, Valid: wire.SetSize, Size: 0, Mtime: wire.Time{Omit: true}})
		if !errors.Is(err, wire.ErrRefused) {
			t.Errorf("truncate %s: %v, want wire.ErrRefused", p, err)
		}
	}
	if n := r.NumHandles(); n != 0 {
		t.Errorf("%d handles after refused opens", n)
	}
}

func TestOpenWithoutHandle(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	omit := wire.Time{Omit: true}
	tm := wire.Time{Sec: 1_650_000_000, Nsec: 7}
	applyAll(t, r,
		&wire.Create{Path: "f", Handle: 1, Mode: 0o644, Mtime: omit, DirMtime: omit},
		&wire.Write{Handle: 1, Data: []byte("data"), Mtime: omit},
		&wire.Release{Handle: 1},
		&wire.Open{Path: "f", Flags: wireOTrunc, Mtime: tm})
	if got := readFile(t, filepath.Join(root, "f")); got != "" {
		t.Errorf("after O_TRUNC open: %q", got)
	}
	checkMtime(t, root, "f", tm)
	if n := r.NumHandles(); n != 0 {
		t.Errorf("open without a handle kept %d", n)
	}
}

func TestLargeWrite(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	omit := wire.Time{Omit: true}
	data := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16)
	applyAll(t, r,
		&wire.Create{Path: "f", Handle: 1, Mode: 0o644, Mtime: omit, DirMtime: omit},
		&wire.Write{Handle: 1, Off: 5, Data: data, Mtime: omit},
		&wire.Write{Handle: 1, Off: 0, Data: nil, Mtime: omit},
		&wire.Release{Handle: 1})
	got := readFile(t, filepath.Join(root, "f"))
	if len(got) != 5+len(data) || got[:5] != "\x00\x00\x00\x00\x00" || got[5:] != string(data) {
		t.Errorf("file of %d bytes does not hold the write", len(got))
	}
}

func TestFallocateAllowed(t *testing.T) {
	allowed := map[uint32]bool{0: true, 1: true, 3: true, 0x10: true, 0x11: true}
	for mode := uint32(0); mode < 0x100; mode++ {
		if got := fallocateAllowed(mode); got != allowed[mode] {
			t.Errorf("fallocateAllowed(%#x) = %v", mode, got)
		}
	}
}
