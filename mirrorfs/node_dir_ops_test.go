package mirrorfs

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

func TestMkdirRmdir(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	if err := os.Mkdir(e.m("d"), 0o750); err != nil {
		t.Fatal(err)
	}
	mk := one[*wire.Mkdir](t, e.sink.all())
	want := wire.Mkdir{Path: "d", Mode: 0o750, Uid: 0, Gid: 0, Mtime: e.mtime("d"), DirMtime: e.mtime("")}
	if *mk != want {
		t.Errorf("mkdir op %+v, want %+v", *mk, want)
	}

	// The sticky bit survives (LoopbackNode.Mkdir drops it). os.Mkdir
	// would drop it too: it takes os.ModeSticky, not 01000.
	if err := syscall.Mkdir(e.m("d/tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	if got := ofType[*wire.Mkdir](e.sink.all())[1]; got.Mode != 0o1777 || got.Path != "d/tmp" || got.DirMtime != e.mtime("d") {
		t.Errorf("mkdir d/tmp op %+v, want mode 01777 and d's mtime", *got)
	}
	if err := os.Remove(e.m("d/tmp")); err != nil {
		t.Fatal(err)
	}

	// Failing ops emit nothing.
	mark := e.sink.mark()
	if err := os.Mkdir(e.m("d"), 0o755); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("second mkdir: %v, want EEXIST", err)
	}
	e.write("d/f", []byte("x"))
	mark2 := e.sink.mark()
	if err := syscall.Rmdir(e.m("d")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir non-empty: %v, want ENOTEMPTY", err)
	}
	if got := e.sink.since(mark2); len(got) != 0 {
		t.Errorf("rmdir of a non-empty dir emitted %v", types(got))
	}
	if got := types(withoutReleases(e.sink.since(mark))); len(got) != 2 || got[0] != wire.OpCreate || got[1] != wire.OpWrite {
		t.Errorf("failed mkdir then a file write emitted %v, want create, write", got)
	}

	if err := os.Remove(e.m("d/f")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.m("d")); err != nil {
		t.Fatal(err)
	}
	rms := ofType[*wire.Rmdir](e.sink.all())
	rm := rms[len(rms)-1]
	if want := (wire.Rmdir{Path: "d", DirMtime: e.mtime("")}); *rm != want {
		t.Errorf("rmdir op %+v, want %+v", *rm, want)
	}
}

func TestUnlink(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	if err := os.Mkdir(e.m("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.write("d/f", []byte("data"))
	if err := os.Remove(e.m("d/f")); err != nil {
		t.Fatal(err)
	}
	u := one[*wire.Unlink](t, e.sink.all())
	if want := (wire.Unlink{Path: "d/f", DirMtime: e.mtime("d")}); *u != want {
		t.Errorf("unlink op %+v, want %+v", *u, want)
	}
	mark := e.sink.mark()
	if err := os.Remove(e.m("d/f")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("second unlink: %v", err)
	}
	if got := e.sink.since(mark); len(got) != 0 {
		t.Errorf("failed unlink emitted %v", types(got))
	}
}

func TestRename(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	for _, d := range []string{"d1", "d2"} {
		if err := os.Mkdir(e.m(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.write("d1/a", []byte("a"))
	if err := os.Rename(e.m("d1/a"), e.m("d2/b")); err != nil {
		t.Fatal(err)
	}
	r := one[*wire.Rename](t, e.sink.all())
	want := wire.Rename{OldPath: "d1/a", NewPath: "d2/b", OldDirMtime: e.mtime("d1"), NewDirMtime: e.mtime("d2")}
	if *r != want {
		t.Errorf("rename op %+v, want %+v", *r, want)
	}
	// A directory rename moves its subtree: later ops use the new path.
	if err := os.Rename(e.m("d2"), e.m("d3")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(e.m("d3/b"), 0o600); err != nil {
		t.Fatal(err)
	}
	if sa := one[*wire.Setattr](t, e.sink.all()); sa.Path != "d3/b" {
		t.Errorf("chmod after directory rename names %q, want d3/b", sa.Path)
	}
}

func TestRenameNoReplace(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("a", []byte("a"))
	e.write("b", []byte("b"))
	if err := unix.Renameat2(unix.AT_FDCWD, e.m("a"), unix.AT_FDCWD, e.m("c"), unix.RENAME_NOREPLACE); err != nil {
		t.Fatal(err)
	}
	r := one[*wire.Rename](t, e.sink.all())
	want := wire.Rename{OldPath: "a", NewPath: "c", Flags: wire.RenameNoReplace, OldDirMtime: e.mtime(""), NewDirMtime: e.mtime("")}
	if *r != want {
		t.Errorf("rename op %+v, want %+v", *r, want)
	}
	mark := e.sink.mark()
	if err := unix.Renameat2(unix.AT_FDCWD, e.m("c"), unix.AT_FDCWD, e.m("b"), unix.RENAME_NOREPLACE); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("RENAME_NOREPLACE onto an existing name: %v, want EEXIST", err)
	}
	if got := e.sink.since(mark); len(got) != 0 {
		t.Errorf("failed rename emitted %v", types(got))
	}
}

func TestRenameExchange(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("a", []byte("AAA"))
	if err := os.Mkdir(e.m("b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, e.m("a"), unix.AT_FDCWD, e.m("b"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatal(err)
	}
	r := one[*wire.Rename](t, e.sink.all())
	if r.Flags != wire.RenameExchange || r.OldPath != "a" || r.NewPath != "b" {
		t.Errorf("rename op %+v, want a <-> b with RENAME_EXCHANGE", *r)
	}
	if got, err := os.ReadFile(e.b("b")); err != nil || string(got) != "AAA" {
		t.Errorf("backing b after exchange: %q, %v", got, err)
	}
	if fi, err := os.Lstat(e.b("a")); err != nil || !fi.IsDir() {
		t.Errorf("backing a after exchange is not the directory: %v", err)
	}
	// go-fuse swapped its tree too: ops on the exchanged names use them.
	if err := os.Mkdir(e.m("a/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if mk := ofType[*wire.Mkdir](e.sink.all()); mk[len(mk)-1].Path != "a/sub" {
		t.Errorf("mkdir in the exchanged dir emitted %q", mk[len(mk)-1].Path)
	}
}

func TestRenameWhiteoutRefused(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("a", []byte("a"))
	mark := e.sink.mark()
	err := unix.Renameat2(unix.AT_FDCWD, e.m("a"), unix.AT_FDCWD, e.m("b"), unix.RENAME_WHITEOUT)
	if err == nil {
		t.Fatal("RENAME_WHITEOUT succeeded; it leaves a device node behind")
	}
	if got := e.sink.since(mark); len(got) != 0 {
		t.Errorf("refused rename emitted %v", types(got))
	}
	if _, err := os.Lstat(e.b("a")); err != nil {
		t.Errorf("backing a after refused rename: %v", err)
	}
}

func TestLink(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	if err := os.Mkdir(e.m("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.write("a", []byte("a"))
	if err := os.Link(e.m("a"), e.m("d/b")); err != nil {
		t.Fatal(err)
	}
	l := one[*wire.Link](t, e.sink.all())
	if want := (wire.Link{OldPath: "a", NewPath: "d/b", DirMtime: e.mtime("d")}); *l != want {
		t.Errorf("link op %+v, want %+v", *l, want)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(e.b("a"), &st); err != nil || st.Nlink != 2 {
		t.Errorf("backing nlink %d, %v; want 2", st.Nlink, err)
	}
}

func TestSymlink(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	if err := os.Symlink("../somewhere/else", e.m("l")); err != nil {
		t.Fatal(err)
	}
	s := one[*wire.Symlink](t, e.sink.all())
	want := wire.Symlink{Path: "l", Target: "../somewhere/else", Mtime: e.mtime("l"), DirMtime: e.mtime("")}
	if *s != want {
		t.Errorf("symlink op %+v, want %+v", *s, want)
	}
	if got, err := os.Readlink(e.b("l")); err != nil || got != want.Target {
		t.Errorf("backing symlink %q, %v", got, err)
	}
}

func TestMkfifo(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	if err := unix.Mkfifo(e.m("p"), 0o640); err != nil {
		t.Fatal(err)
	}
	mk := one[*wire.Mknod](t, e.sink.all())
	want := wire.Mknod{Path: "p", Mode: syscall.S_IFIFO | 0o640, Mtime: e.mtime("p"), DirMtime: e.mtime("")}
	if *mk != want {
		t.Errorf("mknod op %+v, want %+v", *mk, want)
	}
}

func TestMknodDevice(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	rdev := unix.Mkdev(1, 3)
	for i, typ := range []uint32{syscall.S_IFCHR, syscall.S_IFBLK} {
		name := fmt.Sprintf("dev%d", i)
		mark := e.sink.mark()
		if err := unix.Mknod(e.m(name), typ|0o600, int(rdev)); err != nil {
			t.Fatalf("mknod type %#o: %v", typ, err)
		}
		mk := one[*wire.Mknod](t, e.sink.since(mark))
		want := wire.Mknod{Path: name, Mode: typ | 0o600, Rdev: rdev, Mtime: e.mtime(name), DirMtime: e.mtime("")}
		if *mk != want {
			t.Errorf("mknod op %+v, want %+v", *mk, want)
		}
	}
}
