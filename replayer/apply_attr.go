package replayer

import (
	"fmt"
	"math"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Setattr: chown, chmod, truncate, utimens.

func (r *Replayer) applySetattr(o *wire.Setattr) error {
	var (
		t   target
		d   dir // the parent, when by path
		fd  = -1
		err error
	)
	if o.Handle != 0 {
		// By handle the file may have been renamed or unlinked since:
		// the path means nothing (wire.Setattr says so).
		if fd, err = r.handle(o.Handle); err != nil {
			return err
		}
		t = fdTarget(fd)
	} else {
		var name string
		if d, name, err = r.lookup(o.Path, true); err != nil {
			return err
		}
		defer d.close()
		t = target{fd: d.fd, name: name}
	}

	// A refused mode must be refused before the owner changes.
	if o.Valid&wire.SetMode != 0 {
		if err := r.checkSetattrMode(t, o.Mode); err != nil {
			return err
		}
	}
	// Owner, then mode (chown clears setuid/setgid), then size, then
	// times (every change before moves the ctime, truncate the mtime).
	if o.Valid&(wire.SetUid|wire.SetGid) != 0 {
		uid, gid := -1, -1
		if o.Valid&wire.SetUid != 0 {
			uid = int(o.Uid)
		}
		if o.Valid&wire.SetGid != 0 {
			gid = int(o.Gid)
		}
		if err := r.setOwner(t, uid, gid); err != nil {
			return err
		}
	}
	if o.Valid&wire.SetMode != 0 {
		if err := setMode(t, o.Mode); err != nil {
			return err
		}
	}
	if o.Valid&wire.SetSize != 0 {
		if err := truncate(t, fd, d, o.Size); err != nil {
			return err
		}
	}
	atime := wire.Time{Omit: true}
	if o.Valid&wire.SetAtime != 0 {
		atime = o.Atime
	}
	return setTimes(t, atime, o.Mtime)
}

// truncate sets the size of a regular file: through fd when it is a
// handle (>= 0), else by opening t's name without following it.
func truncate(t target, fd int, d dir, size uint64) error {
	if size > math.MaxInt64 {
		return fmt.Errorf("%w: size %d out of range", wire.ErrRefused, size)
	}
	if fd < 0 {
		if t.name == "" {
			return fmt.Errorf("%w: truncate of the root directory", wire.ErrRefused)
		}
		var err error
		if fd, err = openRegular(d, t.name, unix.O_WRONLY); err != nil {
			return err
		}
		defer unix.Close(fd)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return fmt.Errorf("truncate to %d: %w", size, err)
	}
	return nil
}
