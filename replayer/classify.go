package replayer

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Class says what an error of Apply, Reapply, Resync or Sync means for
// the replica, and so what the slave does about it. Every error falls in
// exactly one class: there is no error after which a slave may simply
// wait for an operator.
type Class int

const (
	// ClassNone: no error.
	ClassNone Class = iota
	// ClassResource: the slave lacks a resource to apply the op (disk
	// full, quota, a read-only or failing filesystem, descriptors,
	// memory, or a feature its filesystem lacks). Nothing says the tree
	// differs from the master's: the op is retried, idempotently
	// (Reapply), once the resource is back; nothing need be sent again.
	ClassResource
	// ClassRefused: the slave's own policy or bounds forbid the op
	// (wire.ErrRefused, wire.ErrLimit). Nothing changed.
	ClassRefused
	// ClassDiverged: the replica is not what the master believes (a name
	// missing or of another type, a handle never opened, an op whose
	// earlier partial application cannot be told from none, or any other
	// failure of an op the master applied successfully to the same tree):
	// only a comparison pass brings it back.
	ClassDiverged
)

func (c Class) String() string {
	switch c {
	case ClassNone:
		return "none"
	case ClassResource:
		return "resource"
	case ClassRefused:
		return "refused"
	case ClassDiverged:
		return "diverged"
	}
	return "class(?)"
}

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

// resourceErrnos are the errors that say the slave's machine, not its
// tree, is the problem. EOPNOTSUPP and ENOTSUP: the replica's filesystem
// cannot hold what the master's holds (an xattr namespace, a fallocate
// mode); no comparison pass can fix that, and the slave says so.
var resourceErrnos = []unix.Errno{
	unix.ENOSPC, unix.EDQUOT, unix.EROFS, unix.EIO, unix.ENOMEM, unix.ENFILE, unix.EMFILE,
	unix.ENOBUFS, unix.EFBIG, unix.EOPNOTSUPP, unix.ENOTSUP, unix.EUCLEAN, unix.ENOLCK,
}

// Classify puts err in its class.
func Classify(err error) Class {
	if err == nil {
		return ClassNone
	}
	// A refusal because of what the tree holds, not of what the op asks
	// for: a name of the wrong type, or a symlink where the master has a
	// directory (ELOOP: nothing was followed).
	if _, ok := errors.AsType[*wrongTypeError](err); ok {
		return ClassDiverged
	}
	if errors.Is(err, ErrUnknownHandle) || errors.Is(err, ErrUncertain) {
		return ClassDiverged
	}
	if errors.Is(err, wire.ErrRefused) {
		if errors.Is(err, unix.ELOOP) {
			return ClassDiverged
		}
		return ClassRefused
	}
	if errors.Is(err, wire.ErrLimit) {
		return ClassRefused
	}
	if errors.Is(err, os.ErrClosed) {
		return ClassResource // the replayer is closing: the slave stops
	}
	for _, e := range resourceErrnos {
		if errors.Is(err, e) {
			return ClassResource
		}
	}
	return ClassDiverged
}

// ResourceCause names the resource err lacks, for the first words of a
// status line ("disk full"), or "" if err is not ClassResource.
func ResourceCause(err error) string {
	if Classify(err) != ClassResource {
		return ""
	}
	switch {
	case errors.Is(err, unix.ENOSPC):
		return "disk full"
	case errors.Is(err, unix.EDQUOT):
		return "quota exceeded"
	case errors.Is(err, unix.EROFS):
		return "read-only filesystem"
	case errors.Is(err, unix.EIO), errors.Is(err, unix.EUCLEAN):
		return "I/O error"
	case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE):
		return "out of file descriptors"
	case errors.Is(err, unix.ENOMEM), errors.Is(err, unix.ENOBUFS):
		return "out of memory"
	case errors.Is(err, unix.EFBIG):
		return "file too large for the replica's filesystem"
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOTSUP):
		return "not supported by the replica's filesystem"
	case errors.Is(err, os.ErrClosed):
		return "slave stopping"
	}
	return "resource"
}
