package mirrorfs

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// TestPolicyRefusedAtTheMount: what a slave's policy forbids fails at the
// mount with EPERM (EFBIG for sizes), changes nothing in the backing dir
// and emits nothing; what it allows goes through; SetPolicy takes effect
// at once.
func TestPolicyRefusedAtTheMount(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	strict := wire.Policy{MaxFileSize: 1 << 20}
	e.srv.SetPolicy(strict)
	if got := e.srv.Policy(); got != strict {
		t.Fatalf("Policy() = %v, want %v", got, strict)
	}
	if err := os.WriteFile(e.m("f"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(e.m("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.settle() // the Release of f's handle is in, before any mark below
	big, err := os.OpenFile(e.m("f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()

	capV2 := []byte{0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	refused := []struct {
		name  string
		errno syscall.Errno
		do    func() error
		gone  string // must not exist in the backing dir afterwards
	}{
		{"mknod char device", syscall.EPERM, func() error { return unix.Mknod(e.m("c"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))) }, "c"},
		{"mknod block device", syscall.EPERM, func() error { return unix.Mknod(e.m("b"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))) }, "b"},
		{"mknod setgid fifo", syscall.EPERM, func() error { return unix.Mknod(e.m("p"), unix.S_IFIFO|0o2644, 0) }, "p"},
		{"create setuid", syscall.EPERM, func() error {
			fd, err := unix.Open(e.m("s"), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o4755)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}, "s"},
		{"chmod setuid file", syscall.EPERM, func() error { return os.Chmod(e.m("f"), os.ModeSetuid|0o755) }, ""},
		{"chmod setgid file", syscall.EPERM, func() error { return unix.Chmod(e.m("f"), 0o2755) }, ""},
		{"fchmod setuid file", syscall.EPERM, func() error { return unix.Fchmod(int(big.Fd()), 0o4755) }, ""},
		{"file capability", syscall.EPERM, func() error { return unix.Setxattr(e.m("f"), "security.capability", capV2, 0) }, ""},
		{"trusted xattr", syscall.EPERM, func() error { return unix.Setxattr(e.m("f"), "trusted.t", []byte("v"), 0) }, ""},
		{"write past the bound", syscall.EFBIG, func() error { _, err := big.WriteAt([]byte("y"), 1<<20); return err }, ""},
		{"truncate past the bound", syscall.EFBIG, func() error { return os.Truncate(e.m("f"), 1<<20+1) }, ""},
		{"fallocate past the bound", syscall.EFBIG, func() error { return unix.Fallocate(int(big.Fd()), 0, 1<<20-1, 2) }, ""},
	}
	for _, c := range refused {
		mark := e.sink.mark()
		if err := c.do(); !errors.Is(err, c.errno) {
			t.Errorf("%s: %v, want %v", c.name, err, c.errno)
		}
		if got := e.sink.since(mark); len(got) != 0 {
			t.Errorf("%s: refused, but emitted %v", c.name, types(got))
		}
		if c.gone != "" {
			if _, err := os.Lstat(e.b(c.gone)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: in the backing dir after the refusal: %v", c.name, err)
			}
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(e.b("f"), &st); err != nil || st.Mode&0o7777 != 0o755 || st.Size != 1 {
		t.Errorf("backing file after refusals: mode %#o size %d (%v), want 0755, 1 byte", st.Mode&0o7777, st.Size, err)
	}

	allowed := []struct {
		name string
		do   func() error
	}{
		{"setgid and setuid directory", func() error { return unix.Chmod(e.m("d"), 0o6755) }},
		{"fifo", func() error { return unix.Mknod(e.m("fifo"), unix.S_IFIFO|0o644, 0) }},
		{"user xattr", func() error { return unix.Setxattr(e.m("f"), "user.u", []byte("v"), 0) }},
		{"write up to the bound", func() error { _, err := big.WriteAt([]byte("y"), 1<<20-1); return err }},
		{"O_CREAT of an existing file with a set-id mode", func() error {
			fd, err := unix.Open(e.m("f"), unix.O_CREAT|unix.O_WRONLY, 0o4755)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
	}
	for _, c := range allowed {
		if err := c.do(); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}

	// A permissive policy (every slave allows it): the same ops apply.
	e.srv.SetPolicy(wire.PermissivePolicy)
	if err := unix.Mknod(e.m("c"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Errorf("mknod char device, devices allowed: %v", err)
	}
	if err := unix.Chmod(e.m("f"), 0o4755); err != nil {
		t.Errorf("chmod setuid file, set-id allowed: %v", err)
	}
	if err := unix.Setxattr(e.m("f"), "trusted.t", []byte("v"), 0); err != nil {
		t.Errorf("trusted xattr, allowed: %v", err)
	}
}
