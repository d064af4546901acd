package replayer

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Ops on file contents: Open, Release, Write, Fallocate.

func (r *Replayer) applyOpen(o *wire.Open) error {
	d, name, err := r.lookup(o.Path, false)
	if err != nil {
		return err
	}
	defer d.close()
	flags := unix.O_WRONLY
	if o.Flags&wireOTrunc != 0 {
		flags |= unix.O_TRUNC
	}
	fd, err := openRegular(d, name, flags)
	if err != nil {
		return err
	}
	// O_TRUNC moved the mtime; without it, Mtime is still the master's.
	if err := setMtime(fdTarget(fd), o.Mtime); err != nil {
		unix.Close(fd)
		return err
	}
	if o.Handle == 0 {
		if err := unix.Close(fd); err != nil {
			return fmt.Errorf("close: %w", err)
		}
		return nil
	}
	r.keep(o.Handle, fd)
	return nil
}

// forceApplyOpen opens, or makes, the file of an Open under a handle that
// met a tree that still differs, in tolerant mode (forceHandleOp), so that
// the handle exists for the writes that follow.
func (r *Replayer) forceApplyOpen(o *wire.Open) error {
	fd, err := r.forceOpen(o.Path, o.Flags&wireOTrunc != 0)
	if err != nil {
		return err
	}
	if err := setMtime(fdTarget(fd), o.Mtime); err != nil {
		unix.Close(fd)
		return err
	}
	r.keep(o.Handle, fd)
	r.notifyOpen(o.Handle)
	return nil
}

func (r *Replayer) applyRelease(o *wire.Release) error {
	return r.release(o.Handle)
}

func (r *Replayer) applyWrite(o *wire.Write) error {
	fd, err := r.handle(o.Handle)
	if err != nil {
		return err
	}
	if err := pwriteAll(fd, o.Data, o.Off); err != nil {
		return fmt.Errorf("write %d bytes at %d: %w", len(o.Data), o.Off, err)
	}
	return setMtime(fdTarget(fd), o.Mtime)
}

// maxWriteTries bounds the system calls one Write may take: a regular file
// returns short counts only near ENOSPC or on signals, and then not often.
const maxWriteTries = 64

// pwriteAll writes all of b at off, looping on short writes and EINTR.
func pwriteAll(fd int, b []byte, off int64) error {
	for range maxWriteTries {
		if len(b) == 0 {
			return nil
		}
		n, err := unix.Pwrite(fd, b, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
		off += int64(n)
	}
	if len(b) == 0 {
		return nil
	}
	return io.ErrShortWrite
}

// Fallocate modes the slave applies. Anything else (collapse/insert range,
// unshare, no-hide-stale, write-zeroes) is refused: the master does not
// send them, and some rewrite the file in ways a replica must not guess.
const (
	fallocKeepSize  = unix.FALLOC_FL_KEEP_SIZE
	fallocPunchHole = unix.FALLOC_FL_PUNCH_HOLE
	fallocZeroRange = unix.FALLOC_FL_ZERO_RANGE
)

func fallocateAllowed(mode uint32) bool {
	switch mode {
	case 0, fallocKeepSize, fallocPunchHole | fallocKeepSize, fallocZeroRange, fallocZeroRange | fallocKeepSize:
		return true
	}
	return false
}

func (r *Replayer) applyFallocate(o *wire.Fallocate) error {
	if !fallocateAllowed(o.Mode) {
		return fmt.Errorf("%w: fallocate mode %#x", wire.ErrRefused, o.Mode)
	}
	fd, err := r.handle(o.Handle)
	if err != nil {
		return err
	}
	if err := unix.Fallocate(fd, o.Mode, o.Off, o.Len); err != nil {
		return fmt.Errorf("fallocate mode %#x at %d len %d: %w", o.Mode, o.Off, o.Len, err)
	}
	return setMtime(fdTarget(fd), o.Mtime)
}
