package replayer

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// removeAll empties a directory without following the symlinks in it.
func TestRemoveAllDoesNotFollow(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	b := treeBuilder{t, root}
	b.dir("x", 0o755)
	b.dir("x/y", 0o755)
	b.file("x/y/f", []byte("f"), 0o444)
	b.symlink(outside, "x/out")
	b.symlink(outside, "x/y/out")
	b.mknod("x/fifo", unix.S_IFIFO|0o644)
	keep := filepath.Join(outside, "keep")
	if err := os.WriteFile(keep, []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newTestReplayer(t, root, Options{})
	if err := r.removeAll(r.rootFd, "x", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(root, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("x still there: %v", err)
	}
	if got := readFile(t, keep); got != "outside" {
		t.Errorf("a file behind a symlink changed: %q", got)
	}
	// A symlink itself is removed, not followed.
	b.symlink(outside, "l")
	if err := r.removeAll(r.rootFd, "l", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("removing a symlink to a directory touched it: %v", err)
	}
	if err := r.removeAll(r.rootFd, "missing", 0); err != nil {
		t.Errorf("removing nothing: %v", err)
	}
}

// ensureDir makes each component a directory, replacing files and
// symlinks in the way, never writing through them.
func TestEnsureDir(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	b := treeBuilder{t, root}
	b.file("f", []byte("a file where a directory goes"), 0o644)
	b.symlink(outside, "s")
	r := newTestReplayer(t, root, Options{})
	for _, p := range []string{"a/b/c", "f/x", "s/y", ""} {
		d, err := r.ensureDir(p)
		if err != nil {
			t.Fatalf("ensureDir(%q): %v", p, err)
		}
		d.close()
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			t.Errorf("%q: not a directory (%v)", p, err)
		}
	}
	if ents, err := os.ReadDir(outside); err != nil || len(ents) != 0 {
		t.Errorf("made something behind a symlink: %v %v", ents, err)
	}
	for _, p := range []string{"../x", "/abs", "a/../b"} {
		if _, err := r.ensureDir(p); !errors.Is(err, wire.ErrRefused) {
			t.Errorf("ensureDir(%q): %v, want wire.ErrRefused", p, err)
		}
	}
}

// Neither ensureDir nor removeAll crosses into another filesystem
// mounted beneath the root.
func TestResyncTreeStaysOnTheFilesystem(t *testing.T) {
	root := t.TempDir()
	mnt := filepath.Join(root, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tdfs-test", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("SKIPPED: cannot mount a tmpfs to test mount crossing: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	if err := os.WriteFile(filepath.Join(mnt, "precious"), []byte("p"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newTestReplayer(t, root, Options{})
	if _, err := r.ensureDir("mnt/x"); !errors.Is(err, wire.ErrRefused) {
		t.Errorf("ensureDir across a mount: %v, want wire.ErrRefused", err)
	}
	if err := r.removeAll(r.rootFd, "mnt", 0); !errors.Is(err, wire.ErrRefused) {
		t.Errorf("removeAll of a mount point: %v, want wire.ErrRefused", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "precious")); err != nil {
		t.Errorf("the mounted filesystem lost a file: %v", err)
	}
}
