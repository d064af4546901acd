package mirrorfs

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/tdfs/tdfs/wire"
)

func TestChildPath(t *testing.T) {
	for _, c := range []struct{ dir, name, want string }{
		{"", "a", "a"},
		{"a", "b", "a/b"},
		{"a/b", "c", "a/b/c"},
	} {
		if got := childPath(c.dir, c.name); got != c.want {
			t.Errorf("childPath(%q, %q) = %q, want %q", c.dir, c.name, got, c.want)
		}
	}
}

func TestCheckPath(t *testing.T) {
	if err := checkPath(""); err != nil {
		t.Errorf("root: %v", err)
	}
	if err := checkPath("a/b"); err != nil {
		t.Errorf("a/b: %v", err)
	}
	long := strings.Repeat(strings.Repeat("x", 200)+"/", wire.MaxPathLen/201+1) + "f"
	if err := checkPath(long); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Errorf("%d-byte path: %v, want ENAMETOOLONG", len(long), err)
	}
	if err := checkPath("a/../b"); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("a/../b: %v, want EINVAL", err)
	}
}

func TestWireTime(t *testing.T) {
	got := wireTime(syscall.Timespec{Sec: 12, Nsec: 999999999})
	if got != (wire.Time{Sec: 12, Nsec: 999999999}) {
		t.Errorf("wireTime = %+v", got)
	}
}

func TestMirroredOpenFlags(t *testing.T) {
	in := uint32(syscall.O_RDWR | syscall.O_CREAT | syscall.O_EXCL | syscall.O_TRUNC | syscall.O_DIRECT | syscall.O_SYNC | syscall.O_LARGEFILE)
	want := wire.OpenExcl | wire.OpenTrunc
	if got := mirroredOpenFlags(in); got != want {
		t.Errorf("mirroredOpenFlags(%#o) = %#o, want %#o", in, got, want)
	}
	if got := mirroredOpenFlags(syscall.O_WRONLY | syscall.O_APPEND); got != 0 {
		t.Errorf("mirroredOpenFlags(O_WRONLY|O_APPEND) = %#o, want 0", got)
	}
	if writable(syscall.O_RDONLY) || !writable(syscall.O_WRONLY) || !writable(syscall.O_RDWR) {
		t.Error("writable misjudges the access mode")
	}
}
