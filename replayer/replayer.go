package replayer

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// ErrUnknownHandle is wrapped by the error of a Write, Release, Fallocate,
// CopyRange or Setattr naming a handle that was never opened (or was
// already released).
var ErrUnknownHandle = errors.New("replayer: unknown handle")

// Options configure a Replayer.
type Options struct {
	// Chown says whether to apply owners (uid/gid), and to hold the
	// xattrs only root may set or that name ids like owners do (trusted.*,
	// POSIX ACLs); default when constructing from cmd: os.Geteuid()==0.
	Chown bool
	// AllowSetuid lets ops and resync passes set setuid and setgid bits
	// (setgid on directories is always allowed) and security.capability;
	// without it they are refused (policy.go).
	AllowSetuid bool
	// AllowDevices lets ops and resync passes make character and block
	// device nodes; without it they are refused (policy.go).
	AllowDevices bool
	// MaxFileSize bounds file sizes and the end of every write, fallocate
	// and truncate (0: DefaultMaxFileSize).
	MaxFileSize uint64
	// MaxHandles bounds the files kept open under the master's handles
	// (0: DefaultMaxHandles).
	MaxHandles int
	Logger     *slog.Logger // nil: slog.Default()
	// OnHandle, if set, learns of every handle change as ops and resync
	// items apply: rec is the handle's record after a Create or Open under
	// a handle (and after a resync opens one), nil after its Release. It
	// is called with the replayer's lock held: it must not call back into
	// the Replayer. See handles_persist.go.
	OnHandle func(h uint64, rec *HandleRecord)
	// Suspects, if set, keeps the files a resync pass must compare in
	// full outside the replica, so that they survive a restart (see
	// suspects.go; SetSuspects loads them back).
	Suspects SuspectLog
}

// Replayer applies ops beneath one root directory. Apply, Reapply,
// Resync, ResetHandles and Close are serialised; Sync may be called from
// another goroutine at any time.
type Replayer struct {
	root  string
	chown bool
	log   *slog.Logger
	euid  int
	egid  int
	// What the slave refuses (policy.go).
	allowSetuid  bool
	allowDevices bool
	maxFileSize  uint64
	maxHandles   int

	// mu serialises everything that touches the tree or the handles.
	mu      sync.Mutex
	handles map[uint64]int
	warned  bool // the Chown=false owner warning was logged

	// Catch-up and resync state (handles_persist.go, resync*.go).
	onHandle func(h uint64, rec *HandleRecord)
	rootDev  uint64              // st_dev of the root: restored handles must lie on it
	gone     map[uint64]struct{} // handles of files without a name: their writes change nothing visible
	// unlistedGone: a rebase's ResyncHandles listed every handle whose
	// file has a name on the master, so an unknown handle is a nameless file's.
	unlistedGone bool
	fhWarned     bool // the no-file-handle warning was logged
	// A pass cannot hold files by file handle (resync_held.go), and
	// whether that was checked.
	noReopen      bool
	reopenChecked bool
	tolerant      bool // apply ops that fail on a differing tree as no-ops (resync_tolerant.go)
	// Files whose contents a pass must compare whatever their size and
	// mtime (suspects.go).
	suspects   map[[2]uint64]struct{}
	suspectAll bool
	suspectLog SuspectLog
	skipped    atomic.Uint64
	pass       *resyncPass // the resync pass in progress, or nil

	// fdMu guards the root fds against Close while Sync uses them. Lock
	// order: mu, then fdMu.
	fdMu   sync.RWMutex
	closed bool
	rootFd int // O_PATH|O_DIRECTORY: the anchor every path is resolved from
	syncFd int // O_RDONLY|O_DIRECTORY on the same dir: syncfs(2) and fsetxattr(2) reject O_PATH fds
}

// New returns a Replayer applying ops beneath root, which must be an
// existing directory.
func New(root string, o Options) (*Replayer, error) {
	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("replayer: open root %q: %w", root, err)
	}
	// Opening "." through rootFd guarantees both fds name the same
	// directory even if root is renamed between the two opens.
	syncFd, err := unix.Openat(rootFd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(rootFd)
		return nil, fmt.Errorf("replayer: open root %q for reading: %w", root, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(rootFd, &st); err != nil {
		unix.Close(syncFd)
		unix.Close(rootFd)
		return nil, fmt.Errorf("replayer: stat root %q: %w", root, err)
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if o.MaxFileSize == 0 {
		o.MaxFileSize = DefaultMaxFileSize
	}
	if o.MaxHandles <= 0 {
		o.MaxHandles = DefaultMaxHandles
	}
	return &Replayer{
		root:         root,
		chown:        o.Chown,
		allowSetuid:  o.AllowSetuid,
		allowDevices: o.AllowDevices,
		maxFileSize:  o.MaxFileSize,
		maxHandles:   o.MaxHandles,
		log:          log,
		euid:         os.Geteuid(),
		egid:         os.Getegid(),
		handles:      make(map[uint64]int),
		onHandle:     o.OnHandle,
		suspectLog:   o.Suspects,
		rootDev:      st.Dev,
		gone:         make(map[uint64]struct{}),
		rootFd:       rootFd,
		syncFd:       syncFd,
	}, nil
}

// Apply applies one op. Calls must come one at a time, in sequence order.
// The error says which op and path failed and wraps the cause, so
// errors.Is(err, fs.ErrNotExist), wire.ErrRefused, wire.ErrLimit and
// ErrUnknownHandle work.
func (r *Replayer) Apply(op wire.Op) error {
	if op == nil {
		return fmt.Errorf("apply nil op: %w", wire.ErrRefused)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("apply %s: replayer: %w", describe(op), os.ErrClosed)
	}
	if err := r.applyOp(op, false); err != nil {
		return fmt.Errorf("apply %s: %w", describe(op), err)
	}
	return nil
}

// applyOp is the path every op takes, in Apply and Reapply (again), one
// step after the other: the slave's policy (policy.go); an op through a
// handle whose file has no name, which changes nothing (handles.go); in
// tolerant mode, the record of the file it changes (suspects.go); the
// change itself (apply_*.go); the handle it opened or released. A failure
// goes through tolerate, which in tolerant mode decides what is skipped
// (resync_tolerant.go). r.mu is held.
func (r *Replayer) applyOp(op wire.Op, again bool) error {
	if err := r.checkOp(op); err != nil {
		r.refuseOpenedHandle(op)
		return r.tolerate(op, err)
	}
	if r.goneHandleOp(op) {
		return nil
	}
	if r.tolerant {
		if err := r.suspectTarget(op); err != nil {
			return fmt.Errorf("record the file as suspect: %w", err)
		}
	}
	if err := r.change(op, again); err != nil {
		return r.tolerate(op, err)
	}
	r.noteHandle(op)
	return nil
}

// refuseOpenedHandle makes the handle of a Create or Open that policy
// refused gone: nothing was opened, and the writes through it change
// nothing either (the file is left out of this replica, and a pass
// reports it). An id still open belongs to a file the master released
// (keep), which is closed.
func (r *Replayer) refuseOpenedHandle(op wire.Op) {
	if h, ok := opensHandle(op); ok {
		r.markGone(h)
	}
}

// change makes op's change to the tree: applies it, or re-applies it
// (again) over what a dead process may have left of it (reapply.go).
func (r *Replayer) change(op wire.Op, again bool) error {
	if again {
		return r.reapply(op)
	}
	return r.apply(op)
}

// apply is the one dispatch from an op's type to the code that applies
// it (the apply_*.go files).
func (r *Replayer) apply(op wire.Op) error {
	switch o := op.(type) {
	case *wire.Create:
		return r.applyCreate(o)
	case *wire.Mkdir:
		return r.applyMkdir(o)
	case *wire.Mknod:
		return r.applyMknod(o)
	case *wire.Symlink:
		return r.applySymlink(o)
	case *wire.Link:
		return r.applyLink(o)
	case *wire.Unlink:
		return r.applyUnlink(o)
	case *wire.Rmdir:
		return r.applyRmdir(o)
	case *wire.Rename:
		return r.applyRename(o)
	case *wire.Open:
		return r.applyOpen(o)
	case *wire.Release:
		return r.applyRelease(o)
	case *wire.Write:
		return r.applyWrite(o)
	case *wire.Setattr:
		return r.applySetattr(o)
	case *wire.Setxattr:
		return r.applySetxattr(o)
	case *wire.Removexattr:
		return r.applyRemovexattr(o)
	case *wire.Fallocate:
		return r.applyFallocate(o)
	case *wire.CopyRange:
		return r.applyCopyRange(o)
	case *wire.Sync:
		return r.syncfs()
	case *wire.RunStart:
		// A new master process: no handle of an earlier run will be
		// written again, and its ids will be reused. (Apply holds mu:
		// the unlocked variant.)
		r.resetHandles()
		return nil
	case *wire.Unclean:
		// The master's tree may hold what this one never received: until
		// a repairing pass ends, ops meeting a difference are skipped.
		r.tolerant = true
		return nil
	}
	return fmt.Errorf("%w: op type %T is unknown to this slave", wire.ErrRefused, op)
}

// describe names an op and what it acts on, for error messages.
func describe(op wire.Op) string {
	if s, ok := op.(fmt.Stringer); ok {
		return s.String()
	}
	return op.Type().String() // an op type this slave does not know
}

// Sync makes everything applied so far durable: syncfs(2) on the root's
// filesystem. Handles stay open.
func (r *Replayer) Sync() error {
	return r.syncfs()
}

func (r *Replayer) syncfs() error {
	r.fdMu.RLock()
	defer r.fdMu.RUnlock()
	if r.closed {
		return fmt.Errorf("sync %q: replayer: %w", r.root, os.ErrClosed)
	}
	if err := unix.Syncfs(r.syncFd); err != nil {
		return fmt.Errorf("sync %q: %w", r.root, err)
	}
	return nil
}

// Close closes every handle and the root. It does not sync: call Sync
// first for durability. Closing twice is harmless.
func (r *Replayer) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endPass()
	errs := r.closeHandles()
	r.fdMu.Lock()
	defer r.fdMu.Unlock()
	if r.closed {
		return errors.Join(errs...)
	}
	r.closed = true
	if err := unix.Close(r.syncFd); err != nil {
		errs = append(errs, fmt.Errorf("close root %q: %w", r.root, err))
	}
	if err := unix.Close(r.rootFd); err != nil {
		errs = append(errs, fmt.Errorf("close root %q: %w", r.root, err))
	}
	return errors.Join(errs...)
}
