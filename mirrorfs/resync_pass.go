package mirrorfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// The state of a pass, and what its goroutines share: waiting on it, and
// reserving the sink's room for items.

// pass is the state of one Resync call.
type pass struct {
	m    *mirror
	mnt  passMount // the mount's locks and handles (resync_mount.go)
	o    wire.PassOptions
	sink wire.PassSink
	log  *slog.Logger
	w    *watch
	// cancel ends the pass's context: a failure anywhere stops the
	// others, including a Reserve waiting for the sink.
	cancel context.CancelFunc

	rootFd  int  // the backing dir: openat2 anchor, open_by_handle_at mount
	mountID int  // of the backing dir
	byFH    bool // files are identified by file handles (else descriptors)

	// Counters (atomic: progress reads them while the pass runs).
	dirs, files, entries, total                  atomic.Uint64
	filesSent, bytesSent, bytesCompared, differs atomic.Uint64

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced when the state below changes
	ended    bool          // ResyncEnd emitted: nothing more may be
	failed   error
	nextDir  uint64
	nextFile uint64
	nextLink uint64
	items    uint64 // ResyncDir items emitted, orders files against Finals
	byID     map[uint64]*fileState
	fifo     []*fileState // listed files in listing order, until their directory is done
	dirByID  map[uint64]*dirState
	// parts holds, for each DirID, the positions (p.items) of its
	// non-Final items whose Part reply has not arrived, oldest first.
	parts   map[uint64][]uint64
	waiting int // items emitted (Final or not) whose ResyncDirDone has not arrived
	busy    int // replies being processed
	// hashedOpen counts the files whose hashes arrived and which are not
	// resolved yet (being compared or sent).
	hashedOpen int
	sendq      []*fileState
	fds        int
	links      map[linkKey]uint64
	linkFirst  map[uint64]uint64 // LinkID: watch.now() when its first name was listed
	retries    map[string]int
	diffs      []wire.Difference
	seenDiff   map[wire.Difference]struct{}
	trunc      uint64
	warned     map[string]bool

	// walkHook, if set (tests), runs after each directory's Final item,
	// outside every lock.
	walkHook func(dir string)
	// chunkHook, if set (tests), runs between the items of a directory
	// listed in several, outside every lock.
	chunkHook func(dir string)
	noWatch   bool
	maxEnt    int // entries per ResyncDir, when a test wants fewer than the wire's bound
}

// passHooks are test hooks applied to every new pass (resync_export_test.go).
var passHooks struct {
	sync.Mutex
	walk, chunk func(dir string)
	noFH        bool
	noWatch     bool // the pass sees no live op (to show what the watch is for)
	maxEntries  int
}

func newPass(s *Server, o wire.PassOptions, sink wire.PassSink) (*pass, error) {
	log := s.m.log
	p := &pass{
		m: s.m, mnt: passMount{s.m}, o: o, sink: sink, log: log.With("pass", o.Pass),
		w:         &watch{},
		changed:   make(chan struct{}),
		byID:      make(map[uint64]*fileState),
		dirByID:   make(map[uint64]*dirState),
		parts:     make(map[uint64][]uint64),
		links:     make(map[linkKey]uint64),
		linkFirst: make(map[uint64]uint64),
		retries:   make(map[string]int),
		seenDiff:  make(map[wire.Difference]struct{}),
		warned:    make(map[string]bool),
	}
	passHooks.Lock()
	p.walkHook, p.chunkHook = passHooks.walk, passHooks.chunk
	p.noWatch, p.maxEnt = passHooks.noWatch, passHooks.maxEntries
	noFH := passHooks.noFH
	passHooks.Unlock()
	// Not O_PATH: open_by_handle_at(2) refuses an O_PATH descriptor as
	// its mount_fd (EBADF). Reopened through the mount's own descriptor,
	// so the pass sees the directory the mount serves.
	fd, err := s.m.reopenRoot(unix.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("mirrorfs: resync: open backing %q: %w", s.m.backing, err)
	}
	p.rootFd = fd
	why := "switched off"
	if !noFH {
		why = p.probeHandles()
	}
	p.byFH = why == ""
	if !p.byFH {
		p.log.Warn("mirrorfs: resync: files cannot be held by file handle (" + why + "); holding descriptors instead")
	}
	return p, nil
}

// probeHandles checks that files of the backing dir can be named by file
// handles and reopened by them (needs CAP_DAC_READ_SEARCH, the system
// call, and an exportable filesystem), and says why not, "" if they can.
func (p *pass) probeHandles() string {
	fh, mnt, err := unix.NameToHandleAt(p.rootFd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		return "name_to_handle_at: " + handleTrouble(err)
	}
	fd, err := unix.OpenByHandleAt(p.rootFd, fh, unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return "open_by_handle_at: " + handleTrouble(err)
	}
	unix.Close(fd)
	p.mountID = mnt
	return ""
}

// handleTrouble says what an error of name_to_handle_at(2) or
// open_by_handle_at(2) means for an operator.
func handleTrouble(err error) string {
	switch {
	case errors.Is(err, unix.EPERM):
		return "not permitted: a system call filter without open_by_handle_at " +
			"(systemd's SystemCallFilter=@system-service lacks it), or no CAP_DAC_READ_SEARCH"
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
		return "the backing filesystem gives no file handles"
	}
	return err.Error()
}

func (p *pass) close() {
	p.mu.Lock()
	files := make([]*fileState, 0, len(p.byID))
	for _, f := range p.byID {
		files = append(files, f)
	}
	p.byID = map[uint64]*fileState{}
	p.mu.Unlock()
	for _, f := range files {
		f.release()
	}
	unix.Close(p.rootFd)
}

// warnOnce logs msg the first time key is seen in this pass.
func (p *pass) warnOnce(key, msg string, args ...any) {
	p.mu.Lock()
	seen := p.warned[key]
	p.warned[key] = true
	p.mu.Unlock()
	if !seen {
		p.log.Warn(msg, args...)
	}
}

// notifyLocked wakes every waiter; p.mu held.
func (p *pass) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// fail records the first error of the pass and wakes the waiters.
func (p *pass) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed == nil {
		p.failed = err
	}
	p.notifyLocked()
	if p.cancel != nil {
		p.cancel()
	}
}

// waitFor waits until cond (called with p.mu held) holds, the pass fails
// or ctx ends.
func (p *pass) waitFor(ctx context.Context, cond func() bool) error {
	for {
		p.mu.Lock()
		if p.failed != nil {
			err := p.failed
			p.mu.Unlock()
			return err
		}
		if cond() {
			p.mu.Unlock()
			return nil
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// reserve reserves n bytes for an item, without any lock held.
func (p *pass) reserve(ctx context.Context, n int64) error {
	if err := p.sink.Reserve(ctx, n); err != nil {
		return fmt.Errorf("mirrorfs: resync: reserve %d bytes: %w", n, err)
	}
	return nil
}

// refund gives reserved bytes no item used back to the sink. The pass
// never keeps a reservation it does not use at once: a goroutine waiting
// in Reserve while another held bytes back could wait for ever.
func (p *pass) refund(n int64) {
	if n > 0 {
		p.sink.Release(n)
	}
}

// emit hands an item to the sink with the n bytes reserved for it. Called
// with the locks that position it held.
func (p *pass) emit(it wire.ResyncItem, n int64) {
	p.sink.Emit(it, n)
}
