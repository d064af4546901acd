package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestOlderVersion(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"", "2.2.5", true}, {"2.2.5", "", false}, {"2.2.5", "2.34", true}, {"2.34", "2.3.4", false},
		{"2.3.4", "2.34", true}, {"2.34", "2.34", false}, {"2.3", "2.3.2", true},
	} {
		if got := olderVersion(c.a, c.b); got != c.want {
			t.Errorf("olderVersion(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

func TestLibcDepends(t *testing.T) {
	// The test binary itself: static or linked against the C library only.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dep, err := libcDepends([]string{self})
	if err != nil {
		t.Fatal(err)
	}
	if len(dep) > 1 || len(dep) == 1 && (len(dep[0]) < len("libc6 (>= 2.x)") || dep[0][:10] != "libc6 (>= ") {
		t.Errorf("libcDepends: %q", dep)
	}
}

func TestStagedContents(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc/tdfs"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, r := range required {
		p := filepath.Join(root, r)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(r), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	mtime := time.Unix(1765000000, 0)
	contents, err := stagedContents(root, mtime)
	if err != nil {
		t.Fatal(err)
	}
	if len(contents) != len(required)+1 {
		t.Fatalf("%d contents, want %d", len(contents), len(required)+1)
	}
	if c := contents[0]; c.Destination != "/etc/tdfs" || c.Type != "dir" || c.FileInfo.Mode != 0o700 {
		t.Errorf("first content %+v, want /etc/tdfs, a dir of mode 0700", c)
	}
	for _, c := range contents[1:] {
		conf := c.Type == "config"
		if conf != (filepath.Dir(c.Destination) == "/etc/tdfs") || c.FileInfo.Mode != 0o640 || !c.FileInfo.MTime.Equal(mtime) {
			t.Errorf("%s: type %q, mode %v, mtime %v", c.Destination, c.Type, c.FileInfo.Mode, c.FileInfo.MTime)
		}
	}
	if err := os.Remove(filepath.Join(root, "usr/bin/tdfs-slave")); err != nil {
		t.Fatal(err)
	}
	if _, err := stagedContents(root, mtime); err == nil {
		t.Error("a tree without tdfs-slave was accepted")
	}
}
