package replayer

import (
	"errors"
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/tdfs/tdfs/wire"
)

func TestXattrs(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	applyAll(t, r,
		&wire.Create{Path: "f", Mode: 0o644},
		&wire.Mkdir{Path: "d", Mode: 0o755},
		&wire.Setxattr{Path: "f", Name: "user.k", Value: []byte("v1")},
		&wire.Setxattr{Path: "f", Name: "user.k", Value: []byte("v2"), Flags: wire.XattrReplace},
		&wire.Setxattr{Path: "d", Name: "user.k", Value: []byte("dir"), Flags: wire.XattrCreate},
		&wire.Setxattr{Path: "", Name: "user.k", Value: []byte("root")},
		&wire.Setxattr{Path: "f", Name: "user.empty", Value: nil},
	)
	want := map[string]map[string]string{
		"f": {"user.k": "v2", "user.empty": ""},
		"d": {"user.k": "dir"},
		"":  {"user.k": "root"},
	}
	for p, w := range want {
		got, err := xattrs(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range w {
			if got[k] != v {
				t.Errorf("%q %s = %q, want %q", p, k, got[k], v)
			}
		}
	}
	// The master's flags succeeded there; a replay of the op must too.
	if err := r.Apply(&wire.Setxattr{Path: "f", Name: "user.k", Value: []byte("x"), Flags: wire.XattrCreate}); err != nil {
		t.Errorf("replayed XATTR_CREATE of an existing attribute: %v", err)
	}
	if err := r.Apply(&wire.Setxattr{Path: "f", Name: "user.nope", Value: []byte("x"), Flags: wire.XattrReplace}); err != nil {
		t.Errorf("XATTR_REPLACE of a missing attribute: %v", err)
	}
	if got, err := xattrs(filepath.Join(root, "f")); err != nil || got["user.k"] != "x" || got["user.nope"] != "x" {
		t.Errorf("after the flagged sets: %v, %v", got, err)
	}
	if err := r.Apply(&wire.Setxattr{Path: "missing", Name: "user.k"}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("setxattr on a missing file: %v, want ENOENT", err)
	}
	rm := &wire.Removexattr{Path: "f", Name: "user.k"}
	applyAll(t, r, rm, rm) // the replay of a removal is fine
	if got, _ := xattrs(filepath.Join(root, "f")); got["user.k"] != "" {
		t.Errorf("user.k still there: %v", got)
	}
}
