package wire

import (
	"strings"
	"testing"
)

func TestCheckPath(t *testing.T) {
	c255, c256 := strings.Repeat("c", 255), strings.Repeat("c", 256)
	tests := []struct {
		name string
		path string
		root bool // allow the root
		ok   bool
	}{
		{"root where allowed", "", true, true},
		{"root where not allowed", "", false, false},
		{"single", "a", false, true},
		{"nested", "a/b", false, true},
		{"dotfile", ".hidden/..x/x..", false, true},
		{"absolute", "/etc/x", false, false},
		{"absolute, root allowed", "/etc/x", true, false},
		{"lone slash", "/", true, false},
		{"leading dotdot", "../x", false, false},
		{"inner dotdot", "a/../b", false, false},
		{"trailing dotdot", "a/..", false, false},
		{"dotdot alone", "..", false, false},
		{"dot alone", ".", true, false},
		{"inner dot", "a/./b", false, false},
		{"double slash", "a//b", false, false},
		{"trailing slash", "a/", false, false},
		{"NUL", "a\x00b", false, false},
		{"NUL alone", "\x00", true, false},
		{"component of 255", c255, false, true},
		{"nested component of 255", "a/" + c255 + "/b", false, true},
		{"component of 256", c256, false, false},
		{"nested component of 256", "a/" + c256, false, false},
		{"path of 4096", longPath(MaxPathLen), false, true},
		{"path of 4097", longPath(MaxPathLen + 1), false, false},
		{"non-UTF-8", "\xff\xfe", false, true}, // Linux names are bytes
		{"backslash", `a\..\b`, false, true},   // not a separator on Linux
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckPath(tc.path, tc.root)
			if (err == nil) != tc.ok {
				t.Errorf("CheckPath(%q, %v) = %v, want ok=%v", trim(tc.path), tc.root, err, tc.ok)
			}
		})
	}
}

func TestLongPathHelper(t *testing.T) {
	for _, n := range []int{1, 2, 255, 256, 257, 258, 511, 512, 513, MaxPathLen, MaxPathLen + 1} {
		p := longPath(n)
		if len(p) != n {
			t.Fatalf("longPath(%d) has %d bytes", n, len(p))
		}
		for c := range strings.SplitSeq(p, "/") {
			if c == "" || len(c) > MaxNameLen {
				t.Fatalf("longPath(%d) has a component of %d bytes", n, len(c))
			}
		}
	}
}

func trim(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
