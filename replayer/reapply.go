package replayer

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Re-applying the op a dead process may have left half done.
//
// A slave killed with SIGKILL loses nothing it wrote: the page cache
// outlives the process. Its tree holds exactly ops 1..K (the last one its
// progress log records as applied) plus possibly part of op K+1. Resuming
// at K+1 therefore needs an op that, applied over any prefix of its own
// effects, ends where applying it once would have. Every op applies its
// changes in a fixed order (the object, then its attributes, then the
// parent's mtime) and each step sets absolute values, so re-running the
// steps is harmless provided the first one is. Per op:
//
//   - Create: the master's O_EXCL is applied as O_TRUNC (apply_create.go),
//     so an existing file from the first attempt is opened, emptied (no
//     later op has written to it yet) and given its attributes.
//   - Mkdir, Mknod, Symlink: an existing entry of the same kind (and, for
//     a symlink, target) is what the op makes; its attributes are set.
//   - Link: NewPath already the same inode as OldPath is success.
//   - Unlink, Rmdir: a missing name is success.
//   - Rename (no flags, or RENAME_NOREPLACE): rename is atomic, and the
//     master's rename succeeded, so OldPath existed before it; OldPath
//     missing means the first attempt renamed it: only the directory
//     mtimes are set. OldPath present means it did not (rename of a name
//     onto itself or onto another link of its inode leaves both, and
//     doing it again is as harmless).
//   - Rename with RENAME_EXCHANGE: both names exist before and after, so
//     the tree cannot say whether the first attempt swapped them.
//     Reapply refuses with ErrUncertain rather than guess (swapping twice
//     undoes the op; not swapping loses it); the caller resynchronises.
//   - Open (with or without O_TRUNC): opening again is harmless, and an
//     O_TRUNC empties a file no later op has written to yet.
//   - Release of an unknown handle: the dead process closed it.
//   - Write, Fallocate, Setattr, Setxattr, Removexattr, Sync, RunStart:
//     they set absolute contents and values and are naturally idempotent.
//   - CopyRange: it sets the destination range to the source's bytes, and
//     the source range is unchanged by it (ranges within one file never
//     overlap), so copying again gives the same bytes.

// ErrUncertain is wrapped by Reapply's error for an op whose partial
// application cannot be told from none (RENAME_EXCHANGE): the caller must
// resynchronise rather than resume.
var ErrUncertain = errors.New("replayer: cannot tell whether the op was applied")

// Reapply applies op, which a process that died may already have applied
// fully or in part, so that the result equals applying it once. Calls
// follow the rules of Apply. Only the first op after the last one known
// applied may be partial: the ops after it must go through Apply.
func (r *Replayer) Reapply(op wire.Op) error {
	if op == nil {
		return fmt.Errorf("reapply nil op: %w", wire.ErrRefused)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("reapply %s: replayer: %w", describe(op), os.ErrClosed)
	}
	if err := r.applyOp(op, true); err != nil {
		return fmt.Errorf("reapply %s: %w", describe(op), err)
	}
	return nil
}

// reapply is apply for an op that may have been applied in part.
func (r *Replayer) reapply(op wire.Op) error {
	switch o := op.(type) {
	case *wire.Rename:
		return r.reapplyRename(o)
	case *wire.Release:
		if err := r.applyRelease(o); err != nil && !errors.Is(err, ErrUnknownHandle) {
			return err
		}
		return nil
	}
	return r.apply(op)
}

func (r *Replayer) reapplyRename(o *wire.Rename) error {
	switch o.Flags {
	case 0, wire.RenameNoReplace:
	case wire.RenameExchange:
		return fmt.Errorf("%w: RENAME_EXCHANGE leaves both names either way", ErrUncertain)
	default:
		return r.applyRename(o) // which refuses the flags
	}
	od, oname, err := r.lookup(o.OldPath, false)
	if err != nil {
		return err
	}
	defer od.close()
	nd, nname, err := r.lookup(o.NewPath, false)
	if err != nil {
		return err
	}
	defer nd.close()
	_, oerr := lstatAt(od, oname)
	_, nerr := lstatAt(nd, nname)
	if !errors.Is(oerr, unix.ENOENT) || nerr != nil {
		return r.applyRename(o)
	}
	// Renamed by the first attempt: finish what it may not have.
	if err := setDirMtime(od, o.OldDirMtime); err != nil {
		return fmt.Errorf("old %w", err)
	}
	if err := setDirMtime(nd, o.NewDirMtime); err != nil {
		return fmt.Errorf("new %w", err)
	}
	return nil
}
