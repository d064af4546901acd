package mirrorfs

import (
	"bytes"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Paths of up to PATH_MAX bytes below the mount root must work however
// long the backing dir's own path is, as on a local filesystem: the
// mirror reaches the backing dir relative to its descriptor (backing.go).
// These tests put the backing dir about 1,000 bytes deep and go to within
// a few bytes of 4096 below the mount root, through directory descriptors
// (an absolute path on the mount would itself exceed PATH_MAX).

// newLongEnv mounts a mirror of an empty backing dir whose absolute path
// is at least 1,000 bytes long.
func newLongEnv(t *testing.T) *env {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	back := dir
	for i := 0; len(back) < 1000; i++ {
		back = filepath.Join(back, strings.Repeat(string(rune('p'+i)), 190))
	}
	mnt := filepath.Join(dir, "mnt")
	for _, d := range []string{back, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return mountEnv(t, wire.ModeFsync, back, mnt)
}

// component is the i-th directory name of the deep tree: 200 bytes.
func component(i int) string { return strings.Repeat(string(rune('a'+i)), 200) }

// nameFor returns a name starting with prefix that makes dir/name exactly
// total bytes long.
func nameFor(t *testing.T, dir, prefix string, total int) string {
	t.Helper()
	n := total - len(dir) - 1
	if n < len(prefix) || n > wire.MaxNameLen {
		t.Fatalf("no name of %d bytes below %d-byte %q", n, len(dir), prefix)
	}
	return prefix + strings.Repeat("x", n-len(prefix))
}

// openDirChain opens the directory rel below the directory root, one
// component at a time, and closes it when the test ends (before the
// unmount: cleanups run last-in first-out).
func openDirChain(t *testing.T, root, rel string) int {
	t.Helper()
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range strings.Split(rel, "/") {
		if c == "" {
			continue
		}
		nfd, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("open %d-byte directory below %q: %v", len(rel), root, err)
		}
		fd = nfd
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// bstat lstats rel in the backing dir, walking to its parent one
// component at a time.
func (e *env) bstat(rel string) unix.Stat_t {
	e.t.Helper()
	dir, name := "", rel
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		dir, name = rel[:i], rel[i+1:]
	}
	if name == "" {
		name = "."
	}
	fd := openDirChain(e.t, e.back, dir)
	var st unix.Stat_t
	if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		e.t.Fatalf("backing lstat of %d-byte %q: %v", len(rel), filepath.Base(rel), err)
	}
	return st
}

func (e *env) bmtime(rel string) wire.Time {
	e.t.Helper()
	st := e.bstat(rel)
	return wire.Time{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)}
}

// opsOf runs fn and returns what it emitted, releases left out.
func (e *env) opsOf(what string, fn func() error) []rec {
	e.t.Helper()
	mark := e.sink.mark()
	if err := fn(); err != nil {
		e.t.Fatalf("%s: %v", what, err)
	}
	return withoutReleases(e.sink.since(mark))
}

// procPath names name in the directory open as fd through /proc, a short
// path for the calls that have no *at form (xattrs, truncate).
func procPath(fd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(fd) + "/" + name
}

func TestPathMaxBelowLongBacking(t *testing.T) {
	e := newLongEnv(t)
	if len(e.back) < 1000 {
		t.Fatalf("backing dir path is %d bytes, want at least 1000", len(e.back))
	}

	// 20 directories of 200-byte names, each made relative to its
	// parent's descriptor on the mount: 4,019 bytes below the root.
	fd := openDirChain(t, e.mnt, "")
	rel := ""
	var parents []int // the descriptor of each level's parent
	for i := range 20 {
		name := component(i)
		parent := rel
		rel = childPath(rel, name)
		recs := e.opsOf("mkdir", func() error { return unix.Mkdirat(fd, name, 0o750) })
		mk := one[*wire.Mkdir](t, recs)
		if mk.Path != rel || mk.Mode != 0o750 || mk.Mtime != e.bmtime(rel) || mk.DirMtime != e.bmtime(parent) {
			t.Fatalf("mkdir of %d-byte path: op path %d bytes, mode %#o, mtime %+v, dir mtime %+v; want the path, 0750 and the backing times",
				len(rel), len(mk.Path), mk.Mode, mk.Mtime, mk.DirMtime)
		}
		if st := e.bstat(rel); st.Mode != syscall.S_IFDIR|0o750 {
			t.Fatalf("backing dir at %d bytes: mode %#o", len(rel), st.Mode)
		}
		parents = append(parents, fd)
		nfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("open %d-byte directory on the mount: %v", len(rel), err)
		}
		t.Cleanup(func() { unix.Close(nfd) })
		fd = nfd
	}
	dir, d := rel, fd
	if len(dir) != 4019 {
		t.Fatalf("deep directory is %d bytes", len(dir))
	}

	// Create and write a file whose path is 4,090 bytes.
	fname := nameFor(t, dir, "f", 4090)
	frel := dir + "/" + fname
	var ffd int
	recs := e.opsOf("create", func() (err error) {
		ffd, err = unix.Openat(d, fname, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o640)
		return err
	})
	cr := one[*wire.Create](t, recs)
	if cr.Path != frel || cr.Handle == 0 || cr.Mode != 0o640 || cr.DirMtime != e.bmtime(dir) {
		t.Errorf("create op: path %d bytes, handle %d, mode %#o; want %d bytes, a handle, 0640", len(cr.Path), cr.Handle, cr.Mode, len(frel))
	}
	recs = e.opsOf("write", func() error {
		_, err := unix.Write(ffd, []byte("hello"))
		return err
	})
	if w := one[*wire.Write](t, recs); w.Handle != cr.Handle || string(w.Data) != "hello" || w.Off != 0 {
		t.Errorf("write op %+v", *w)
	}
	unix.Close(ffd)
	e.settle()
	bd := openDirChain(t, e.back, dir)
	readBack := func(name string) string {
		t.Helper()
		rfd, err := unix.Openat(bd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("backing open: %v", err)
		}
		defer unix.Close(rfd)
		buf := make([]byte, 64)
		n, err := unix.Read(rfd, buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	if got := readBack(fname); got != "hello" {
		t.Errorf("backing file holds %q", got)
	}

	// Stat through the mount, forcing the attributes to come from the
	// mirror (GETATTR or STATX) rather than the kernel's cache.
	var sx unix.Statx_t
	if err := unix.Statx(d, fname, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &sx); err != nil {
		t.Fatalf("statx: %v", err)
	}
	if bst := e.bstat(frel); sx.Size != 5 || sx.Ino != bst.Ino || sx.Mode != syscall.S_IFREG|0o640 {
		t.Errorf("statx through the mount: size %d ino %d mode %#o; backing ino %d", sx.Size, sx.Ino, sx.Mode, bst.Ino)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(d, fname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Size != 5 {
		t.Errorf("fstatat through the mount: size %d, %v", st.Size, err)
	}

	// chmod, chown, utimens: path ops (no handle).
	recs = e.opsOf("chmod", func() error { return unix.Fchmodat(d, fname, 0o600, 0) })
	if sa := one[*wire.Setattr](t, recs); sa.Path != frel || sa.Handle != 0 || sa.Valid != wire.SetMode || sa.Mode != 0o600 {
		t.Errorf("chmod op: path %d bytes, valid %#x, mode %#o", len(sa.Path), sa.Valid, sa.Mode)
	}
	if got := e.bstat(frel).Mode; got != syscall.S_IFREG|0o600 {
		t.Errorf("backing mode after chmod %#o", got)
	}
	if os.Getuid() == 0 {
		recs = e.opsOf("chown", func() error { return unix.Fchownat(d, fname, 1234, 5678, unix.AT_SYMLINK_NOFOLLOW) })
		sa := one[*wire.Setattr](t, recs)
		if sa.Path != frel || sa.Valid&(wire.SetUid|wire.SetGid) != wire.SetUid|wire.SetGid || sa.Uid != 1234 || sa.Gid != 5678 {
			t.Errorf("chown op: path %d bytes, valid %#x, %d:%d", len(sa.Path), sa.Valid, sa.Uid, sa.Gid)
		}
		if bst := e.bstat(frel); bst.Uid != 1234 || bst.Gid != 5678 {
			t.Errorf("backing owner after chown %d:%d", bst.Uid, bst.Gid)
		}
	}
	ts := []unix.Timespec{{Sec: 1000, Nsec: 5}, {Sec: 2000, Nsec: 7}}
	recs = e.opsOf("utimens", func() error { return unix.UtimesNanoAt(d, fname, ts, unix.AT_SYMLINK_NOFOLLOW) })
	if sa := one[*wire.Setattr](t, recs); sa.Path != frel || sa.Valid != wire.SetAtime|wire.SetMtime ||
		sa.Mtime != (wire.Time{Sec: 2000, Nsec: 7}) || sa.Atime != (wire.Time{Sec: 1000, Nsec: 5}) {
		t.Errorf("utimens op: path %d bytes, %+v", len(sa.Path), *sa)
	}
	if got := e.bmtime(frel); got != (wire.Time{Sec: 2000, Nsec: 7}) {
		t.Errorf("backing mtime after utimens %+v", got)
	}

	// truncate(2) by path: there is no truncateat, so through /proc,
	// which the kernel resolves to the node on the mount (a SETATTR
	// without a handle).
	recs = e.opsOf("truncate", func() error { return unix.Truncate(procPath(d, fname), 2) })
	if sa := one[*wire.Setattr](t, recs); sa.Path != frel || sa.Handle != 0 || sa.Valid != wire.SetSize || sa.Size != 2 {
		t.Errorf("truncate op: path %d bytes, handle %d, valid %#x, size %d", len(sa.Path), sa.Handle, sa.Valid, sa.Size)
	}
	if got := readBack(fname); got != "he" {
		t.Errorf("backing file after truncate holds %q", got)
	}

	// Extended attributes (through /proc for the same reason).
	fp := procPath(d, fname)
	recs = e.opsOf("setxattr", func() error { return unix.Lsetxattr(fp, "user.deep", []byte("v1"), 0) })
	if sx := one[*wire.Setxattr](t, recs); sx.Path != frel || sx.Name != "user.deep" || string(sx.Value) != "v1" {
		t.Errorf("setxattr op: path %d bytes, %q=%q", len(sx.Path), sx.Name, sx.Value)
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(fp, "user.deep", buf); err != nil || string(buf[:n]) != "v1" {
		t.Errorf("getxattr through the mount: %q, %v", buf[:max(n, 0)], err)
	}
	if n, err := unix.Lgetxattr(procPath(bd, fname), "user.deep", buf); err != nil || string(buf[:n]) != "v1" {
		t.Errorf("getxattr on the backing file: %q, %v", buf[:max(n, 0)], err)
	}
	if n, err := unix.Llistxattr(fp, buf); err != nil || !slices.Contains(strings.Split(string(buf[:n]), "\x00"), "user.deep") {
		t.Errorf("listxattr through the mount: %q, %v", buf[:max(n, 0)], err)
	}
	recs = e.opsOf("removexattr", func() error { return unix.Lremovexattr(fp, "user.deep") })
	if rx := one[*wire.Removexattr](t, recs); rx.Path != frel || rx.Name != "user.deep" {
		t.Errorf("removexattr op: path %d bytes, %q", len(rx.Path), rx.Name)
	}
	if _, err := unix.Lgetxattr(procPath(bd, fname), "user.deep", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("backing xattr after removexattr: %v, want ENODATA", err)
	}

	// Symlink and readlink.
	lname := nameFor(t, dir, "l", 4091)
	lrel := dir + "/" + lname
	recs = e.opsOf("symlink", func() error { return unix.Symlinkat("some/target", d, lname) })
	if sl := one[*wire.Symlink](t, recs); sl.Path != lrel || sl.Target != "some/target" || sl.DirMtime != e.bmtime(dir) {
		t.Errorf("symlink op: path %d bytes, target %q", len(sl.Path), sl.Target)
	}
	if n, err := unix.Readlinkat(d, lname, buf); err != nil || string(buf[:n]) != "some/target" {
		t.Errorf("readlink through the mount: %q, %v", buf[:max(n, 0)], err)
	}
	if n, err := unix.Readlinkat(bd, lname, buf); err != nil || string(buf[:n]) != "some/target" {
		t.Errorf("backing symlink: %q, %v", buf[:max(n, 0)], err)
	}

	// Hard link, then rename it: plainly, with RENAME_NOREPLACE, and
	// exchanged with the symlink, each across two directories.
	hname := nameFor(t, dir, "h", 4092)
	hrel := dir + "/" + hname
	recs = e.opsOf("link", func() error { return unix.Linkat(d, fname, d, hname, 0) })
	if l := one[*wire.Link](t, recs); l.OldPath != frel || l.NewPath != hrel || l.DirMtime != e.bmtime(dir) {
		t.Errorf("link op: paths %d and %d bytes", len(l.OldPath), len(l.NewPath))
	}
	if bst := e.bstat(hrel); bst.Nlink != 2 || bst.Ino != e.bstat(frel).Ino {
		t.Errorf("backing link: nlink %d", bst.Nlink)
	}
	up, updir := parents[19], dir[:strings.LastIndexByte(dir, '/')]
	rname := nameFor(t, updir, "r", 4000) // exactly maxDirect bytes
	rrel := updir + "/" + rname
	recs = e.opsOf("rename", func() error { return unix.Renameat(d, hname, up, rname) })
	if r := one[*wire.Rename](t, recs); r.OldPath != hrel || r.NewPath != rrel || r.Flags != 0 ||
		r.OldDirMtime != e.bmtime(dir) || r.NewDirMtime != e.bmtime(updir) {
		t.Errorf("rename op: paths %d and %d bytes, flags %d", len(r.OldPath), len(r.NewPath), r.Flags)
	}
	if e.bstat(rrel).Ino != e.bstat(frel).Ino {
		t.Error("backing rename: not the same file")
	}
	r2name := nameFor(t, dir, "s", 4093)
	r2rel := dir + "/" + r2name
	recs = e.opsOf("rename noreplace", func() error { return unix.Renameat2(up, rname, d, r2name, unix.RENAME_NOREPLACE) })
	if r := one[*wire.Rename](t, recs); r.OldPath != rrel || r.NewPath != r2rel || r.Flags != wire.RenameNoReplace {
		t.Errorf("rename noreplace op: paths %d and %d bytes, flags %d", len(r.OldPath), len(r.NewPath), r.Flags)
	}
	recs = e.opsOf("rename exchange", func() error { return unix.Renameat2(d, r2name, d, lname, unix.RENAME_EXCHANGE) })
	if r := one[*wire.Rename](t, recs); r.OldPath != r2rel || r.NewPath != lrel || r.Flags != wire.RenameExchange {
		t.Errorf("rename exchange op: paths %d and %d bytes, flags %d", len(r.OldPath), len(r.NewPath), r.Flags)
	}
	if e.bstat(lrel).Mode&syscall.S_IFMT != syscall.S_IFREG || e.bstat(r2rel).Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Error("backing exchange: types not swapped")
	}

	// A fifo, and a directory to remove.
	pname := nameFor(t, dir, "p", 4094)
	prel := dir + "/" + pname
	recs = e.opsOf("mkfifo", func() error { return unix.Mknodat(d, pname, syscall.S_IFIFO|0o644, 0) })
	if mk := one[*wire.Mknod](t, recs); mk.Path != prel || mk.Mode != syscall.S_IFIFO|0o644 {
		t.Errorf("mknod op: path %d bytes, mode %#o", len(mk.Path), mk.Mode)
	}
	if got := e.bstat(prel).Mode; got != syscall.S_IFIFO|0o644 {
		t.Errorf("backing fifo mode %#o", got)
	}
	sname := nameFor(t, dir, "d", 4095)
	srel := dir + "/" + sname
	recs = e.opsOf("mkdir", func() error { return unix.Mkdirat(d, sname, 0o700) })
	if mk := one[*wire.Mkdir](t, recs); mk.Path != srel {
		t.Errorf("mkdir op: path %d bytes", len(mk.Path))
	}

	// readdir of the deep directory, reopened so the listing comes from
	// the mirror (OPENDIR, READDIRPLUS and a LOOKUP per new entry).
	rd, err := unix.Openat(parents[19], component(19), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opendir: %v", err)
	}
	df := os.NewFile(uintptr(rd), "deep")
	names, err := df.Readdirnames(-1)
	df.Close()
	slices.Sort(names)
	want := []string{fname, lname, r2name, pname, sname}
	slices.Sort(want)
	if err != nil || !slices.Equal(names, want) {
		t.Errorf("readdir: %d names (%v), want %d", len(names), err, len(want))
	}

	// Remove everything at the bottom.
	for _, c := range []struct {
		name string
		flag int
	}{{fname, 0}, {lname, 0}, {r2name, 0}, {pname, 0}, {sname, unix.AT_REMOVEDIR}} {
		crel := dir + "/" + c.name
		recs = e.opsOf("remove", func() error { return unix.Unlinkat(d, c.name, c.flag) })
		var path string
		var dm wire.Time
		if c.flag != 0 {
			rm := one[*wire.Rmdir](t, recs)
			path, dm = rm.Path, rm.DirMtime
		} else {
			u := one[*wire.Unlink](t, recs)
			path, dm = u.Path, u.DirMtime
		}
		if path != crel || dm != e.bmtime(dir) {
			t.Errorf("remove op: path %d bytes, want %d", len(path), len(crel))
		}
		var bst unix.Stat_t
		if err := unix.Fstatat(bd, c.name, &bst, unix.AT_SYMLINK_NOFOLLOW); !errors.Is(err, unix.ENOENT) {
			t.Errorf("backing entry of %d-byte path after removal: %v", len(crel), err)
		}
	}
	// And the deep directory itself.
	recs = e.opsOf("rmdir", func() error { return unix.Unlinkat(parents[19], component(19), unix.AT_REMOVEDIR) })
	if rm := one[*wire.Rmdir](t, recs); rm.Path != dir {
		t.Errorf("rmdir op: path %d bytes", len(rm.Path))
	}
}

// TestPathMaxLimits checks the bounds: a 255-byte name works and a
// 256-byte one is ENAMETOOLONG; a path of 4096 bytes below the root (the
// wire's limit) works through a directory descriptor, one of 4097 does
// not; and a file made in the backing dir beside the mount is looked up,
// read and listed through it at that depth.
func TestPathMaxLimits(t *testing.T) {
	e := newLongEnv(t)
	fd := openDirChain(t, e.mnt, "")
	rel := ""
	for i := range 20 {
		if err := unix.Mkdirat(fd, component(i), 0o755); err != nil {
			t.Fatalf("mkdir level %d: %v", i, err)
		}
		rel = childPath(rel, component(i))
		nfd, err := unix.Openat(fd, component(i), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(nfd) })
		fd = nfd
		if i == 17 {
			// 3,617 bytes: a 255-byte name here makes a path of 3,873
			// bytes, reached relative to the backing dir's descriptor;
			// below a 150-byte directory one of 4,024, reached relative
			// to its parent directory.
			sub := strings.Repeat("q", 150)
			if err := unix.Mkdirat(fd, sub, 0o755); err != nil {
				t.Fatal(err)
			}
			sfd, err := unix.Openat(fd, sub, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(sfd) })
			for _, c := range []struct {
				fd  int
				dir string
			}{{fd, rel}, {sfd, childPath(rel, sub)}} {
				n255, n256 := strings.Repeat("n", 255), strings.Repeat("n", 256)
				recs := e.opsOf("255-byte name", func() error { return unix.Mkdirat(c.fd, n255, 0o755) })
				if mk := one[*wire.Mkdir](t, recs); mk.Path != childPath(c.dir, n255) {
					t.Errorf("mkdir of a 255-byte name at %d bytes: op path %d bytes", len(c.dir)+256, len(mk.Path))
				}
				e.bstat(childPath(c.dir, n255))
				mark := e.sink.mark()
				if err := unix.Mkdirat(c.fd, n256, 0o755); !errors.Is(err, unix.ENAMETOOLONG) {
					t.Errorf("mkdir of a 256-byte name at %d bytes: %v, want ENAMETOOLONG", len(c.dir)+257, err)
				}
				if ffd, err := unix.Openat(c.fd, n256, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644); !errors.Is(err, unix.ENAMETOOLONG) {
					if err == nil {
						unix.Close(ffd)
					}
					t.Errorf("create of a 256-byte name at %d bytes: %v, want ENAMETOOLONG", len(c.dir)+257, err)
				}
				if got := e.sink.since(mark); len(got) != 0 {
					t.Errorf("refused names emitted %v", types(got))
				}
			}
		}
	}
	dir := rel // 4019 bytes

	for _, total := range []int{4095, 4096} {
		name := nameFor(t, dir, "f", total)
		recs := e.opsOf("create", func() error {
			ffd, err := unix.Openat(fd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err == nil {
				unix.Close(ffd)
			}
			return err
		})
		if cr := one[*wire.Create](t, recs); cr.Path != dir+"/"+name {
			t.Errorf("create of a %d-byte path: op path %d bytes", total, len(cr.Path))
		}
		e.bstat(dir + "/" + name)
	}
	e.settle()
	mark := e.sink.mark()
	name := nameFor(t, dir, "f", 4097)
	if err := unix.Mkdirat(fd, name, 0o755); !errors.Is(err, unix.ENAMETOOLONG) {
		t.Errorf("mkdir of a 4097-byte path: %v, want ENAMETOOLONG", err)
	}
	if got := e.sink.since(mark); len(got) != 0 {
		t.Errorf("refused path emitted %v", types(got))
	}

	// Made in the backing dir, not through the mount: LOOKUP, GETATTR,
	// OPEN, READ and the xattr reads all start from the mirror.
	bd := openDirChain(t, e.back, dir)
	oname := nameFor(t, dir, "o", 4094)
	ofd, err := unix.Openat(bd, oname, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(ofd, []byte("beside")); err != nil {
		t.Fatal(err)
	}
	unix.Close(ofd)
	if err := unix.Lsetxattr(procPath(bd, oname), "user.o", []byte("ov"), 0); err != nil {
		t.Fatal(err)
	}
	rfd, err := unix.Openat(fd, oname, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open through the mount: %v", err)
	}
	buf := make([]byte, 64)
	n, err := unix.Read(rfd, buf)
	unix.Close(rfd)
	if err != nil || !bytes.Equal(buf[:n], []byte("beside")) {
		t.Errorf("read through the mount: %q, %v", buf[:max(n, 0)], err)
	}
	if n, err := unix.Lgetxattr(procPath(fd, oname), "user.o", buf); err != nil || string(buf[:n]) != "ov" {
		t.Errorf("getxattr through the mount: %q, %v", buf[:max(n, 0)], err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		t.Errorf("statfs of the deep directory: %v", err)
	}

	// The root itself: its attributes and xattrs go through "." of the
	// backing dir's descriptor.
	recs := e.opsOf("root setxattr", func() error { return unix.Lsetxattr(e.mnt, "user.root", []byte("r"), 0) })
	if sx := one[*wire.Setxattr](t, recs); sx.Path != "" {
		t.Errorf("root setxattr op path %q", sx.Path)
	}
	if n, err := unix.Lgetxattr(e.back, "user.root", buf); err != nil || string(buf[:n]) != "r" {
		t.Errorf("backing root xattr: %q, %v", buf[:max(n, 0)], err)
	}
	var sx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, e.mnt, unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &sx); err != nil || sx.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("statx of the root: %#o, %v", sx.Mode, err)
	}
}

// TestNodeOverridesLoopback checks that node declares every node method
// of *fs.LoopbackNode itself: a promoted one would reach the backing dir
// by a path that starts with the backing dir's own (backing.go).
func TestNodeOverridesLoopback(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	declared := map[string]bool{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || len(fn.Recv.List) != 1 {
				continue
			}
			if star, ok := fn.Recv.List[0].Type.(*ast.StarExpr); ok {
				if id, ok := star.X.(*ast.Ident); ok && id.Name == "node" {
					declared[fn.Name.Name] = true
				}
			}
		}
	}
	if !declared["Lookup"] {
		t.Fatalf("found no node methods in %v", files)
	}
	inode := reflect.TypeOf((*fs.Inode)(nil))
	lb := reflect.TypeOf((*fs.LoopbackNode)(nil))
	for i := range lb.NumMethod() {
		name := lb.Method(i).Name
		if _, ok := inode.MethodByName(name); ok {
			continue // Inode's own (tree bookkeeping), not the loopback's
		}
		if !declared[name] {
			t.Errorf("node does not declare %s: *fs.LoopbackNode's would be promoted", name)
		}
	}
}
