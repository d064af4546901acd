package quictransport

import (
	"context"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// Tree is the master's backing dir as a resync pass sees it. mirrorfs
// implements it (cmd/tdfs-master adapts it): a pass compares the tree with
// one slave and sends it positioned items (wire/resync.go) through sink,
// and reads the slave's replies from replies.
type Tree interface {
	Resync(ctx context.Context, o PassOptions, sink ResyncSink, replies <-chan wire.ResyncReply) (PassResult, error)
}

// ResyncSink is where a pass's items go: the slave's queue on the master.
type ResyncSink interface {
	// Reserve blocks until n more bytes of items may be queued, or ctx
	// ends. Called without any lock of the tree held.
	Reserve(ctx context.Context, n int64) error
	// Emit queues it (reserved as n bytes), positioned after the last op
	// numbered so far. Called with the tree's locks held: it never blocks.
	Emit(it wire.ResyncItem, n int64)
	// Release gives back n reserved bytes that no item will use. Called
	// with or without the tree's locks; never blocks.
	Release(n int64)
}

// PassOptions says what a pass does.
type PassOptions struct {
	Pass   uint64
	Rebase bool // the slave's tree is of unknown state: its op stream restarts at the pass
	Verify bool // compare only; report differences
	// Full: compare the contents of every file (a repair), not only of
	// those whose size or mtime differ. The transport sets it in the
	// pass's ResyncBegin.
	Full bool
	// Progress, when set, is called now and then with the counts so far.
	Progress func(PassProgress)
}

// PassProgress counts what a pass did so far.
type PassProgress struct {
	Dirs, Files, Entries uint64
	TotalEntries         uint64 // estimate, 0 if unknown
	FilesSent, BytesSent uint64
	BytesCompared        uint64
	Differences          uint64
}

// PassReport is a pass's progress as MasterConfig.OnProgress receives it.
type PassReport struct {
	Slave   string // the slave's address, as configured
	Pass    uint64
	Kind    string // "resync", "check", "verify" or "repair"
	Started time.Time
	// Done: the pass ended, and this is its last report (Err says
	// whether it failed).
	Done bool
	Err  error
	PassProgress
}

// PassResult is the outcome of a pass.
type PassResult struct {
	PassProgress
	// Diffs lists what differed (Verify), at most a bounded number;
	// Truncated counts those left out.
	Diffs     []wire.Difference
	Truncated uint64
}
