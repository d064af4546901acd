package replayer

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Ops that make a new object: Create, Mkdir, Mknod, Symlink.

// The master sends its open(2) flags as Linux numbers them on amd64 and
// arm64 (asm-generic); the slave reads only these two bits, by value, so it
// does not depend on its own architecture's numbering.
const (
	wireOExcl  = wire.OpenExcl
	wireOTrunc = wire.OpenTrunc
)

func (r *Replayer) applyCreate(o *wire.Create) error {
	d, name, err := r.lookup(o.Path, false)
	if err != nil {
		return err
	}
	defer d.close()
	// A name that exists must be a regular file: O_CREAT would open a
	// fifo or device in its place.
	if st, err := lstatAt(d, name); err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG {
		return wrongType("%s exists and is a %s", name, typeName(st.Mode))
	}
	// The master's O_EXCL guaranteed a new, empty file; O_TRUNC gives the
	// same result and keeps a replayed create idempotent. The master's
	// access mode and O_APPEND are not copied: writes carry offsets.
	flags := unix.O_CREAT | unix.O_WRONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	if o.Flags&(wireOExcl|wireOTrunc) != 0 {
		flags |= unix.O_TRUNC
	}
	fd, err := unix.Openat(d.fd, name, flags, o.Mode&0o777)
	if err != nil {
		return refuseSymlink(err)
	}
	if err := checkRegularFd(fd); err != nil {
		unix.Close(fd)
		return err
	}
	if err := r.setAttrs(fdTarget(fd), o.Uid, o.Gid, o.Mode, o.Mtime); err != nil {
		unix.Close(fd)
		return err
	}
	if o.Handle != 0 {
		r.keep(o.Handle, fd)
	} else if err := unix.Close(fd); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return setDirMtime(d, o.DirMtime)
}

// forceApplyCreate makes the file of a Create under a handle that met a
// tree that still differs, in tolerant mode (forceHandleOp): whatever is
// in the way goes, and the handle exists for the writes that follow.
func (r *Replayer) forceApplyCreate(o *wire.Create) error {
	fd, err := r.forceOpen(o.Path, o.Flags&(wireOExcl|wireOTrunc) != 0)
	if err != nil {
		return err
	}
	if err := r.setAttrs(fdTarget(fd), o.Uid, o.Gid, o.Mode, o.Mtime); err != nil {
		unix.Close(fd)
		return err
	}
	r.keep(o.Handle, fd)
	r.notifyOpen(o.Handle)
	return nil
}

func (r *Replayer) applyMkdir(o *wire.Mkdir) error {
	d, name, err := r.lookup(o.Path, false)
	if err != nil {
		return err
	}
	defer d.close()
	if err := unix.Mkdirat(d.fd, name, o.Mode&0o7777); err != nil {
		// An existing directory is what the op asked for (a replay).
		st, serr := lstatAt(d, name)
		if !errors.Is(err, unix.EEXIST) || serr != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return err
		}
	}
	if err := r.setAttrs(target{fd: d.fd, name: name}, o.Uid, o.Gid, o.Mode, o.Mtime); err != nil {
		return err
	}
	return setDirMtime(d, o.DirMtime)
}

func (r *Replayer) applyMknod(o *wire.Mknod) error {
	typ, err := r.mknodType(o.Mode)
	if err != nil {
		return err
	}
	d, name, err := r.lookup(o.Path, false)
	if err != nil {
		return err
	}
	defer d.close()
	// Rdev names the device of a device node; it is 0 for the others.
	var rdev uint64
	if typ == unix.S_IFCHR || typ == unix.S_IFBLK {
		rdev = o.Rdev
	}
	if err := unix.Mknodat(d.fd, name, typ|o.Mode&0o7777, int(rdev)); err != nil {
		st, serr := lstatAt(d, name)
		if !errors.Is(err, unix.EEXIST) || serr != nil || st.Mode&unix.S_IFMT != typ || st.Rdev != rdev {
			return err
		}
	}
	if err := r.setAttrs(target{fd: d.fd, name: name}, o.Uid, o.Gid, o.Mode, o.Mtime); err != nil {
		return err
	}
	return setDirMtime(d, o.DirMtime)
}

func (r *Replayer) applySymlink(o *wire.Symlink) error {
	d, name, err := r.lookup(o.Path, false)
	if err != nil {
		return err
	}
	defer d.close()
	// The target is opaque data, stored and never resolved.
	if err := unix.Symlinkat(o.Target, d.fd, name); err != nil {
		if !errors.Is(err, unix.EEXIST) || !symlinkIs(d, name, o.Target) {
			return err
		}
	}
	t := target{fd: d.fd, name: name}
	u, g := owner(o.Uid, o.Gid)
	if err := r.setOwner(t, u, g); err != nil {
		return err
	}
	if err := setMtime(t, o.Mtime); err != nil {
		return err
	}
	return setDirMtime(d, o.DirMtime)
}

// symlinkIs reports whether name in d is a symlink to target.
func symlinkIs(d dir, name, target string) bool {
	buf := make([]byte, wire.MaxPathLen+1)
	n, err := unix.Readlinkat(d.fd, name, buf)
	return err == nil && string(buf[:n]) == target
}
