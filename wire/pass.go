package wire

import "context"

// The contract between the master's tree (the mount, which numbers ops
// and walks the backing dir in resync passes) and the transport (which
// ships ops and pass items to the slaves and hands back their replies).
// Both sides name these types; neither imports the other.

// OpSink receives the mount's numbered ops: the transport's fan-out.
type OpSink interface {
	// Append hands over op number seq. Calls come one at a time in seq
	// order (1, 2, 3, ... no gaps) while the mount holds its sequencing
	// lock: Append must copy what it keeps (Write.Data and Setxattr.Value
	// alias FUSE request buffers) and must not block on the network.
	Append(seq uint64, op Op)
	// Wait returns once every healthy slave has made ops up to seq
	// durable, or has been marked degraded (the sink bounds the wait by
	// its sync timeout). An error says the durability the master was
	// asked for (a minimum of slaves) was not reached: the caller answers
	// EIO. Called without any lock of the mount held.
	Wait(seq uint64) error
}

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
