package mirrorfs

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// TestOrphanReads reads an unlinked open file's attributes through the
// mount: they come from its descriptor, not go-fuse's fake path.
func TestOrphanReads(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	f, err := os.Create(e.m("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("12345")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fsetxattr(int(f.Fd()), "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.m("f")); err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil || st.Size != 5 || st.Nlink != 0 {
		t.Errorf("fstat: size %d nlink %d, %v", st.Size, st.Nlink, err)
	}
	var sx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx); err != nil || sx.Size != 5 {
		t.Errorf("statx: size %d, %v", sx.Size, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		t.Errorf("fstatfs: %v", err)
	}
	buf := make([]byte, 64)
	if n, err := unix.Fgetxattr(fd, "user.k", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("fgetxattr: %q, %v", buf[:max(n, 0)], err)
	}
	if n, err := unix.Flistxattr(fd, buf); err != nil || string(buf[:n]) != "user.k\x00" {
		t.Errorf("flistxattr: %q, %v", buf[:max(n, 0)], err)
	}
}

// TestRemovedCwd looks names up in a directory removed under a process
// that holds it open.
func TestRemovedCwd(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	if err := os.Mkdir(e.m("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := os.Open(e.m("d"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := os.Remove(e.m("d")); err != nil {
		t.Fatal(err)
	}
	mark := e.sink.mark()
	var st unix.Stat_t
	if err := unix.Fstatat(int(d.Fd()), "x", &st, 0); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("lookup in a removed dir: %v, want ENOENT", err)
	}
	if err := unix.Mkdirat(int(d.Fd()), "x", 0o755); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("mkdir in a removed dir: %v, want ENOENT", err)
	}
	if got := e.sink.since(mark); len(got) != 0 {
		t.Errorf("ops in a removed dir emitted %v", types(got))
	}
}

// TestUnseenHardLink: a file whose only looked-up name is removed while it
// is open may still live on under a hard link go-fuse never saw (one made
// before the mount). fchmod through a writable handle then travels by that
// handle, so the slaves follow.
func TestUnseenHardLink(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	if err := os.WriteFile(e.b("a"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(e.b("a"), e.b("b")); err != nil { // behind the mount's back: never looked up
		t.Fatal(err)
	}
	f, err := os.OpenFile(e.m("a"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(e.m("a")); err != nil {
		t.Fatal(err)
	}
	mark := e.sink.mark()
	if err := f.Chmod(0o600); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.settle()
	o := one[*wire.Open](t, e.sink.all())
	sa := one[*wire.Setattr](t, e.sink.since(mark))
	if sa.Handle != o.Handle || sa.Handle == 0 || sa.Path != "" || sa.Mode != 0o600 {
		t.Fatalf("setattr %+v, want mode 0600 through handle %d", *sa, o.Handle)
	}
	st, err := os.Stat(e.b("b"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backing b: %v %v", st, err)
	}
}
