package mirrorfs

import (
	"bytes"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

func TestCreateWrite(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	// Larger than go-fuse's default 128 KiB MaxWrite: several WRITEs.
	data := bytes.Repeat([]byte("0123456789abcdef"), 3<<16)
	if err := os.WriteFile(e.m("f"), data, 0o640); err != nil {
		t.Fatal(err)
	}
	e.settle()
	recs := e.sink.all()
	c := one[*wire.Create](t, recs)
	want := wire.Create{
		Path: "f", Handle: c.Handle, Flags: wire.OpenExcl | wire.OpenTrunc, // new file, O_TRUNC
		Mode: 0o640, Mtime: c.Mtime, DirMtime: e.mtime(""),
	}
	if c.Handle == 0 || *c != want {
		t.Errorf("create op %+v, want %+v with a handle", *c, want)
	}
	// This proves kernel passthrough is off: the bytes went through us.
	if got := writes(t, recs, c.Handle); !bytes.Equal(got, data) {
		t.Errorf("writes carry %d bytes, want the %d written", len(got), len(data))
	}
	ws := ofType[*wire.Write](recs)
	if last := ws[len(ws)-1]; last.Mtime != e.mtime("f") {
		t.Errorf("last write mtime %+v, backing %+v", last.Mtime, e.mtime("f"))
	}
	if r := one[*wire.Release](t, recs); r.Handle != c.Handle {
		t.Errorf("release of handle %d, want %d", r.Handle, c.Handle)
	}
	if got := types(recs); got[0] != wire.OpCreate || got[len(got)-1] != wire.OpRelease {
		t.Errorf("ops %v, want create first and release last", got)
	}
}

func TestCreateReadOnlyHasNoHandle(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	fd, err := syscall.Open(e.m("f"), syscall.O_CREAT|syscall.O_RDONLY|syscall.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	c := one[*wire.Create](t, e.sink.all())
	if c.Handle != 0 || c.Flags != wire.OpenExcl || c.Mode != 0o600 {
		t.Errorf("read-only create op %+v, want no handle", *c)
	}
	// Nothing to release on the slaves either: after another file's
	// release, the only Release is that file's.
	e.write("g", nil)
	if rs := ofType[*wire.Release](e.sink.all()); len(rs) != 1 || rs[0].Handle == 0 {
		t.Errorf("releases %+v, want only g's", rs)
	}
}

func TestOpenCreate(t *testing.T) {
	dir := t.TempDir()
	p := dir + "/f"
	dirfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirfd)
	f := at{fd: dirfd, name: "f", rel: "f"}
	fd, created, err := openCreate(f, syscall.O_WRONLY, 0o640)
	if err != nil || !created {
		t.Fatalf("new file: created %v, %v", created, err)
	}
	syscall.Close(fd)
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("new file: %v", err)
	}
	if err := os.WriteFile(p, []byte("keep"), 0o640); err != nil {
		t.Fatal(err)
	}
	// An existing file is opened, not recreated, and O_TRUNC applies.
	fd, created, err = openCreate(f, syscall.O_WRONLY|syscall.O_TRUNC, 0o600)
	if err != nil || created {
		t.Fatalf("existing file: created %v, %v", created, err)
	}
	syscall.Close(fd)
	if fi, err := os.Stat(p); err != nil || fi.Size() != 0 || fi.Mode().Perm() != 0o640 {
		t.Errorf("existing file after O_TRUNC open: %v %v", fi, err)
	}
	if _, _, err := openCreate(f, syscall.O_WRONLY|syscall.O_EXCL, 0o600); err != syscall.EEXIST {
		t.Errorf("O_EXCL on an existing file: %v, want EEXIST", err)
	}
	// A symlink is never followed: the daemon is root and it could point
	// anywhere.
	outside := t.TempDir() + "/victim"
	if err := os.Symlink(outside, dir+"/l"); err != nil {
		t.Fatal(err)
	}
	if fd, _, err := openCreate(at{fd: dirfd, name: "l", rel: "l"}, syscall.O_WRONLY, 0o600); err == nil {
		syscall.Close(fd)
		t.Error("openCreate followed a symlink")
	}
	if _, err := os.Lstat(outside); !os.IsNotExist(err) {
		t.Errorf("the symlink's target was created: %v", err)
	}
}
