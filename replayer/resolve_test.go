package replayer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// escapeFixture is a replica root inside a base directory that holds a
// secret outside the root, with symlinks in the root pointing out of it.
type escapeFixture struct {
	base, root, secret string
	r                  *Replayer
}

func newEscapeFixture(t *testing.T) *escapeFixture {
	t.Helper()
	base := t.TempDir()
	f := &escapeFixture{base: base, root: filepath.Join(base, "root"), secret: filepath.Join(base, "secret")}
	if err := os.Mkdir(f.root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.secret, []byte("outside the root"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(base, "outdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(f.root, "a"), 0o755))
	must(os.WriteFile(filepath.Join(f.root, "file"), []byte("inside"), 0o644))
	// s -> "/" is the brief's case; t -> base and up -> ".." lead to base,
	// where a successful escape would show in the snapshot. f stands for
	// a link to /etc/passwd, pointing at a secret this test may lose.
	must(os.Symlink("/", filepath.Join(f.root, "s")))
	must(os.Symlink(base, filepath.Join(f.root, "t")))
	must(os.Symlink("..", filepath.Join(f.root, "up")))
	must(os.Symlink(f.secret, filepath.Join(f.root, "f")))
	must(os.Symlink("a", filepath.Join(f.root, "inroot")))
	f.r = newTestReplayer(t, f.root, Options{Chown: true})
	return f
}

// refuseAll applies each op and requires a refusal that changed nothing,
// inside the root or out of it.
func (f *escapeFixture) refuseAll(t *testing.T, ops []wire.Op) {
	t.Helper()
	for _, op := range ops {
		before := snapshot(t, f.base)
		err := f.r.Apply(op)
		if !errors.Is(err, wire.ErrRefused) {
			t.Errorf("%s: got %v, want wire.ErrRefused", describe(op), err)
		} else if !strings.Contains(err.Error(), op.Type().String()) {
			t.Errorf("%s: error %q does not name the op", describe(op), err)
		}
		if d := diffTrees(before, snapshot(t, f.base)); len(d) > 0 {
			t.Errorf("%s changed the tree: %v", describe(op), d)
		}
	}
}

func TestEscapesRefused(t *testing.T) {
	f := newEscapeFixture(t)
	viaSlash := "s" + f.base // s -> "/", so s/<base>/x would be base/x
	if err := f.r.Apply(&wire.Create{Path: "file2", Handle: 1, Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	tm := wire.Time{Sec: 1, Nsec: 2}
	var ops []wire.Op
	for _, p := range []string{
		"../x", "/etc/tdfs-replayer-escape", f.base + "/x", "a/../../x", "a/./x", "",
		viaSlash + "/x", "t/x", "up/x", "t/outdir/x", "inroot/x", "f/x",
	} {
		ops = append(ops,
			&wire.Create{Path: p, Handle: 2, Flags: wireOExcl, Mode: 0o644, Mtime: tm, DirMtime: tm},
			&wire.Mkdir{Path: p, Mode: 0o755, Mtime: tm, DirMtime: tm},
			&wire.Mknod{Path: p, Mode: unix.S_IFIFO | 0o644, Mtime: tm, DirMtime: tm},
			&wire.Symlink{Path: p, Target: "/", Mtime: tm, DirMtime: tm},
			&wire.Link{OldPath: "file", NewPath: p, DirMtime: tm},
			&wire.Rename{OldPath: "file", NewPath: p, NewDirMtime: tm},
		)
	}
	for _, p := range []string{"t/secret", "up/secret", viaSlash + "/secret", "t/outdir", "../secret", "f/x"} {
		ops = append(ops,
			&wire.Open{Path: p, Handle: 3, Flags: wireOTrunc, Mtime: tm},
			&wire.Setattr{Path: p, Valid: wire.SetMode | wire.SetSize, Mode: 0o777, Size: 0, Mtime: tm},
			&wire.Setattr{Path: p, Valid: wire.SetUid, Uid: 1, Mtime: tm},
			&wire.Setxattr{Path: p, Name: "user.x", Value: []byte("v")},
			&wire.Removexattr{Path: p, Name: "user.x"},
			&wire.Link{OldPath: p, NewPath: "stolen", DirMtime: tm},
			&wire.Rename{OldPath: p, NewPath: "stolen", OldDirMtime: tm, NewDirMtime: tm},
			&wire.Unlink{Path: p, DirMtime: tm},
			&wire.Rmdir{Path: p, DirMtime: tm},
		)
	}
	ops = append(ops,
		// The final symlink f -> secret is never followed by data ops.
		&wire.Open{Path: "f", Handle: 3, Flags: wireOTrunc, Mtime: tm},
		&wire.Open{Path: "f", Handle: 3, Mtime: wire.Time{Omit: true}},
		&wire.Setattr{Path: "f", Valid: wire.SetSize, Size: 0, Mtime: wire.Time{Omit: true}},
		&wire.Create{Path: "f", Handle: 4, Flags: wireOExcl, Mode: 0o644, Mtime: tm, DirMtime: tm},
		&wire.Create{Path: "s", Handle: 4, Mode: 0o644, Mtime: tm, DirMtime: tm},
		// Devices and unknown types.
		&wire.Mknod{Path: "null", Mode: unix.S_IFCHR | 0o666, Rdev: unix.Mkdev(1, 3), Mtime: tm, DirMtime: tm},
		&wire.Mknod{Path: "sda", Mode: unix.S_IFBLK | 0o600, Rdev: unix.Mkdev(8, 0), Mtime: tm, DirMtime: tm},
		&wire.Mknod{Path: "dir", Mode: unix.S_IFDIR | 0o755, Mtime: tm, DirMtime: tm},
		&wire.Mknod{Path: "lnk", Mode: unix.S_IFLNK | 0o777, Mtime: tm, DirMtime: tm},
		// Root-only ops wire rejects, refused here again.
		&wire.Unlink{Path: ""}, &wire.Rmdir{Path: ""}, &wire.Rename{OldPath: "", NewPath: "x"},
		&wire.Setattr{Path: "", Valid: wire.SetSize, Size: 0, Mtime: wire.Time{Omit: true}},
		// Flags and modes the slave does not apply.
		&wire.Rename{OldPath: "file", NewPath: "x", Flags: 4}, // RENAME_WHITEOUT
		&wire.Setxattr{Path: "file", Name: "user.x", Flags: 4},
		&wire.Fallocate{Handle: 1, Mode: unix.FALLOC_FL_COLLAPSE_RANGE, Off: 0, Len: 4096},
		&wire.Fallocate{Handle: 1, Mode: unix.FALLOC_FL_PUNCH_HOLE, Off: 0, Len: 4096},
		&wire.Fallocate{Handle: 1, Mode: unix.FALLOC_FL_INSERT_RANGE, Off: 0, Len: 4096},
		&wire.Setattr{Handle: 1, Valid: wire.SetSize, Size: 1 << 63, Mtime: wire.Time{Omit: true}},
	)
	f.refuseAll(t, ops)

	// A refused Create must not have touched handle 2, and handle 1 lives.
	if n := f.r.NumHandles(); n != 1 {
		t.Errorf("%d handles open, want 1", n)
	}
	if _, err := os.Lstat("/etc/tdfs-replayer-escape"); err == nil {
		t.Errorf("/etc/tdfs-replayer-escape exists")
	}
}

// TestFinalSymlinkNotFollowed: ops that act on a symlink itself act on the
// link, never on what it points to.
func TestFinalSymlinkNotFollowed(t *testing.T) {
	f := newEscapeFixture(t)
	secret := func() map[string]entry {
		t.Helper()
		return snapshot(t, f.secret)
	}
	before := secret()
	tm := wire.Time{Sec: 1_000_000, Nsec: 5}
	ops := []wire.Op{
		// chmod of a symlink is a no-op on Linux, not a chmod of the target.
		&wire.Setattr{Path: "f", Valid: wire.SetMode, Mode: 0o777, Mtime: tm},
		&wire.Setattr{Path: "f", Valid: wire.SetUid | wire.SetGid, Uid: 4321, Gid: 4321, Mtime: tm},
		&wire.Setattr{Path: "f", Valid: wire.SetAtime | wire.SetMtime, Atime: tm, Mtime: tm},
		&wire.Setxattr{Path: "f", Name: "trusted.onlink", Value: []byte("v")},
		&wire.Link{OldPath: "f", NewPath: "f2", DirMtime: tm},
	}
	for _, op := range ops {
		if err := f.r.Apply(op); err != nil {
			t.Fatal(err)
		}
	}
	if d := diffTrees(before, secret()); len(d) > 0 {
		t.Errorf("the symlink's target changed: %v", d)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(f.root, "f"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 4321 || st.Mtim.Sec != tm.Sec || st.Mtim.Nsec != int64(tm.Nsec) || st.Nlink != 2 {
		t.Errorf("the symlink itself: uid %d mtime %v nlink %d, want 4321, %v, 2", st.Uid, st.Mtim, st.Nlink, tm)
	}
	// user.* xattrs are not allowed on symlinks: the kernel says so, the
	// target is not touched instead.
	err := f.r.Apply(&wire.Setxattr{Path: "f", Name: "user.x", Value: []byte("v")})
	if !errors.Is(err, unix.EPERM) {
		t.Errorf("user xattr on a symlink: %v, want EPERM", err)
	}
	if d := diffTrees(before, secret()); len(d) > 0 {
		t.Errorf("the symlink's target changed: %v", d)
	}
}

// TestOpenDirConfined checks the openat2 confinement itself, below the
// wire.CheckPath that normally catches these paths first.
func TestOpenDirConfined(t *testing.T) {
	f := newEscapeFixture(t)
	for _, p := range []string{"..", "../outdir", "/", f.base, "a/../..", "t", "up", "s", "inroot", "s/proc/self/root", "t/outdir"} {
		d, err := f.r.openDir(p)
		if err == nil {
			d.close()
			t.Errorf("openDir(%q) succeeded", p)
			continue
		}
		if !errors.Is(err, wire.ErrRefused) {
			t.Errorf("openDir(%q): %v, want wire.ErrRefused", p, err)
		}
	}
	d, err := f.r.openDir("a")
	if err != nil {
		t.Fatalf("openDir(a): %v", err)
	}
	d.close()
	if _, err := f.r.openDir("missing"); !errors.Is(err, unix.ENOENT) || errors.Is(err, wire.ErrRefused) {
		t.Errorf("openDir(missing): %v, want ENOENT", err)
	}
}

// TestMountCrossingRefused mounts a tmpfs inside the root: RESOLVE_NO_XDEV
// keeps ops out of it (a bind mount could expose anything).
func TestMountCrossingRefused(t *testing.T) {
	f := newEscapeFixture(t)
	mnt := filepath.Join(f.root, "mnt")
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
	err := f.r.Apply(&wire.Mkdir{Path: "mnt/x", Mode: 0o755})
	if !errors.Is(err, wire.ErrRefused) {
		t.Errorf("mkdir across a mount: %v, want wire.ErrRefused", err)
	}
	if _, err := os.Lstat(filepath.Join(mnt, "x")); err == nil {
		t.Errorf("mnt/x was created across the mount")
	}
}
