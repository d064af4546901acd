package replayer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/internal/treecmp"
)

// entry is what the replica must reproduce of one file (docs/design.md,
// Fidelity): everything but atime, ctime and inode numbers.
type entry struct {
	Type   string
	Perm   uint32 // incl. setuid, setgid, sticky
	Uid    uint32
	Gid    uint32
	Size   int64 // regular files and symlinks: directory sizes are a filesystem's business
	Mtime  unix.Timespec
	Nlink  uint64
	Target string            // symlinks
	Data   string            // regular files: sha256 of the contents
	Xattrs map[string]string // every attribute, user.* and trusted.* alike
	LinkOf string            // the first path (in walk order) of the same inode, if not this one
}

// snapshot walks root without following symlinks and describes every
// entry, keyed by slash path relative to root ("" is root itself). It
// tells whether one tree changed between two moments (diffTrees); two
// trees are compared with requireSameTree.
func snapshot(t *testing.T, root string) map[string]entry {
	t.Helper()
	tree := make(map[string]entry)
	first := make(map[[2]uint64]string)
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			rel = ""
		}
		rel = filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := entry{
			Type:  typeName(st.Mode),
			Perm:  st.Mode & 0o7777,
			Uid:   st.Uid,
			Gid:   st.Gid,
			Mtime: st.Mtim,
			Nlink: uint64(st.Nlink),
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.Size = st.Size
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			e.Data = hex.EncodeToString(sum[:])
		case unix.S_IFLNK:
			e.Size = st.Size
			if e.Target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			key := [2]uint64{st.Dev, st.Ino}
			if f, ok := first[key]; ok {
				e.LinkOf = f
			} else {
				first[key] = rel
			}
		}
		if e.Xattrs, err = xattrs(p); err != nil {
			return err
		}
		tree[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return tree
}

// xattrs lists the attributes of p itself (not following a symlink).
func xattrs(p string) (map[string]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return nil, fmt.Errorf("listxattr %s: %w", p, err)
	}
	m := make(map[string]string)
	for _, name := range splitNUL(buf[:n]) {
		val := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", p, name, err)
		}
		m[name] = string(val[:vn])
	}
	return m, nil
}

func splitNUL(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}

// diffTrees lists how got differs from want, one line per path.
func diffTrees(want, got map[string]entry) []string {
	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	var diffs []string
	for _, p := range paths {
		w, wok := want[p]
		g, gok := got[p]
		switch {
		case !gok:
			diffs = append(diffs, fmt.Sprintf("%q: missing (want %+v)", p, w))
		case !wok:
			diffs = append(diffs, fmt.Sprintf("%q: unexpected (%+v)", p, g))
		case !reflect.DeepEqual(w, g):
			diffs = append(diffs, fmt.Sprintf("%q:\n\twant %+v\n\tgot  %+v", p, w, g))
		}
	}
	return diffs
}

// requireSameTree fails the test if the trees at want and got differ in
// anything a replica must reproduce (internal/treecmp).
func requireSameTree(t *testing.T, want, got string) {
	t.Helper()
	d, err := treecmp.Diff(want, got, treecmp.Options{})
	if err != nil {
		t.Fatalf("compare %s with %s: %v", want, got, err)
	}
	if d != "" {
		t.Fatalf("%s differs from %s:\n%s", got, want, d)
	}
}

// TestSnapshotSeesDifferences keeps the "changed nothing" checks honest:
// a snapshot comparison that cannot fail proves nothing.
func TestSnapshotSeesDifferences(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		if err := os.WriteFile(filepath.Join(d, "f"), []byte("same"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(filepath.Join(d, "f"), timeAt(100, 5), timeAt(100, 5)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(d, timeAt(200, 0), timeAt(200, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if d := diffTrees(snapshot(t, a), snapshot(t, b)); len(d) != 0 {
		t.Fatalf("identical trees differ: %v", d)
	}
	changes := map[string]func(p string) error{
		"mtime ns": func(p string) error { return os.Chtimes(p, timeAt(100, 6), timeAt(100, 6)) },
		"mode":     func(p string) error { return unix.Chmod(p, 0o4644) },
		"owner":    func(p string) error { return os.Lchown(p, 1, 1) },
		"xattr":    func(p string) error { return unix.Lsetxattr(p, "user.k", []byte("v"), 0) },
		"data": func(p string) error {
			if err := os.WriteFile(p, []byte("diff"), 0o644); err != nil {
				return err
			}
			return os.Chtimes(p, timeAt(100, 5), timeAt(100, 5))
		},
	}
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			c := t.TempDir()
			p := filepath.Join(c, "f")
			if err := os.WriteFile(p, []byte("same"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, timeAt(100, 5), timeAt(100, 5)); err != nil {
				t.Fatal(err)
			}
			if err := change(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(c, timeAt(200, 0), timeAt(200, 0)); err != nil {
				t.Fatal(err)
			}
			if d := diffTrees(snapshot(t, a), snapshot(t, c)); len(d) == 0 {
				t.Fatalf("a change of %s went unnoticed", name)
			}
		})
	}
}
