package wire

import "context"

// The contract of a resync pass between the master's tree (the mount,
// which walks the backing dir and produces items) and the transport (which
// queues them towards one slave and hands back that slave's replies). Both
// sides name these types; neither imports the other.

// PassSink is where a pass's items go: the queue towards one slave.
type PassSink interface {
	// Reserve blocks until n more bytes of items may be queued (flow
	// control towards the slave), or ctx ends. Called without any lock of
	// the tree held.
	Reserve(ctx context.Context, n int64) error
	// Emit queues it, positioned after the last op numbered so far. Called
	// with the tree's locks held: it never blocks. n is what was reserved
	// for it: the item's encoded size is at most n, and the sink frees all
	// n once the item has left. The pass keeps no reference to it (Data
	// slices are fresh).
	Emit(it ResyncItem, n int64)
	// Release gives back n reserved bytes that no item will use (a
	// directory gone by the time it is locked, a block beyond the end of
	// its file). Called with or without the tree's locks; never blocks.
	Release(n int64)
}

// PassOptions says what a pass does.
type PassOptions struct {
	Pass uint64
	// Rebase: the slave's tree is of unknown state: ResyncHandles first,
	// and its op stream restarts at the pass.
	Rebase bool
	Verify bool // compare only; report differences
	// Full: the slave compares the content of every file, not only of
	// those whose size or mtime differ (a repair after a verify found a
	// difference both leave alone). Carried in the pass's ResyncBegin.
	Full bool
	// Progress, if set, is called at most about once a second and once at
	// the end, from one goroutine at a time.
	Progress func(PassProgress)
}

// PassProgress counts what a pass did so far.
type PassProgress struct {
	Dirs, Files, Entries uint64 // listed so far (walked again: counted again)
	TotalEntries         uint64 // estimate from a readdir-only pre-count, 0 until known
	FilesSent, BytesSent uint64 // files whose content was sent, bytes of data items
	BytesCompared        uint64 // bytes read and hashed on the master
	Differences          uint64 // reported by the slave, plus contents that differed
}

// PassResult is the outcome of a pass.
type PassResult struct {
	PassProgress
	// Diffs lists what differed (Verify only), at most a bounded number;
	// Truncated counts those left out.
	Diffs     []Difference
	Truncated uint64
}
