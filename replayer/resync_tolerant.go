package replayer

import (
	"errors"
	"fmt"

	"github.com/tdfs/tdfs/wire"
)

// Tolerant mode: what an op that fails is skipped for (tolerate, called
// by the path every op takes, applyOp in replayer.go).
//
// While a repairing pass runs (wire.ResyncBegin of a rebase, check or
// repair pass), and from an Unclean op (the master's previous run crashed)
// until such a pass ends, the slave's tree is of unknown state: the master keeps streaming ops, and an op may meet a tree
// that still differs where it acts (a parent not created yet, a file where
// the master has a directory). Such an op is skipped: the pass describes
// everything it touched at a later position and repairs it there. An
// error that says the slave itself is broken (EIO, ENOSPC, EROFS, EDQUOT, a
// confinement refusal) still fails, tolerant or not.

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

// tolerate decides what tolerant mode skips of an op that failed with
// err: a refusal by the slave's policy or bounds (checkOp, or one that
// needed the target first, a set-id chmod), whose target the running pass
// leaves out; and a failure because the tree still differs where op acts,
// after forcing an Open or Create under a handle (forceHandleOp). It
// returns err for every other failure, and always when not tolerant.
func (r *Replayer) tolerate(op wire.Op, err error) error {
	if !r.tolerant {
		return err
	}
	switch {
	case leftOut(err):
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

// forceHandleOp forces an Open or Create under a handle (see SetTolerant),
// so that the handle exists for the writes that follow. It reports whether
// op was one.
func (r *Replayer) forceHandleOp(op wire.Op) (bool, error) {
	switch o := op.(type) {
	case *wire.Create:
		if o.Handle != 0 {
			return true, r.forceApplyCreate(o)
		}
	case *wire.Open:
		if o.Handle != 0 {
			return true, r.forceApplyOpen(o)
		}
	}
	return false, nil
}
