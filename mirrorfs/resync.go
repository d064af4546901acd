package mirrorfs

import (
	"context"
	"errors"

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
// master's tree exactly. The pass takes those locks, and reaches the
// mount's nodes at all, only through passMount (resync_mount.go).
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
func (s *Server) RunPass(ctx context.Context, o wire.PassOptions, sink wire.PassSink, replies <-chan wire.ResyncReply) (wire.PassResult, error) {
	if o.Rebase && o.Verify {
		return wire.PassResult{}, ErrBadOptions
	}
	p, err := newPass(s, o, sink)
	if err != nil {
		return wire.PassResult{}, err
	}
	defer p.close()
	return p.run(ctx, replies)
}
