package treecmp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// build makes the same small tree under dir each time it is called.
func build(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "d"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "d/f"), []byte("hello"), 0o640))
	must(os.Link(filepath.Join(dir, "d/f"), filepath.Join(dir, "g")))
	must(os.Symlink("d/f", filepath.Join(dir, "s")))
	must(unix.Setxattr(filepath.Join(dir, "g"), "user.k", []byte("v"), 0))
	ts := time.Unix(1700000000, 123456789)
	for _, p := range []string{"d/f", "d", ""} {
		must(os.Chtimes(filepath.Join(dir, p), ts, ts))
	}
	must(unix.Lutimes(filepath.Join(dir, "s"), []unix.Timeval{{Sec: 1}, {Sec: 2}}))
}

func TestDiff(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	build(t, a)
	build(t, b)
	if d, err := Diff(a, b, Options{}); err != nil || d != "" {
		t.Fatalf("identical trees: diff %q, err %v", d, err)
	}
	mutations := []struct {
		name string
		do   func(dir string) error
		want string
	}{
		{"contents", func(dir string) error {
			f, err := os.OpenFile(filepath.Join(dir, "d/f"), os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("J"), 0)
			return err
		}, "contents differ"},
		{"mode", func(dir string) error { return os.Chmod(filepath.Join(dir, "d/f"), 0o600) }, "mode"},
		{"mtime", func(dir string) error {
			ts := time.Unix(1700000000, 123456788)
			return os.Chtimes(filepath.Join(dir, "d"), ts, ts)
		}, "d: mtime"},
		{"xattr", func(dir string) error { return unix.Setxattr(filepath.Join(dir, "g"), "user.k", []byte("w"), 0) }, "xattrs"},
		{"link", func(dir string) error {
			if err := os.Remove(filepath.Join(dir, "g")); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "g"), []byte("hello"), 0o640)
		}, "hard links"},
		{"extra", func(dir string) error { return os.Mkdir(filepath.Join(dir, "x"), 0o755) }, "x: only in"},
		{"target", func(dir string) error {
			if err := os.Remove(filepath.Join(dir, "s")); err != nil {
				return err
			}
			return os.Symlink("d/F", filepath.Join(dir, "s"))
		}, "symlink target"},
	}
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			c := t.TempDir()
			build(t, c)
			if err := m.do(c); err != nil {
				t.Fatal(err)
			}
			d, err := Diff(a, c, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(d, m.want) {
				t.Fatalf("diff %q does not mention %q", d, m.want)
			}
		})
	}
}

// TestDiffDeepAndDevices: paths far beyond PATH_MAX compare (the walk is
// relative to directory descriptors), device numbers are compared, and
// Exclude leaves a subtree out of both sides.
func TestDiffDeepAndDevices(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	seg := strings.Repeat("x", 200)
	for _, root := range []string{a, b} {
		fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		for range 30 { // 30 * 201 bytes: past 4096
			if err := unix.Mkdirat(fd, seg, 0o755); err != nil {
				t.Fatal(err)
			}
			next, err := unix.Openat(fd, seg, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			unix.Close(fd)
			if err != nil {
				t.Fatal(err)
			}
			fd = next
		}
		wfd, err := unix.Openat(fd, "f", unix.O_CREAT|unix.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		unix.Write(wfd, []byte("deep "+filepath.Base(root)))
		unix.Close(wfd)
		unix.Close(fd)
		if err := unix.Mknod(filepath.Join(root, "dev"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
			t.Skipf("mknod: %v", err)
		}
	}
	d, err := Diff(a, b, Options{IgnoreOwners: true})
	if err != nil || !strings.Contains(d, "/f: contents differ") || strings.Contains(d, "device") {
		t.Fatalf("diff %.300q, err %v; want the deep file's contents, not the device", d, err)
	}
	if err := unix.Unlink(filepath.Join(b, "dev")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(b, "dev"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 5))); err != nil {
		t.Fatal(err)
	}
	if d, err := Diff(a, b, Options{IgnoreOwners: true, Exclude: []string{seg}}); err != nil || !strings.Contains(d, "dev: device") || strings.Contains(d, "contents") {
		t.Fatalf("diff %.300q, err %v; want the device number, nothing beneath the excluded dir", d, err)
	}
}
