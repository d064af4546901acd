package replayer

import (
	"hash/fnv"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// treeBuilder makes test trees by hand, with plain system calls.
type treeBuilder struct {
	t    *testing.T
	root string
}

func (b treeBuilder) abs(p string) string { return filepath.Join(b.root, filepath.FromSlash(p)) }

func (b treeBuilder) must(what string, err error) {
	b.t.Helper()
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b treeBuilder) file(p string, data []byte, mode uint32) {
	b.t.Helper()
	b.must("write "+p, os.WriteFile(b.abs(p), data, 0o600))
	b.must("chmod "+p, unix.Chmod(b.abs(p), mode))
}

func (b treeBuilder) dir(p string, mode uint32) {
	b.t.Helper()
	b.must("mkdir "+p, unix.Mkdir(b.abs(p), 0o700))
	b.must("chmod "+p, unix.Chmod(b.abs(p), mode))
}

func (b treeBuilder) symlink(target, p string) {
	b.t.Helper()
	b.must("symlink "+p, unix.Symlink(target, b.abs(p)))
}

func (b treeBuilder) mknod(p string, mode uint32) {
	b.t.Helper()
	b.must("mknod "+p, unix.Mknod(b.abs(p), mode, 0))
	b.must("chmod "+p, unix.Chmod(b.abs(p), mode&0o7777))
}

func (b treeBuilder) link(oldp, newp string) {
	b.t.Helper()
	b.must("link "+newp, unix.Link(b.abs(oldp), b.abs(newp)))
}

func (b treeBuilder) chown(p string, uid, gid int) {
	b.t.Helper()
	b.must("lchown "+p, unix.Lchown(b.abs(p), uid, gid))
}

func (b treeBuilder) xattr(p, name, value string) {
	b.t.Helper()
	b.must("setxattr "+p, unix.Lsetxattr(b.abs(p), name, []byte(value), 0))
}

func (b treeBuilder) mtime(p string, sec, nsec int64) {
	b.t.Helper()
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Sec: sec, Nsec: nsec}}
	b.must("utimens "+p, unix.UtimesNanoAt(unix.AT_FDCWD, b.abs(p), ts, unix.AT_SYMLINK_NOFOLLOW))
}

// stampAll gives every entry an mtime made from its path (for a file
// with several links, from its first path in byte order), children before
// their directory, so two trees built alike have equal mtimes.
func (b treeBuilder) stampAll() {
	b.t.Helper()
	var paths []string
	firstOf := make(map[[2]uint64]string)
	b.must("walk", filepath.WalkDir(b.root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(b.root, p)
		if rel == "." {
			rel = ""
		}
		rel = filepath.ToSlash(rel)
		paths = append(paths, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if key := [2]uint64{st.Dev, st.Ino}; st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if f, ok := firstOf[key]; !ok || rel < f {
				firstOf[key] = rel
			}
		}
		return err
	}))
	depth := func(p string) int {
		if p == "" {
			return 0
		}
		return strings.Count(p, "/") + 1
	}
	sort.SliceStable(paths, func(i, j int) bool { return depth(paths[i]) > depth(paths[j]) })
	for _, p := range paths {
		key := p
		var st unix.Stat_t
		b.must("lstat", unix.Lstat(b.abs(p), &st))
		if f, ok := firstOf[[2]uint64{st.Dev, st.Ino}]; ok {
			key = f
		}
		h := fnv.New64a()
		h.Write([]byte(key))
		s := h.Sum64()
		b.mtime(p, 1_500_000_000+int64(s%1_000_000), int64(s%1_000_000_000))
	}
}

// expectDiff is a difference the slave must report: What starts with
// prefix.
type expectDiff struct{ path, prefix string }

// randomData returns n reproducible random bytes.
func randomData(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// plant builds a master tree and a slave tree that differ in every way a
// resync compares, and returns the differences the slave must report.
// With sneaky, one file differs in contents alone (same size and mtime):
// only a Verify pass's root hashes can see it.
func plant(t *testing.T, masterDir, slaveDir string, sneaky bool) []expectDiff {
	t.Helper()
	m, s := treeBuilder{t, masterDir}, treeBuilder{t, slaveDir}
	both := func(f func(b treeBuilder)) { f(m); f(s) }
	var want []expectDiff
	expect := func(p, prefix string) { want = append(want, expectDiff{p, prefix}) }

	both(func(b treeBuilder) { b.file("f_same", []byte("hello"), 0o644) })

	content := randomData(1, 3*128<<10+1000)
	m.file("f_content", content, 0o644)
	changed := append([]byte(nil), content...)
	changed[128<<10+5] ^= 0xff
	s.file("f_content", changed, 0o644)
	expect("f_content", "mtime") // tweaked below

	m.file("f_size", randomData(2, 200_000), 0o644)
	s.file("f_size", randomData(2, 200_000)[:50_000], 0o644)
	expect("f_size", "size")

	m.file("f_missing", []byte("x"), 0o644)
	expect("f_missing", "missing")
	m.file("f_empty_missing", nil, 0o640)
	expect("f_empty_missing", "missing")

	m.file("f_mode", []byte("m"), 0o644)
	s.file("f_mode", []byte("m"), 0o600)
	expect("f_mode", "mode")

	both(func(b treeBuilder) { b.file("f_owner", []byte("o"), 0o644) })
	m.chown("f_owner", 1000, 1000)
	expect("f_owner", "owner")

	both(func(b treeBuilder) { b.file("f_mtime", []byte("t"), 0o644) })
	expect("f_mtime", "mtime") // tweaked below

	both(func(b treeBuilder) { b.file("f_xattr", []byte("x"), 0o644) })
	m.xattr("f_xattr", "user.a", "1")
	m.xattr("f_xattr", "user.b", "2")
	m.xattr("f_xattr", "trusted.t", "3")
	s.xattr("f_xattr", "user.a", "9")
	s.xattr("f_xattr", "user.c", "3")
	expect("f_xattr", "xattr user.a")
	expect("f_xattr", "xattr user.b")
	expect("f_xattr", "xattr user.c")
	expect("f_xattr", "xattr trusted.t")

	// Setuid survives only if chown goes before chmod.
	m.file("f_setuid", []byte("#!/bin/sh\n"), 0o755)
	m.chown("f_setuid", 1000, 1000)
	m.must("chmod", unix.Chmod(m.abs("f_setuid"), 0o4755))
	s.file("f_setuid", []byte("#!/bin/sh\n"), 0o755)
	expect("f_setuid", "mode")
	expect("f_setuid", "owner")

	m.dir("dir_missing", 0o750)
	m.dir("dir_missing/sub", 0o755)
	m.file("dir_missing/sub/x", []byte("deep"), 0o644)
	expect("dir_missing", "missing")

	s.dir("extra_dir", 0o755)
	s.dir("extra_dir/a", 0o755)
	s.dir("extra_dir/a/b", 0o755)
	s.file("extra_dir/a/b/c", []byte("junk"), 0o644)
	s.symlink("/etc", "extra_dir/a/l")
	expect("extra_dir", "extra")
	s.file("extra_file", []byte("junk"), 0o644)
	expect("extra_file", "extra")

	m.file("kind_f2d", []byte("now a file"), 0o644)
	s.dir("kind_f2d", 0o755)
	s.file("kind_f2d/child", []byte("c"), 0o644)
	expect("kind_f2d", "kind")
	m.dir("kind_d2f", 0o755)
	m.file("kind_d2f/in", []byte("in"), 0o644)
	s.file("kind_d2f", []byte("was a file"), 0o644)
	expect("kind_d2f", "kind")
	m.file("kind_l2f", []byte("l2f"), 0o644)
	s.symlink("f_same", "kind_l2f")
	expect("kind_l2f", "kind")
	m.symlink("tgt", "kind_f2l")
	s.file("kind_f2l", []byte("f2l"), 0o644)
	expect("kind_f2l", "kind")

	m.symlink("a", "link_target")
	s.symlink("b", "link_target")
	expect("link_target", "symlink target")
	both(func(b treeBuilder) { b.symlink("t", "sl_owner") })
	m.chown("sl_owner", 1000, 1000)
	expect("sl_owner", "owner")

	m.mknod("fifo", unix.S_IFIFO|0o640)
	expect("fifo", "missing")
	m.mknod("sock", unix.S_IFSOCK|0o755)
	s.mknod("sock", unix.S_IFIFO|0o755)
	expect("sock", "kind")

	both(func(b treeBuilder) {
		b.dir("sub", 0o755)
		b.file("h1", []byte("shared"), 0o644)
	})
	m.link("h1", "h2")
	m.link("h1", "sub/h3")
	s.file("h2", []byte("shared"), 0o644)
	expect("h2", "hard link")
	expect("sub/h3", "missing")

	m.file("s1", []byte("one"), 0o644)
	m.file("s2", []byte("two"), 0o644)
	s.file("s1", []byte("one"), 0o644)
	s.link("s1", "s2")
	expect("s1", "hard link")
	expect("s2", "hard link")
	expect("s2", "mtime") // the slave's s2 is s1

	m.dir("d", 0o755)
	m.xattr("d", "user.dir", "1")
	s.dir("d", 0o700)
	both(func(b treeBuilder) { b.file("d/inner", []byte("i"), 0o644) })
	expect("d", "mode")
	expect("d", "xattr user.dir")

	both(func(b treeBuilder) {
		b.dir("many", 0o755)
		for _, n := range []string{"n00", "n01", "n02", "n03", "n04", "n05", "n06", "n07", "n08", "n09"} {
			b.file("many/"+n, []byte(n), 0o644)
		}
	})
	s.file("many/n035", []byte("extra in the middle"), 0o644)
	s.file("many/a_first", []byte("extra before all"), 0o644)
	s.file("many/z_last", []byte("extra after all"), 0o644)
	expect("many/n035", "extra")
	expect("many/a_first", "extra")
	expect("many/z_last", "extra")

	if sneaky {
		m.file("f_sneaky", []byte("same size A"), 0o644)
		s.file("f_sneaky", []byte("same size B"), 0o644)
	}

	m.stampAll()
	s.stampAll()
	s.mtime("f_content", 1_234, 5)
	s.mtime("f_mtime", 1_234, 6)
	s.mtime("", 1_234, 7)
	expect("", "mtime")
	return want
}

// requireRoot skips a test that needs root (owners, trusted.* xattrs).
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root (owners, trusted.* xattrs, open_by_handle_at)")
	}
}
