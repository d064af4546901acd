package replayer

import (
	"errors"
	"io/fs"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/quictransport/wire"
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
	if err := r.Apply(&wire.Setxattr{Path: "f", Name: "user.k", Value: []byte("x"), Flags: wire.XattrCreate}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("XATTR_CREATE of an existing attribute: %v, want EEXIST", err)
	}
	if err := r.Apply(&wire.Setxattr{Path: "f", Name: "user.nope", Value: []byte("x"), Flags: wire.XattrReplace}); !errors.Is(err, unix.ENODATA) {
		t.Errorf("XATTR_REPLACE of a missing attribute: %v, want ENODATA", err)
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
