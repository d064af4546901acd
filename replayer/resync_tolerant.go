package replayer

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Tolerant mode, and the path every op takes through Apply and Reapply.
//
// While a repairing pass runs (wire.ResyncBegin of a rebase, check or
// repair pass), and from an Unclean op (the master's previous run crashed)
// until such a pass ends, the slave's tree is of unknown state: the master keeps streaming ops, and an op may meet a tree
// that still differs where it acts (a parent not created yet, a file where
// the master has a directory). Such an op is skipped: the pass describes
// everything it touched at a later position and repairs it there. An
// error that says the slave itself is broken (EIO, ENOSPC, EROFS, EDQUOT, a
// confinement refusal) still fails, tolerant or not.

// wrongTypeError is a refusal because a name has a type the op cannot act
// on (Open of a directory, Create over a fifo). On a replica in sync it
// means the master sent nonsense; on one being resynchronised it means the
// trees still differ there.
type wrongTypeError struct{ msg string }

func wrongType(format string, args ...any) error {
	return &wrongTypeError{msg: fmt.Sprintf(format, args...)}
}

func (e *wrongTypeError) Error() string { return wire.ErrRefused.Error() + ": " + e.msg }

// Is makes a wrong type a refusal for errors.Is, as it always was.
func (e *wrongTypeError) Is(target error) bool { return target == wire.ErrRefused }

// SetTolerant turns tolerant mode on or off. While on, Apply returns nil
// for an op that fails because the slave's tree differs from the master's
// (ClassDiverged: ENOENT, EEXIST, ENOTDIR, EISDIR, ENOTEMPTY, ENODATA,
// ErrUnknownHandle, a name of the wrong type, a symlink where the master
// has a directory...) and counts it in Skipped; and an Open or Create under a handle that fails so
// is forced: missing parent directories are made (mode 0700), a
// non-directory in the way of one is removed, a missing file is created
// (the pass sets attributes and contents later), so that the handle exists
// for the writes that follow. The ResyncBegin of a pass that repairs
// (rebase, check, repair) and an Unclean op turn it on, the ResyncEnd of
// such a pass off.
func (r *Replayer) SetTolerant(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tolerant = on
}

// Skipped reports how many ops tolerant mode skipped or forced since the
// Replayer was made. It may be called at any time from any goroutine.
func (r *Replayer) Skipped() uint64 { return r.skipped.Load() }

// applyOp applies op (again: as Reapply does), with the handle
// bookkeeping and tolerant mode around it. r.mu is held.
func (r *Replayer) applyOp(op wire.Op, again bool) error {
	// First: what the slave refuses whatever its tree holds (policy.go).
	// Nothing changes; the writes through a handle it would have opened
	// change nothing either (the file is left out of this replica, and a
	// pass reports it). Tolerant mode skips it like a difference: the
	// running pass describes what it touched again, and leaves it out.
	if err := r.checkOp(op); err != nil {
		if h := openedHandle(op); h != 0 {
			// An id still open belongs to a file the master released
			// (keep).
			if _, open := r.handles[h]; open {
				_ = r.release(h)
			}
			r.gone[h] = struct{}{}
		}
		if !r.tolerant || !leftOut(err) {
			return err
		}
		r.skipped.Add(1)
		r.log.Debug("replayer: tolerant: op refused by this slave's policy", "op", describe(op), "err", err)
		return nil
	}
	if r.goneHandleOp(op) {
		return nil
	}
	if r.tolerant {
		if err := r.suspectTarget(op); err != nil {
			return fmt.Errorf("record the file as suspect: %w", err)
		}
	}
	var err error
	if again {
		err = r.reapply(op)
	} else {
		err = r.apply(op)
	}
	if err == nil {
		r.noteHandle(op)
		return nil
	}
	if !r.tolerant {
		return err
	}
	switch {
	case leftOut(err):
		// A refusal that needed the target first (a set-id chmod):
		// skipped as in checkOp above.
		r.skipped.Add(1)
		r.log.Debug("replayer: tolerant: op refused by this slave's policy", "op", describe(op), "err", err)
		return nil
	case !treeDiffers(err):
		return err
	}
	if forced, ferr := r.forceHandleOp(op); forced {
		if ferr != nil && !treeDiffers(ferr) {
			return fmt.Errorf("%w (forcing it after: %w)", ferr, err)
		}
		err = errors.Join(err, ferr)
	}
	r.skipped.Add(1)
	r.log.Debug("replayer: tolerant: op meets a tree that still differs", "op", describe(op), "err", err)
	return nil
}

// leftOut reports whether err refuses an op by the slave's own policy or
// bounds: what it touches is left out of the replica.
func leftOut(err error) bool { return errors.Is(err, ErrPolicy) || errors.Is(err, wire.ErrLimit) }

// treeDiffers reports whether err, returned by op, means the slave's tree
// differs from the master's where op acts, rather than that the slave is
// broken or the op is forbidden (classify.go).
func treeDiffers(err error) bool { return Classify(err) == ClassDiverged }

// forceHandleOp forces an Open or Create under a handle (see SetTolerant).
// It reports whether op was one.
func (r *Replayer) forceHandleOp(op wire.Op) (bool, error) {
	switch o := op.(type) {
	case *wire.Create:
		if o.Handle == 0 {
			return false, nil
		}
		fd, err := r.forceOpen(o.Path, o.Flags&(wireOExcl|wireOTrunc) != 0)
		if err != nil {
			return true, err
		}
		if err := r.setAttrs(fdTarget(fd), o.Uid, o.Gid, o.Mode, o.Mtime); err != nil {
			unix.Close(fd)
			return true, err
		}
		r.keep(o.Handle, fd)
		r.notifyOpen(o.Handle)
		return true, nil
	case *wire.Open:
		if o.Handle == 0 {
			return false, nil
		}
		fd, err := r.forceOpen(o.Path, o.Flags&wireOTrunc != 0)
		if err != nil {
			return true, err
		}
		if err := setMtime(fdTarget(fd), o.Mtime); err != nil {
			unix.Close(fd)
			return true, err
		}
		r.keep(o.Handle, fd)
		r.notifyOpen(o.Handle)
		return true, nil
	}
	return false, nil
}

// handleOf returns the handle a data op writes through (0 if none), and
// whether op releases it.
func handleOf(op wire.Op) (h uint64, release bool) {
	switch o := op.(type) {
	case *wire.Write:
		return o.Handle, false
	case *wire.Fallocate:
		return o.Handle, false
	case *wire.CopyRange:
		return o.Handle, false // the destination: a nameless source is an error
	case *wire.Setattr:
		return o.Handle, false
	case *wire.Release:
		return o.Handle, true
	}
	return 0, false
}

// openedHandle returns the handle op opens (Create or Open under a
// handle), 0 if none.
func openedHandle(op wire.Op) uint64 {
	switch o := op.(type) {
	case *wire.Create:
		return o.Handle
	case *wire.Open:
		return o.Handle
	}
	return 0
}

// goneHandleOp reports whether op goes through a handle whose file has no
// name (restored as gone, or left out of a rebase's ResyncHandles): then
// it succeeds and changes nothing, and a Release forgets the handle.
//
// That is exactly the master's effect as anyone can see it: the file was
// unlinked on the master while open (on the slave its inode went with the
// process that held it), nothing can ever name it again, and its blocks
// are freed at the last close. Writing its bytes somewhere would only
// cost space.
func (r *Replayer) goneHandleOp(op wire.Op) bool {
	h, release := handleOf(op)
	if h == 0 {
		return false
	}
	if _, gone := r.gone[h]; !gone {
		if _, open := r.handles[h]; open || !r.unlistedGone {
			return false
		}
	}
	if release {
		delete(r.gone, h)
		r.notifyReleased(h)
	}
	return true
}
