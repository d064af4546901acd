package wire

import "errors"

// The errors both sides share: a slave's applier returns them, its
// transport maps them to an ErrorCode, and the master's transport maps the
// code back. Each is defined here once; packages wrap them with detail.
var (
	// ErrRefused is wrapped by the error of an op or resync item a slave
	// will not apply (a path leaving its root, a kind of entry or bit its
	// policy does not hold), and by the error that closes a master's
	// connection the slave refuses (its certificate revoked or not
	// allowed). On the wire: CodeRefused.
	ErrRefused = errors.New("refused")
	// ErrLimit is wrapped by the error of an op or item that would bring a
	// slave beyond a configured bound (open handles, pending ops). Nothing
	// was changed. On the wire: CodeLimit.
	ErrLimit = errors.New("limit exceeded")
	// ErrNeedsResync: the slave cannot apply the ops it is missing from
	// where it is (the master no longer holds them, or the slave lost the
	// open files of a run, or its replica diverged): only a resync pass
	// brings it back. On the wire: CodeNeedsResync.
	ErrNeedsResync = errors.New("slave needs resync")
)

// ResourceError is a slave's error for an op it cannot apply for want of a
// resource: its disk full, its filesystem read-only or failing. The op is
// kept and retried; it is no sign of divergence.
type ResourceError struct {
	Cause string // what is missing, first in status lines: "disk full"
	Err   error
}

func (e *ResourceError) Error() string { return e.Cause + ": " + e.Err.Error() }
func (e *ResourceError) Unwrap() error { return e.Err }
