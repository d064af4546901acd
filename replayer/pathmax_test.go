package replayer

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// TestPathMax applies every kind of path op at paths of up to 4,095 and
// 4,096 bytes (wire.MaxPathLen) below a replica root whose own path is
// about 1,000 bytes long: the replayer resolves each path beneath its
// root descriptor, so the root's own path does not count.
func TestPathMax(t *testing.T) {
	root := t.TempDir()
	for i := 0; len(root) < 1000; i++ {
		root = filepath.Join(root, strings.Repeat(string(rune('p'+i)), 190))
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	r := newTestReplayer(t, root, Options{Chown: os.Getuid() == 0})
	omit := wire.Time{Omit: true}
	tm := wire.Time{Sec: 1000, Nsec: 7}

	// 20 nested directories of 200-byte names: 4,019 bytes.
	dir := ""
	for i := range 20 {
		dir = childOf(dir, strings.Repeat(string(rune('a'+i)), 200))
		applyAll(t, r, &wire.Mkdir{Path: dir, Mode: 0o755, Mtime: omit, DirMtime: omit})
	}
	name := func(prefix string, total int) string {
		return prefix + strings.Repeat("x", total-len(dir)-1-len(prefix))
	}
	f := dir + "/" + name("f", 4095)
	l := dir + "/" + name("l", 4094)
	h := dir + "/" + name("h", 4093)
	g := dir + "/" + name("g", 4092)
	p := dir + "/" + name("p", 4091)
	d := dir + "/" + name("d", 4096)
	applyAll(t, r,
		&wire.Create{Path: f, Handle: 1, Mode: 0o644, Mtime: omit, DirMtime: omit},
		&wire.Write{Handle: 1, Data: []byte("hello world"), Mtime: omit},
		&wire.Release{Handle: 1},
		&wire.Setattr{Path: f, Valid: wire.SetMode | wire.SetSize | wire.SetMtime, Mode: 0o600, Size: 5, Atime: omit, Mtime: tm},
		&wire.Setxattr{Path: f, Name: "user.deep", Value: []byte("v")},
		&wire.Setxattr{Path: f, Name: "user.gone", Value: []byte("w")},
		&wire.Removexattr{Path: f, Name: "user.gone"},
		&wire.Symlink{Path: l, Target: "some/target", Mtime: omit, DirMtime: omit},
		&wire.Link{OldPath: f, NewPath: h, DirMtime: omit},
		&wire.Rename{OldPath: h, NewPath: g, OldDirMtime: omit, NewDirMtime: omit},
		&wire.Rename{OldPath: g, NewPath: l, Flags: wire.RenameExchange, OldDirMtime: omit, NewDirMtime: omit},
		&wire.Mknod{Path: p, Mode: unix.S_IFIFO | 0o640, Mtime: omit, DirMtime: omit},
		&wire.Mkdir{Path: d, Mode: 0o700, Mtime: omit, DirMtime: omit},
	)

	fd := openChain(t, root, dir)
	base := func(p string) string { return p[len(dir)+1:] }
	lstat := func(p string) unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Fstatat(fd, base(p), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatalf("%d-byte path: %v", len(p), err)
		}
		return st
	}
	st := lstat(f)
	if st.Mode != unix.S_IFREG|0o600 || st.Size != 5 || st.Mtim.Sec != 1000 || st.Mtim.Nsec != 7 || st.Nlink != 2 {
		t.Errorf("4095-byte file: mode %#o size %d mtime %v nlink %d", st.Mode, st.Size, st.Mtim, st.Nlink)
	}
	buf := make([]byte, 64)
	proc := "/proc/self/fd/" + strconv.Itoa(fd) + "/" + base(f)
	if n, err := unix.Lgetxattr(proc, "user.deep", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("4095-byte file's xattr: %q, %v", buf[:max(n, 0)], err)
	}
	if _, err := unix.Lgetxattr(proc, "user.gone", buf); err != unix.ENODATA {
		t.Errorf("removed xattr: %v, want ENODATA", err)
	}
	// The exchange put the link at l and the symlink at g.
	if st := lstat(l); st.Mode&unix.S_IFMT != unix.S_IFREG || st.Ino != lstat(f).Ino {
		t.Errorf("4094-byte path after the exchange: mode %#o", st.Mode)
	}
	if n, err := unix.Readlinkat(fd, base(g), buf); err != nil || string(buf[:n]) != "some/target" {
		t.Errorf("symlink at 4092 bytes: %q, %v", buf[:max(n, 0)], err)
	}
	if st := lstat(p); st.Mode != unix.S_IFIFO|0o640 {
		t.Errorf("fifo at 4091 bytes: mode %#o", st.Mode)
	}
	if st := lstat(d); st.Mode != unix.S_IFDIR|0o700 {
		t.Errorf("directory at 4096 bytes: mode %#o", st.Mode)
	}

	applyAll(t, r,
		&wire.Unlink{Path: f, DirMtime: omit},
		&wire.Unlink{Path: l, DirMtime: omit},
		&wire.Unlink{Path: g, DirMtime: omit},
		&wire.Unlink{Path: p, DirMtime: omit},
		&wire.Rmdir{Path: d, DirMtime: omit},
	)
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	df := os.NewFile(uintptr(dfd), "deep")
	names, err := df.Readdirnames(-1)
	df.Close()
	if err != nil || len(names) != 0 {
		t.Errorf("deep directory after removals: %d names, %v", len(names), err)
	}
}

func childOf(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// openChain opens the directory rel below root one component at a time
// and closes it when the test ends.
func openChain(t *testing.T, root, rel string) int {
	t.Helper()
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range strings.Split(rel, "/") {
		nfd, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = nfd
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}
