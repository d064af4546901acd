package replayer

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// resolveHow resolves a directory beneath the root without ever leaving it:
// openat2(2) fails with EXDEV for "..", absolute paths and mount crossings,
// and with ELOOP for any symlink, including magic links in /proc.
var resolveHow = unix.OpenHow{
	Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
	Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
}

// maxResolveTries bounds the retries of openat2 on EAGAIN, which it returns
// when a concurrent rename races its lookup.
const maxResolveTries = 16

// dir is an open directory fd (O_PATH) that holds the final name of a path.
type dir struct {
	fd    int
	owned bool // false for the root fd, which outlives the op
}

func (d dir) close() {
	if d.owned {
		unix.Close(d.fd)
	}
}

// lookup resolves the parent directory of p beneath the root and returns
// it with p's final name. With rootOK, p may be "" (the root itself): then
// the name is "" and the dir is the root. The caller closes the dir.
func (r *Replayer) lookup(p string, rootOK bool) (dir, string, error) {
	// Paths were validated when the op was decoded; check again because an
	// op may also come from elsewhere, and confinement must not depend on it.
	if err := wire.CheckPath(p, rootOK); err != nil {
		return dir{}, "", fmt.Errorf("%w: %w", wire.ErrRefused, err)
	}
	if p == "" {
		return dir{fd: r.rootFd}, "", nil
	}
	parent, name := "", p
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		parent, name = p[:i], p[i+1:]
	}
	d, err := r.openDir(parent)
	return d, name, err
}

// openDir opens the directory rel beneath the root.
func (r *Replayer) openDir(rel string) (dir, error) {
	if rel == "" {
		return dir{fd: r.rootFd}, nil
	}
	for range maxResolveTries {
		how := resolveHow
		fd, err := unix.Openat2(r.rootFd, rel, &how)
		switch {
		case err == nil:
			return dir{fd: fd, owned: true}, nil
		case err == unix.EAGAIN || err == unix.EINTR:
			continue
		case err == unix.EXDEV || err == unix.ELOOP:
			return dir{}, fmt.Errorf("%w: %q leaves the root, passes through a symlink or crosses a mount: %w",
				wire.ErrRefused, rel, err)
		default:
			return dir{}, fmt.Errorf("resolve %q: %w", rel, err)
		}
	}
	return dir{}, fmt.Errorf("resolve %q: %w after %d tries", rel, unix.EAGAIN, maxResolveTries)
}

// refuseSymlink turns the ELOOP of an O_NOFOLLOW open of a final symlink
// into a refusal: the slave never writes through a symlink.
func refuseSymlink(err error) error {
	if errors.Is(err, unix.ELOOP) {
		return fmt.Errorf("%w: final component is a symlink, not followed: %w", wire.ErrRefused, err)
	}
	return err
}

// lstatAt stats name in d without following it.
func lstatAt(d dir, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

// typeName names the file type in mode, for messages.
func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("file type %#o", mode&unix.S_IFMT)
}

// openRegular opens the existing regular file name in d with flags (plus
// O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC) and refuses anything else. The type is
// checked before opening, because opening a device or fifo has side
// effects, and again on the fd, which is what the caller acts on.
func openRegular(d dir, name string, flags int) (int, error) {
	st, err := lstatAt(d, name)
	if err != nil {
		return -1, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return -1, wrongType("%s is not a regular file", typeName(st.Mode))
	}
	fd, err := unix.Openat(d.fd, name, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, refuseSymlink(err)
	}
	if err := checkRegularFd(fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// checkRegularFd refuses an fd that is not a regular file.
func checkRegularFd(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return wrongType("%s is not a regular file", typeName(st.Mode))
	}
	return nil
}
