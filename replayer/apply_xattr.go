package replayer

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Setxattr and Removexattr, on the final name without following it.
// x/sys has no setxattrat(2) wrapper (and the system call needs Linux
// 6.13), so regular files and directories are opened O_NOFOLLOW and changed
// through the fd; fsetxattr rejects the O_PATH fds the other types would
// need, so those (symlinks, fifos, sockets) go through
// /proc/self/fd/<parent>/<name> with the l* calls, in which the magic link
// is only an intermediate component and the final name is not followed.

func (r *Replayer) applySetxattr(o *wire.Setxattr) error {
	switch o.Flags {
	case 0, wire.XattrCreate, wire.XattrReplace:
	default:
		return fmt.Errorf("%w: setxattr flags %#x", wire.ErrRefused, o.Flags)
	}
	// The master's XATTR_CREATE / XATTR_REPLACE succeeded there; on a
	// prefix-consistent replica plain set has the same effect, and it keeps
	// a replayed op idempotent.
	const flags = 0
	return r.withXattrTarget(o.Path,
		func(fd int) error { return unix.Fsetxattr(fd, o.Name, o.Value, flags) },
		func(p string) error { return unix.Lsetxattr(p, o.Name, o.Value, flags) })
}

func (r *Replayer) applyRemovexattr(o *wire.Removexattr) error {
	err := r.withXattrTarget(o.Path,
		func(fd int) error { return unix.Fremovexattr(fd, o.Name) },
		func(p string) error { return unix.Lremovexattr(p, o.Name) })
	// A missing attribute is what the op asked for (a replay).
	if errors.Is(err, unix.ENODATA) {
		return nil
	}
	return err
}

// withXattrTarget calls byFd with an fd open on p, or byPath with a path
// naming p that does not follow its final component.
func (r *Replayer) withXattrTarget(p string, byFd func(fd int) error, byPath func(p string) error) error {
	d, name, err := r.lookup(p, true)
	if err != nil {
		return err
	}
	defer d.close()
	if name == "" {
		// The root: syncFd is a readable fd on it (Apply holds mu, so
		// Close cannot close it under us).
		return byFd(r.syncFd)
	}
	st, err := lstatAt(d, name)
	if err != nil {
		return err
	}
	typ := st.Mode & unix.S_IFMT
	switch typ {
	case unix.S_IFREG, unix.S_IFDIR:
		flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
		if typ == unix.S_IFDIR {
			flags |= unix.O_DIRECTORY
		}
		fd, err := unix.Openat(d.fd, name, flags, 0)
		if err != nil {
			return refuseSymlink(err)
		}
		defer unix.Close(fd)
		var fst unix.Stat_t
		if err := unix.Fstat(fd, &fst); err != nil {
			return fmt.Errorf("fstat: %w", err)
		}
		if fst.Mode&unix.S_IFMT != typ {
			return fmt.Errorf("%w: %s changed type while opening", wire.ErrRefused, name)
		}
		return byFd(fd)
	default:
		return byPath(fmt.Sprintf("/proc/self/fd/%d/%s", d.fd, name))
	}
}
