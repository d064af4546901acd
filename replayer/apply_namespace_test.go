package replayer

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

func TestRemoveIdempotent(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	applyAll(t, r,
		&wire.Mkdir{Path: "d", Mode: 0o755},
		&wire.Mkdir{Path: "d/e", Mode: 0o755},
		&wire.Create{Path: "d/f", Mode: 0o644})
	twice := []wire.Op{
		&wire.Unlink{Path: "d/f"},
		&wire.Rmdir{Path: "d/e"},
		&wire.Rmdir{Path: "d"},
	}
	applyAll(t, r, twice...)
	// Replayed after the parent went too: still fine.
	applyAll(t, r, twice...)
	if _, err := os.Lstat(filepath.Join(root, "d")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("d: %v, want gone", err)
	}
	applyAll(t, r, &wire.Mkdir{Path: "full", Mode: 0o755}, &wire.Create{Path: "full/f", Mode: 0o644})
	if err := r.Apply(&wire.Rmdir{Path: "full"}); !errors.Is(err, unix.ENOTEMPTY) {
		t.Errorf("rmdir of a non-empty dir: %v, want ENOTEMPTY", err)
	}
	if err := r.Apply(&wire.Rmdir{Path: "full/f"}); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("rmdir of a file: %v, want ENOTDIR", err)
	}
	// A file where a directory should be is not "missing".
	if err := r.Apply(&wire.Unlink{Path: "full/f/x"}); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("unlink beneath a file: %v, want ENOTDIR", err)
	}
}

func TestLinkReplay(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	applyAll(t, r, &wire.Create{Path: "a", Mode: 0o644}, &wire.Create{Path: "b", Mode: 0o644})
	link := &wire.Link{OldPath: "a", NewPath: "a2"}
	applyAll(t, r, link, link)
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "a"), &st); err != nil || st.Nlink != 2 {
		t.Errorf("a: %v, nlink %d, want 2", err, st.Nlink)
	}
	if err := r.Apply(&wire.Link{OldPath: "a", NewPath: "b"}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("link onto another file: %v, want EEXIST", err)
	}
}

func TestRenameFlags(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	omit := wire.Time{Omit: true}
	applyAll(t, r,
		&wire.Create{Path: "a", Handle: 1, Mode: 0o644, Mtime: omit, DirMtime: omit},
		&wire.Write{Handle: 1, Data: []byte("A"), Mtime: omit},
		&wire.Create{Path: "b", Handle: 2, Mode: 0o644, Mtime: omit, DirMtime: omit},
		&wire.Write{Handle: 2, Data: []byte("B"), Mtime: omit},
		&wire.Rename{OldPath: "a", NewPath: "b", Flags: wire.RenameExchange, OldDirMtime: omit, NewDirMtime: omit})
	if a, b := readFile(t, filepath.Join(root, "a")), readFile(t, filepath.Join(root, "b")); a != "B" || b != "A" {
		t.Errorf("after exchange a=%q b=%q", a, b)
	}
	err := r.Apply(&wire.Rename{OldPath: "a", NewPath: "b", Flags: wire.RenameNoReplace})
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("no-replace onto b: %v, want EEXIST", err)
	}
	if a, b := readFile(t, filepath.Join(root, "a")), readFile(t, filepath.Join(root, "b")); a != "B" || b != "A" {
		t.Errorf("a failed no-replace changed things: a=%q b=%q", a, b)
	}
	// Writes still land in the files the handles opened.
	applyAll(t, r, &wire.Write{Handle: 1, Off: 1, Data: []byte("1"), Mtime: omit},
		&wire.Release{Handle: 1}, &wire.Release{Handle: 2})
	if b := readFile(t, filepath.Join(root, "b")); b != "A1" {
		t.Errorf("b=%q, want A1", b)
	}
}
