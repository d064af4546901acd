package replayer

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Ops that meet a tree that differs from the master's fail normally and
// are skipped, and counted, in tolerant mode.
func TestTolerantSkipsTreeDifferences(t *testing.T) {
	omit := wire.Time{Omit: true}
	setup := func(t *testing.T, root string) {
		b := treeBuilder{t, root}
		b.dir("full", 0o755)
		b.file("full/x", nil, 0o644)
		b.file("file", []byte("f"), 0o644)
		b.dir("dir", 0o755)
		b.symlink("dir", "link")
	}
	ops := []wire.Op{
		&wire.Rmdir{Path: "full", DirMtime: omit},                           // ENOTEMPTY
		&wire.Mkdir{Path: "file", Mode: 0o755, Mtime: omit, DirMtime: omit}, // EEXIST
		&wire.Rename{OldPath: "missing", NewPath: "new", OldDirMtime: omit, NewDirMtime: omit},
		&wire.Unlink{Path: "dir", DirMtime: omit}, // EISDIR
		&wire.Setxattr{Path: "missing", Name: "user.x", Value: []byte("v")},
		&wire.Mkdir{Path: "file/sub", Mode: 0o755, Mtime: omit, DirMtime: omit},               // ENOTDIR
		&wire.Mkdir{Path: "link/sub", Mode: 0o755, Mtime: omit, DirMtime: omit},               // a symlink where the master has a directory
		&wire.Write{Handle: 42, Data: []byte("x"), Mtime: omit},                               // ErrUnknownHandle
		&wire.Open{Path: "dir", Mtime: omit},                                                  // wrong type, no handle
		&wire.Setattr{Path: "dir", Valid: wire.SetSize, Size: 1, Mtime: omit},                 // wrong type
		&wire.Link{OldPath: "dir", NewPath: "dirlink", DirMtime: omit},                        // EPERM: a directory here
		&wire.Rename{OldPath: "dir", NewPath: "dir/in", OldDirMtime: omit, NewDirMtime: omit}, // EINVAL
	}
	t.Run("strict", func(t *testing.T) {
		root := t.TempDir()
		setup(t, root)
		r := newTestReplayer(t, root, Options{})
		for _, op := range ops {
			if err := r.Apply(op); err == nil {
				t.Errorf("%s succeeded on a tree that differs", describe(op))
			}
		}
	})
	t.Run("tolerant", func(t *testing.T) {
		root := t.TempDir()
		setup(t, root)
		before := snapshot(t, root)
		r := newTestReplayer(t, root, Options{})
		r.SetTolerant(true)
		for _, op := range ops {
			if err := r.Apply(op); err != nil {
				t.Errorf("%s: %v", describe(op), err)
			}
		}
		if got := r.Skipped(); got != uint64(len(ops)) {
			t.Errorf("Skipped() = %d, want %d", got, len(ops))
		}
		if d := diffTrees(before, snapshot(t, root)); len(d) != 0 {
			t.Errorf("skipped ops changed the tree: %v", d)
		}
		r.SetTolerant(false)
		if err := r.Apply(ops[0]); err == nil {
			t.Error("tolerant mode still on")
		}
	})
}

// An op no slave would apply (a path leaving the root, unknown flags)
// fails in tolerant mode too; one the slave's own policy refuses is
// skipped (the pass leaves out what it touches).
func TestTolerantStillRefuses(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	r.SetTolerant(true)
	omit := wire.Time{Omit: true}
	if err := r.Apply(&wire.Mknod{Path: "dev", Mode: unix.S_IFCHR | 0o666, Rdev: 0x0103, Mtime: omit, DirMtime: omit}); err != nil {
		t.Errorf("device refused by policy, tolerant: %v, want it skipped", err)
	}
	if s := r.Skipped(); s != 1 {
		t.Errorf("Skipped() = %d after the device, want 1", s)
	}
	for _, op := range []wire.Op{
		&wire.Mkdir{Path: "../escape", Mode: 0o755, Mtime: omit, DirMtime: omit},
		&wire.Rename{OldPath: "a", NewPath: "b", Flags: 4, OldDirMtime: omit, NewDirMtime: omit},
		&wire.Create{Path: "../escape", Handle: 1, Mode: 0o644, Mtime: omit, DirMtime: omit},
	} {
		if err := r.Apply(op); !errors.Is(err, wire.ErrRefused) {
			t.Errorf("%s: %v, want wire.ErrRefused", describe(op), err)
		}
	}
	if s := r.Skipped(); s != 1 {
		t.Errorf("Skipped() = %d, want 1", s)
	}
	if _, err := os.Lstat(filepath.Join(root, "dev")); err == nil {
		t.Error("the device was made")
	}
	if _, err := os.Lstat(filepath.Join(filepath.Dir(root), "escape")); err == nil {
		t.Error("an op escaped the root")
	}
}

// In tolerant mode an Open or Create under a handle makes what the file
// needs, so the writes that follow land.
func TestTolerantForcesHandleOpens(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	b := treeBuilder{t, root}
	b.file("p", []byte("a file where the master has a directory"), 0o644)
	b.symlink(outside, "s")
	b.dir("d", 0o755)
	b.file("d/child", nil, 0o644)
	var opened []uint64
	r := newTestReplayer(t, root, Options{OnHandle: func(h uint64, rec *HandleRecord) {
		if rec != nil {
			opened = append(opened, h)
		}
	}})
	r.SetTolerant(true)
	mt := wire.Time{Sec: 1_000_000, Nsec: 5}
	omit := wire.Time{Omit: true}
	applyAll(t, r,
		&wire.Create{Path: "a/b/c", Handle: 1, Flags: wire.OpenExcl, Mode: 0o640, Mtime: mt, DirMtime: omit},
		&wire.Create{Path: "p/f", Handle: 2, Mode: 0o600, Mtime: mt, DirMtime: omit},
		&wire.Create{Path: "s/f", Handle: 3, Mode: 0o600, Mtime: mt, DirMtime: omit},
		&wire.Open{Path: "d", Handle: 4, Mtime: mt},
		&wire.Open{Path: "gone/missing", Handle: 5, Flags: wire.OpenTrunc, Mtime: mt},
	)
	for h := uint64(1); h <= 5; h++ {
		applyAll(t, r, &wire.Write{Handle: h, Data: []byte("data"), Mtime: mt})
	}
	for _, p := range []string{"a/b/c", "p/f", "s/f", "d", "gone/missing"} {
		if got := readFile(t, filepath.Join(root, p)); got != "data" {
			t.Errorf("%s = %q, want the write", p, got)
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Fatal(err)
		}
		if !sameTime(st.Mtim, mt) {
			t.Errorf("%s: mtime %v, want the op's", p, st.Mtim)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "a/b/c"), &st); err != nil || st.Mode&0o7777 != 0o640 {
		t.Errorf("a/b/c: mode %#o (%v), want the op's 0640", st.Mode&0o7777, err)
	}
	if err := unix.Lstat(filepath.Join(root, "a"), &st); err != nil || st.Mode&0o7777 != 0o700 {
		t.Errorf("made parent: mode %#o (%v), want 0700", st.Mode&0o7777, err)
	}
	if ents, err := os.ReadDir(outside); err != nil || len(ents) != 0 {
		t.Errorf("the symlink's target was written to: %v %v", ents, err)
	}
	if got := r.Skipped(); got != 5 {
		t.Errorf("Skipped() = %d, want 5", got)
	}
	if len(opened) != 5 {
		t.Errorf("OnHandle saw %v opened, want 5 handles", opened)
	}
}

// RunStart used to call ResetHandles with Apply's lock held: a deadlock.
func TestRunStartClosesHandles(t *testing.T) {
	root := t.TempDir()
	var released []uint64
	r := newTestReplayer(t, root, Options{OnHandle: func(h uint64, rec *HandleRecord) {
		if rec == nil {
			released = append(released, h)
		}
	}})
	applyAll(t, r, &wire.Create{Path: "f", Handle: 1, Mode: 0o644, Mtime: wire.Time{Omit: true}, DirMtime: wire.Time{Omit: true}})
	done := make(chan error, 1)
	go func() { done <- r.Apply(&wire.RunStart{}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Apply(RunStart) did not return: deadlock")
	}
	if n := r.NumHandles(); n != 0 {
		t.Errorf("%d handles after RunStart", n)
	}
	if len(released) != 1 || released[0] != 1 {
		t.Errorf("OnHandle released %v, want [1]", released)
	}
}
