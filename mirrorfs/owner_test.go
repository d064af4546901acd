package mirrorfs

import (
	"os"
	"syscall"
	"testing"

	"github.com/tdfs/tdfs/wire"
)

// TestNewNodesBelongToCaller checks that nodes made for a non-root caller
// are given to it, that the ops carry the resulting owner, that a
// set-group-ID directory keeps its group and that set-id bits survive the
// chown.
func TestNewNodesBelongToCaller(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: the daemon only gives new nodes to their creator when it runs as root")
	}
	e := newEnv(t, wire.ModeFsync)
	if err := os.Mkdir(e.m("pub"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(e.m("sg"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(e.m("sg"), 0, 4242); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(e.m("sg"), 0o777|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	mark := e.sink.mark()
	asUser(t, 1234, 5678, func() {
		if err := syscall.Mkdir(e.m("pub/d"), 0o755); err != nil {
			t.Errorf("mkdir as 1234: %v", err)
		}
		fd, err := syscall.Open(e.m("pub/f"), syscall.O_CREAT|syscall.O_WRONLY|syscall.O_EXCL, 0o2755)
		if err != nil {
			t.Errorf("create as 1234: %v", err)
		} else {
			syscall.Close(fd)
		}
		if err := syscall.Symlink("x", e.m("pub/l")); err != nil {
			t.Errorf("symlink as 1234: %v", err)
		}
		if err := syscall.Mkdir(e.m("sg/d"), 0o755); err != nil {
			t.Errorf("mkdir in setgid dir as 1234: %v", err)
		}
	})
	e.settle()
	recs := e.sink.since(mark)
	type owner struct{ uid, gid uint32 }
	st := func(rel string) (owner, uint32) {
		var s syscall.Stat_t
		if err := syscall.Lstat(e.b(rel), &s); err != nil {
			t.Fatal(err)
		}
		return owner{s.Uid, s.Gid}, s.Mode & 0o7777
	}
	for _, mk := range ofType[*wire.Mkdir](recs) {
		o, mode := st(mk.Path)
		want := owner{1234, 5678}
		if mk.Path == "sg/d" {
			want = owner{1234, 4242}
			if mode&syscall.S_ISGID == 0 {
				t.Errorf("sg/d lost the set-group-ID bit: %#o", mode)
			}
		}
		if o != want || (owner{mk.Uid, mk.Gid}) != want || mk.Mode != mode {
			t.Errorf("%s: backing %v mode %#o, op %d:%d mode %#o; want %v", mk.Path, o, mode, mk.Uid, mk.Gid, mk.Mode, want)
		}
	}
	c := one[*wire.Create](t, recs)
	if o, mode := st("pub/f"); o != (owner{1234, 5678}) || mode != 0o2755 || c.Uid != 1234 || c.Gid != 5678 || c.Mode != 0o2755 {
		t.Errorf("pub/f: backing %v mode %#o, op %+v; want 1234:5678 mode 02755", o, mode, *c)
	}
	s := one[*wire.Symlink](t, recs)
	if o, _ := st("pub/l"); o != (owner{1234, 5678}) || s.Uid != 1234 || s.Gid != 5678 {
		t.Errorf("pub/l: backing %v, op %+v; want 1234:5678", o, *s)
	}
}
