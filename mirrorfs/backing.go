package mirrorfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// Reaching the backing dir.
//
// Mount opens the backing dir once (mirror.rootFd) and every access after
// that is an *at(2) call relative to that descriptor, or to a directory
// opened through it, never a path that starts with the backing dir's own
// path: that path does not count towards PATH_MAX, so a path of up to
// wire.MaxPathLen bytes below the mount root works however deep the
// backing dir itself lies, as it would on a local filesystem.
//
// A relative path of at most maxDirect bytes is handed to the call as is,
// relative to rootFd. A longer one is split: its parent directory is
// opened (openat2, never following a symlink, never leaving the backing
// dir, in pieces if its path is longer than maxDirect too: openLong) and
// the call names the final component relative to that. The
// kernel resolves the components of a short path itself, following a
// symlink in an intermediate component as a path-based call would; a FUSE
// path has none (the kernel resolves symlinks on the mount before it asks).
//
// Extended attributes have no *at(2) call before Linux 6.13: they are
// reached as /proc/self/fd/<dirfd>/<name> with the l*xattr calls (the
// magic link resolves the directory by its descriptor, and the final name
// is not followed), which maxDirect keeps under PATH_MAX.

// maxDirect is the longest relative path given to an *at(2) call as is.
// It leaves room under PATH_MAX (4096 bytes with the NUL) for the
// "/proc/self/fd/<n>/" prefix of procPath.
const maxDirect = 4000

// maxResolveTries bounds the retries of openat2 on EAGAIN (a concurrent
// rename raced its lookup).
const maxResolveTries = 8

// openRoot opens the backing dir for Mount: an O_PATH descriptor, which
// every *at(2) call accepts and which needs no read permission. The
// backing dir itself may be reached through symlinks.
func openRoot(backing string) (int, syscall.Stat_t, error) {
	fd, err := unix.Open(backing, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, syscall.Stat_t{}, err
	}
	st, err := fstat(fd)
	if err != nil {
		unix.Close(fd)
		return -1, st, err
	}
	return fd, st, nil
}

// closeRoot closes the backing dir's descriptor once no request can use
// it any more (the FUSE server has stopped serving). reopenRoot fails
// afterwards.
func (m *mirror) closeRoot() {
	m.rootMu.Lock()
	defer m.rootMu.Unlock()
	if !m.rootClosed {
		m.rootClosed = true
		unix.Close(m.rootFd)
	}
}

// reopenRoot opens the backing dir anew with flags (O_DIRECTORY and
// O_CLOEXEC are added), for a resync pass, which needs a descriptor of its
// own that is not O_PATH.
func (m *mirror) reopenRoot(flags int) (int, error) {
	m.rootMu.RLock()
	defer m.rootMu.RUnlock()
	if m.rootClosed {
		return -1, fmt.Errorf("backing dir %q: the mount has ended: %w", m.backing, os.ErrClosed)
	}
	for {
		fd, err := unix.Openat(m.rootFd, ".", flags|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		return fd, err
	}
}

// at names a backing path for an *at(2) call: name relative to the
// directory fd. name is "." for the backing dir itself.
type at struct {
	fd    int
	name  string
	rel   string // the path relative to the mount root, for messages
	owned bool   // fd was opened for this path: close closes it
}

// close releases the directory opened for a long path.
func (a at) close() {
	if a.owned {
		unix.Close(a.fd)
	}
}

// resolve returns where the backing path rel (relative to the mount root,
// "" for the root) is found: rel itself relative to rootFd when it is
// short enough, otherwise its final component relative to its parent
// directory, opened here. The caller closes the result.
func (m *mirror) resolve(rel string) (at, error) {
	switch {
	case rel == "":
		return at{fd: m.rootFd, name: ".", rel: rel}, nil
	case len(rel) <= maxDirect:
		return at{fd: m.rootFd, name: rel, rel: rel}, nil
	}
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		// One component longer than any filesystem takes.
		return at{}, fmt.Errorf("path %q: %w", rel, syscall.ENAMETOOLONG)
	}
	d, err := m.openDir(rel[:i])
	if err != nil {
		return at{}, err
	}
	d.name, d.rel = rel[i+1:], rel
	return d, nil
}

// openDir opens the backing directory rel (O_PATH) without following a
// symlink in any component and without leaving the backing dir. The
// result's name is "."; for rel "" it is rootFd itself (not owned).
func (m *mirror) openDir(rel string) (at, error) {
	if rel == "" {
		return at{fd: m.rootFd, name: ".", rel: rel}, nil
	}
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := openLong(m.rootFd, rel, &how)
	if err != nil {
		return at{}, fmt.Errorf("open directory %q: %w", rel, err)
	}
	return at{fd: fd, name: ".", rel: rel, owned: true}, nil
}

// openLong opens rel below dirfd with openat2(2) as how says. A path
// longer than maxDirect (an *at(2) call takes less than PATH_MAX) is
// opened piece by piece: the directories that lead to its last piece are
// opened O_PATH, resolved as how says.
func openLong(dirfd int, rel string, how *unix.OpenHow) (int, error) {
	fd := dirfd
	closeFd := func() {
		if fd != dirfd {
			unix.Close(fd)
		}
	}
	for len(rel) > maxDirect {
		i := strings.LastIndexByte(rel[:maxDirect+1], '/')
		if i <= 0 {
			closeFd()
			return -1, syscall.ENAMETOOLONG
		}
		dhow := unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: how.Resolve}
		nfd, err := openat2Retry(fd, rel[:i], &dhow)
		closeFd()
		if err != nil {
			return -1, err
		}
		fd, rel = nfd, rel[i+1:]
	}
	nfd, err := openat2Retry(fd, rel, how)
	closeFd()
	return nfd, err
}

// openat2Retry is openat2(2), retried on EAGAIN and EINTR.
func openat2Retry(dirfd int, path string, how *unix.OpenHow) (int, error) {
	var err error
	for range maxResolveTries {
		var fd int
		fd, err = unix.Openat2(dirfd, path, how)
		if err == nil {
			return fd, nil
		}
		if err != unix.EAGAIN && err != unix.EINTR {
			return -1, err
		}
	}
	return -1, err
}

// lstat returns the attributes of the backing path rel, not following a
// final symlink.
func (m *mirror) lstat(rel string) (syscall.Stat_t, error) {
	a, err := m.resolve(rel)
	if err != nil {
		return syscall.Stat_t{}, fmt.Errorf("lstat %q: %w", rel, err)
	}
	defer a.close()
	return a.lstat()
}

// lstat returns the attributes of a, not following a final symlink.
func (a at) lstat() (syscall.Stat_t, error) {
	st, _, err := statAt(a.fd, a.name, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return st, fmt.Errorf("lstat %q: %w", a.rel, err)
	}
	return st, nil
}

// procPath names a by a path for the calls that have no *at(2) form
// (l*xattr, truncate): the directory through its /proc/self/fd magic link,
// then the name. It is shorter than PATH_MAX (maxDirect).
func (a at) procPath() string {
	return "/proc/self/fd/" + strconv.Itoa(a.fd) + "/" + a.name
}

// statAt is fstatat(2) through statx(2), which also reports the birth
// time (btime is zero when the filesystem does not know it).
func statAt(dirfd int, name string, flags int) (st syscall.Stat_t, btime syscall.Timespec, err error) {
	var x unix.Statx_t
	if err := unix.Statx(dirfd, name, flags, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x); err != nil {
		return st, btime, err
	}
	setNum(&st.Dev, unix.Mkdev(x.Dev_major, x.Dev_minor))
	setNum(&st.Ino, x.Ino)
	setNum(&st.Nlink, uint64(x.Nlink))
	st.Mode = uint32(x.Mode)
	st.Uid, st.Gid = x.Uid, x.Gid
	setNum(&st.Rdev, unix.Mkdev(x.Rdev_major, x.Rdev_minor))
	setNum(&st.Size, x.Size)
	setNum(&st.Blksize, uint64(x.Blksize))
	setNum(&st.Blocks, x.Blocks)
	st.Atim, st.Mtim, st.Ctim = timespecOf(x.Atime), timespecOf(x.Mtime), timespecOf(x.Ctime)
	if x.Mask&unix.STATX_BTIME != 0 {
		btime = timespecOf(x.Btime)
	}
	return st, btime, nil
}

// setNum stores v in *dst, whose width depends on the architecture.
func setNum[T ~int32 | ~int64 | ~uint32 | ~uint64](dst *T, v uint64) { *dst = T(v) }

func timespecOf(t unix.StatxTimestamp) syscall.Timespec {
	var ts syscall.Timespec
	setNum(&ts.Sec, uint64(t.Sec))
	setNum(&ts.Nsec, uint64(t.Nsec))
	return ts
}

// stableAttr is the identity go-fuse's loopback gives the node of st
// (LoopbackRoot.idFromStat, unexported): the file type, the generation, and the
// backing inode number with the device number mixed in, except the
// backing dir's own device, so a tree on one filesystem keeps its inode
// numbers.
func stableAttr(rootDev uint64, st *syscall.Stat_t, gen uint64) fs.StableAttr {
	swapped := (uint64(st.Dev) << 32) | (uint64(st.Dev) >> 32)
	swappedRootDev := (rootDev << 32) | (rootDev >> 32)
	return fs.StableAttr{
		Mode: uint32(st.Mode),
		Gen:  gen,
		Ino:  (swapped ^ swappedRootDev) ^ st.Ino,
	}
}

// genFromBtime is the generation go-fuse's loopback derives from a birth
// time: 1 when it is unknown.
func genFromBtime(btime syscall.Timespec) uint64 {
	if btime.Sec == 0 && btime.Nsec == 0 {
		return 1
	}
	return uint64(btime.Sec)*1e9 + uint64(btime.Nsec)
}
