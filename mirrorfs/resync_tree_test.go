package mirrorfs_test

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/internal/treecmp"
)

// treeDiff describes how the trees at master and slave differ, "" when
// they match as the fidelity promise says (docs/design.md, Fidelity):
// treecmp compares what that promise names.
func treeDiff(t *testing.T, master, slave string) string {
	t.Helper()
	d, err := treecmp.Diff(master, slave, treecmp.Options{})
	if err != nil {
		t.Fatalf("compare %s with %s: %v", master, slave, err)
	}
	return d
}

// sameTree fails t unless the trees at master and slave are identical.
func sameTree(t *testing.T, master, slave string) {
	t.Helper()
	if d := treeDiff(t, master, slave); d != "" {
		t.Errorf("trees differ:\n%s", d)
	}
}

// entryInfo is what snapshot records of an entry: what treecmp compares
// (not atime or ctime). snapshot and diffTrees compare one tree with
// itself across time, which treecmp, comparing two trees that exist at
// once, cannot.
type entryInfo struct {
	mode     uint32 // type and permission bits
	uid, gid uint32
	size     int64
	mtime    unix.Timespec
	target   string
	content  [32]byte
	xattrs   string
	links    string // the other paths of a file with several links
}

func (e entryInfo) String() string {
	return fmt.Sprintf("mode %#o owner %d:%d size %d mtime %d.%09d target %q content %x xattrs %q links %q",
		e.mode, e.uid, e.gid, e.size, e.mtime.Sec, e.mtime.Nsec, e.target, e.content[:4], e.xattrs, e.links)
}

// snapshot describes every entry of the tree at root, root itself as "".
func snapshot(t *testing.T, root string) map[string]entryInfo {
	t.Helper()
	out := map[string]entryInfo{}
	byIno := map[uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			rel = ""
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := entryInfo{mode: st.Mode, uid: st.Uid, gid: st.Gid, mtime: st.Mtim}
		x := listXattrs(p)
		var xs []string
		for k, v := range x {
			xs = append(xs, k+"="+v)
		}
		slices.Sort(xs)
		e.xattrs = strings.Join(xs, ",")
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.size = st.Size
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.content = sha256.Sum256(b)
			if st.Nlink > 1 {
				byIno[st.Ino] = append(byIno[st.Ino], rel)
			}
		case unix.S_IFLNK:
			e.target, _ = os.Readlink(p)
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	for _, ps := range byIno {
		slices.Sort(ps)
		for _, p := range ps {
			e := out[p]
			e.links = strings.Join(ps, ",")
			out[p] = e
		}
	}
	return out
}

// diffTrees lists how two snapshots of one tree differ.
func diffTrees(before, after map[string]entryInfo) []string {
	var out []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%q gone (%v)", p, b))
		case a != b:
			out = append(out, fmt.Sprintf("%q changed:\n\tbefore %v\n\tafter  %v", p, b, a))
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			out = append(out, fmt.Sprintf("%q new (%v)", p, a))
		}
	}
	slices.Sort(out)
	return out
}

// treeOpts shapes makeTree.
type treeOpts struct {
	dirs, files int
	maxSize     int // bytes of the largest file
}

// makeTree fills root with a random tree: nested directories, files of
// every size class (empty, short, several blocks, sparse), symlinks,
// fifos, sockets, hard links, xattrs, modes, owners and old mtimes.
func makeTree(t *testing.T, root string, seed uint64, o treeOpts) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 99))
	dirs := []string{""}
	for i := 0; i < o.dirs; i++ {
		d := filepath.Join(dirs[rng.IntN(len(dirs))], fmt.Sprintf("d%02d", i))
		must(t, os.Mkdir(filepath.Join(root, d), 0o755))
		dirs = append(dirs, d)
	}
	var files []string
	for i := 0; i < o.files; i++ {
		p := filepath.Join(root, dirs[rng.IntN(len(dirs))], fmt.Sprintf("f%03d", i))
		var data []byte
		switch rng.IntN(5) {
		case 0: // empty
		case 1:
			data = make([]byte, rng.IntN(100))
		case 2, 3:
			data = make([]byte, rng.IntN(o.maxSize+1))
		case 4: // sparse: data at the start and the end
			data = nil
			f, err := os.Create(p)
			must(t, err)
			_, err = f.Write([]byte("head"))
			must(t, err)
			_, err = f.WriteAt([]byte("tail"), int64(3*128<<10+rng.IntN(1000)))
			must(t, err)
			must(t, f.Close())
			files = append(files, p)
			continue
		}
		for j := range data {
			data[j] = byte(rng.IntN(7)) // compressible, and zeros now and then
		}
		must(t, os.WriteFile(p, data, 0o644))
		files = append(files, p)
	}
	for i, p := range files {
		switch i % 7 {
		case 1:
			must(t, os.Chmod(p, 0o600))
		case 2:
			must(t, unix.Lsetxattr(p, "user.tdfs", []byte(fmt.Sprint("v", i)), 0))
		case 3:
			if os.Geteuid() == 0 {
				must(t, os.Lchown(p, 1234, 5678))
			}
		case 4:
			must(t, os.Link(p, filepath.Join(root, dirs[rng.IntN(len(dirs))], fmt.Sprintf("link%03d", i))))
		}
	}
	for i := 0; i < o.files/5+1; i++ {
		d := filepath.Join(root, dirs[rng.IntN(len(dirs))])
		must(t, os.Symlink(fmt.Sprintf("target-%d", i), filepath.Join(d, fmt.Sprintf("sym%02d", i))))
		if i%2 == 0 {
			must(t, unix.Mkfifo(filepath.Join(d, fmt.Sprintf("fifo%02d", i)), 0o640))
		} else {
			must(t, unix.Mknod(filepath.Join(d, fmt.Sprintf("sock%02d", i)), unix.S_IFSOCK|0o600, 0))
		}
	}
	must(t, unix.Lsetxattr(filepath.Join(root, dirs[len(dirs)-1]), "user.dir", []byte("x"), 0))
	// Old mtimes everywhere, deepest first so parents keep theirs.
	var all []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		all = append(all, p)
		return nil
	})
	slices.Reverse(all)
	for i, p := range all {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Sec: 1_600_000_000 + int64(i)*1000, Nsec: int64(i * 7)}}
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
