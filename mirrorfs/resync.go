package mirrorfs

import (
	"context"
	"errors"
	"log/slog"

	"github.com/tdfs/tdfs/wire"
)

// Online resync, the master's side (docs/design.md, Resync passes;
// wire/resync.go).
//
// A pass makes one slave's tree equal to the backing dir by comparison
// while live ops keep flowing. Every item is built while the mirror holds
// the locks that exclude the ops conflicting with what it describes, and
// handed to the sink before they are released; the sink positions it after
// the last op numbered so far, so at its position the item describes the
// master's tree exactly.
//
//  1. Begin, under the namespace lock held exclusively: ResyncBegin and,
//     with Rebase, ResyncHandles naming every handle open for writing
//     (resync_run.go).
//  2. Walk: depth-first in sorted-name order, one directory at a time,
//     under the namespace lock held shared (no namespace op runs, writes
//     do): list it, emit its ResyncDir items (resync_walk.go,
//     resync_entry.go, resync_links.go).
//  3. Replies: for each file whose content the slave describes, compare
//     block by block under the namespace lock (shared) and the inode's
//     write locks, and send what differs, then ResyncClose
//     (resync_replies.go, resync_send.go).
//  4. Live ops: those that may leave the slave wrong where the walk will
//     not come back queue that part for another walk (resync_watch.go,
//     resync_rules.go); those that change files are remembered, so that
//     the slave compares them whatever its quick check says
//     (resync_touch.go).
//  5. End, under the exclusive namespace lock, once the walks are done and
//     no reply is outstanding.
//
// Bounds: files listed and not yet resolved (maxOutstanding, waited on
// between directories), descriptors held (maxFds, only on filesystems
// without file handles), pending roots (maxPending, then the walk
// restarts from the root), hard links and files remembered (maxLinks,
// maxLinkNames, maxTouched), entries of one directory (the sorted names of
// the directory being listed are held in memory: a directory of a million
// entries costs tens of megabytes), differences listed (maxDiffs).
// Replies are compared as they come, never waiting for the sink, and not
// queued; the blocks to send are kept as ranges per file.
//
// The pass assumes what the protocol promises: replies arrive in the
// order the slave sent them, and the slave answers each item before it
// applies the next, so every ResyncHashes for a file listed before a
// directory's Final item arrives before that directory's ResyncDirDone.

// Errors of a resync pass.
var (
	// ErrBadReply: the slave's reply does not fit the pass (another pass,
	// an unknown file or directory, hashes out of order).
	ErrBadReply = errors.New("mirrorfs: resync: bad reply")
	// ErrRepliesClosed: the reply channel closed while replies were
	// still expected.
	ErrRepliesClosed = errors.New("mirrorfs: resync: replies closed")
	// ErrUnstable: the tree changed so much during the pass that it
	// restarted maxRestarts times.
	ErrUnstable = errors.New("mirrorfs: resync: tree keeps changing, pass abandoned")
	// ErrBadOptions: Rebase and Verify together (a verify compares a
	// slave that is in sync).
	ErrBadOptions = errors.New("mirrorfs: resync: bad options")
	// ErrTooManyFiles: on a filesystem without file handles, a single
	// directory holds more files to compare than descriptors may be held.
	ErrTooManyFiles = errors.New("mirrorfs: resync: too many files open")
)

// ResyncSink is where a pass's items go (the transport's queue towards one
// slave). mirrorfs declares it; quictransport implements it.
type ResyncSink interface {
	// Reserve blocks until n more bytes of items may be queued (flow
	// control towards the slave), or ctx ends. Called without any
	// mirrorfs lock held.
	Reserve(ctx context.Context, n int64) error
	// Emit queues it, positioned after the last op numbered so far.
	// Called with mirrorfs locks held; never blocks. n is what was
	// reserved for it: the item's encoded size is at most n, and the
	// sink frees all n once the item has left. The pass keeps no
	// reference to it (Data slices are fresh).
	Emit(it wire.ResyncItem, n int64)
	// Release gives back n reserved bytes that no item will use (a
	// directory gone by the time it is locked, a block beyond the end of
	// its file). Called with or without mirrorfs locks; never blocks.
	Release(n int64)
}

// ResyncOptions says what a pass does.
type ResyncOptions struct {
	Pass   uint64
	Rebase bool // the slave's tree is of unknown state: ResyncHandles first
	Verify bool // compare only
	// Full: the slave compares the content of every file, not only of
	// those whose size or mtime differ (a repair after a verify found a
	// difference both leave alone).
	Full bool
	// Progress, if set, is called at most about once a second and once
	// at the end, from one goroutine at a time.
	Progress func(ResyncProgress)
	// Logger: nil logs where the mount logs.
	Logger *slog.Logger
}

// ResyncProgress counts what a pass did so far.
type ResyncProgress struct {
	Dirs, Files, Entries uint64 // listed so far (walked again: counted again)
	TotalEntries         uint64 // estimate from a readdir-only pre-count, 0 until known
	FilesSent, BytesSent uint64 // files whose content was sent, bytes of data items
	BytesCompared        uint64 // bytes read and hashed on the master
	Differences          uint64 // reported by the slave, plus contents that differed
}

// ResyncResult is the outcome of a pass.
type ResyncResult struct {
	ResyncProgress
	// Diffs lists what differed (Verify only), at most maxDiffs; Truncated
	// counts those left out.
	Diffs     []wire.Difference
	Truncated uint64
}

// Limits of a pass.
const (
	maxOutstanding = 16384 // files listed and not yet resolved, before listing another directory
	maxFds         = 1024  // descriptors held (filesystems without file handles), same
	hardMaxFds     = 8192  // descriptors held, ever: ErrTooManyFiles beyond
	maxLinks       = 1 << 20
	maxDiffs       = 10000
	maxRestarts    = 3
	maxRetries     = 3 // verify re-checks of a file that changed while compared
	maxRetryPaths  = 10000
)

// Resync runs one pass against one slave. replies carries the slave's
// ResyncHashes and ResyncDirDone for this pass. It returns once
// ResyncEnd has been emitted and every reply it waits for has arrived, or
// when ctx ends or something fails (the slave is then still resyncing: the
// caller starts another pass later). Several passes may run at once.
func (s *Server) Resync(ctx context.Context, o ResyncOptions, sink ResyncSink, replies <-chan wire.ResyncReply) (ResyncResult, error) {
	if o.Rebase && o.Verify {
		return ResyncResult{}, ErrBadOptions
	}
	p, err := newPass(s, o, sink)
	if err != nil {
		return ResyncResult{}, err
	}
	defer p.close()
	return p.run(ctx, replies)
}
