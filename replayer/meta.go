package replayer

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Owners, modes and times, applied the same way whatever names the object:
// an fd (a handle, or the root), or a final name in a directory.

// target is what an attribute change applies to: name in the directory fd,
// never following name, or the fd itself when name is "". The *at system
// calls take AT_EMPTY_PATH for the latter, which works on O_PATH fds too
// (verified on Linux 6.18 for utimensat, fchownat and fchmodat2), so the
// root and every parent directory need no second, readable fd.
type target struct {
	fd   int
	name string
}

func (t target) flags() int {
	if t.name == "" {
		return unix.AT_EMPTY_PATH
	}
	return unix.AT_SYMLINK_NOFOLLOW
}

// fdTarget names an open file.
func fdTarget(fd int) target { return target{fd: fd} }

// setOwner applies uid and gid (-1: leave that one) when the replayer
// applies owners; otherwise it warns once that owners are being dropped.
func (r *Replayer) setOwner(t target, uid, gid int) error {
	if uid < 0 && gid < 0 {
		return nil
	}
	if !r.chown {
		if !r.warned && ((uid >= 0 && uid != r.euid) || (gid >= 0 && gid != r.egid)) {
			r.warned = true
			r.log.Warn("replayer: not applying owners (run the slave as root to keep them); files keep the slave's uid/gid",
				"root", r.root, "uid", uid, "gid", gid)
		}
		return nil
	}
	if err := unix.Fchownat(t.fd, t.name, uid, gid, t.flags()); err != nil {
		return fmt.Errorf("chown %d:%d: %w", uid, gid, err)
	}
	return nil
}

// owner converts an op's owner to setOwner's arguments.
func owner(uid, gid uint32) (int, int) { return int(uid), int(gid) }

// setMode sets the permission bits exactly (umask plays no part). chown
// clears setuid/setgid, so callers chmod after chown. fchmodat2 with
// AT_SYMLINK_NOFOLLOW fails with EOPNOTSUPP on a symlink, which has no mode
// on Linux: that is success, but only for a symlink, since x/sys also
// returns EOPNOTSUPP when fchmodat2 is missing.
func setMode(t target, mode uint32) error {
	err := unix.Fchmodat(t.fd, t.name, mode&0o7777, t.flags())
	if errors.Is(err, unix.EOPNOTSUPP) && t.name != "" {
		var st unix.Stat_t
		if serr := unix.Fstatat(t.fd, t.name, &st, unix.AT_SYMLINK_NOFOLLOW); serr == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("chmod %#o: %w", mode&0o7777, err)
	}
	return nil
}

// setTimes sets atime and mtime, each left alone when Omit. It is called
// after every other change to the object, because those move its mtime.
func setTimes(t target, atime, mtime wire.Time) error {
	if atime.Omit && mtime.Omit {
		return nil
	}
	a, err := timespec(atime)
	if err != nil {
		return err
	}
	m, err := timespec(mtime)
	if err != nil {
		return err
	}
	if err := unix.UtimesNanoAt(t.fd, t.name, []unix.Timespec{a, m}, t.flags()); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// setMtime sets the mtime alone.
func setMtime(t target, mtime wire.Time) error {
	return setTimes(t, wire.Time{Omit: true}, mtime)
}

func timespec(t wire.Time) (unix.Timespec, error) {
	if t.Omit {
		return unix.Timespec{Nsec: unix.UTIME_OMIT}, nil
	}
	if t.Nsec >= 1e9 {
		return unix.Timespec{}, fmt.Errorf("%w: nanoseconds %d out of range", wire.ErrRefused, t.Nsec)
	}
	// TimeToTimespec fails rather than wrapping where time_t is 32 bits.
	ts, err := unix.TimeToTimespec(time.Unix(t.Sec, int64(t.Nsec)))
	if err != nil {
		return unix.Timespec{}, fmt.Errorf("time %d.%09d: %w", t.Sec, t.Nsec, err)
	}
	return ts, nil
}

// setAttrs applies an owner, a mode and an mtime in the one order that
// leaves all three as given, then the parent directory's mtime.
func (r *Replayer) setAttrs(t target, uid, gid uint32, mode uint32, mtime wire.Time) error {
	u, g := owner(uid, gid)
	if err := r.setOwner(t, u, g); err != nil {
		return err
	}
	if err := setMode(t, mode); err != nil {
		return err
	}
	return setMtime(t, mtime)
}

// setDirMtime sets the mtime of a parent directory, last, because creating
// and removing entries moves it.
func setDirMtime(d dir, mtime wire.Time) error {
	if err := setMtime(fdTarget(d.fd), mtime); err != nil {
		return fmt.Errorf("parent directory: %w", err)
	}
	return nil
}
