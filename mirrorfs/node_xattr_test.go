package mirrorfs

import (
	"bytes"
	"errors"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

func TestXattr(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("f", nil)
	mark := e.sink.mark()
	big := bytes.Repeat([]byte{7}, 4000)
	if err := unix.Setxattr(e.m("f"), "user.a", big, unix.XATTR_CREATE); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(e.m("f"), "user.b", []byte("second"), 0); err != nil {
		t.Fatal(err)
	}
	// Failing ops emit nothing.
	if err := unix.Setxattr(e.m("f"), "user.a", []byte("x"), unix.XATTR_CREATE); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("second XATTR_CREATE: %v", err)
	}
	if err := unix.Removexattr(e.m("f"), "user.none"); !errors.Is(err, unix.ENODATA) {
		t.Fatalf("removexattr of a missing name: %v", err)
	}
	if err := unix.Removexattr(e.m("f"), "user.a"); err != nil {
		t.Fatal(err)
	}
	recs := e.sink.since(mark)
	if got := types(recs); len(got) != 3 {
		t.Fatalf("ops %v, want setxattr, setxattr, removexattr", got)
	}
	sx := ofType[*wire.Setxattr](recs)
	if sx[0].Path != "f" || sx[0].Name != "user.a" || !bytes.Equal(sx[0].Value, big) || sx[0].Flags != wire.XattrCreate {
		t.Errorf("first setxattr %s %q flags %d, %d bytes", sx[0].Path, sx[0].Name, sx[0].Flags, len(sx[0].Value))
	}
	if sx[1].Name != "user.b" || string(sx[1].Value) != "second" || sx[1].Flags != 0 {
		t.Errorf("second setxattr %+v", *sx[1])
	}
	if rx := one[*wire.Removexattr](t, recs); *rx != (wire.Removexattr{Path: "f", Name: "user.a"}) {
		t.Errorf("removexattr op %+v", *rx)
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(e.b("f"), "user.b", buf); err != nil || string(buf[:n]) != "second" {
		t.Errorf("backing user.b %q, %v", buf[:max(n, 0)], err)
	}
}

func TestXattrOnRoot(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	if err := unix.Setxattr(e.mnt, "user.r", []byte("root"), 0); err != nil {
		t.Fatal(err)
	}
	if sx := one[*wire.Setxattr](t, e.sink.all()); sx.Path != "" || sx.Name != "user.r" {
		t.Errorf("setxattr on the root %+v, want path \"\"", *sx)
	}
}
