package quictransport

import (
	"sync"

	"github.com/tdfs/tdfs/quictransport/wire"
)

// entry is one numbered op held for the slaves.
type entry struct {
	seq uint64
	// size is the length of the FrameOp body (wire.AppendOp): the unit of
	// both the backlog's memory accounting and flow control, which the
	// slave measures the same way on the decoded body.
	size int64
	// data: a large write, sent on its own data stream.
	data bool

	once  sync.Once
	body  []byte // until framed
	frame []byte // after framed
}

// framed returns the entry's FrameOp, compressing it the first time. It is
// done in the senders, not in Append (which runs in the FUSE path), once
// per entry whatever the number of slaves.
func (e *entry) framed(c *wire.Compressor) []byte {
	e.once.Do(func() {
		e.frame = wire.AppendFrame(nil, wire.FrameOp, e.body, c)
		e.body = nil
	})
	return e.frame
}

// backlog holds the ops a slave may still need, oldest first, with dense
// seqs. It is not safe for concurrent use (the Master's mutex guards it).
type backlog struct {
	entries []*entry
	head    uint64 // seq of the newest op appended; 0 before the first
	bytes   int64
	limit   int64
}

// first is the lowest seq still held, head+1 when empty.
func (b *backlog) first() uint64 {
	if len(b.entries) == 0 {
		return b.head + 1
	}
	return b.entries[0].seq
}

// push appends e. When e.seq does not follow head (the caller broke the
// contract, or a master restarted its numbering), everything held is
// dropped: ops are useful only as a dense sequence. It reports whether it
// had to do that.
func (b *backlog) push(e *entry) (reset bool) {
	if b.head != 0 && e.seq != b.head+1 {
		b.dropThrough(b.head)
		reset = true
	}
	b.entries = append(b.entries, e)
	b.bytes += e.size
	b.head = e.seq
	return reset
}

// get returns the entry numbered seq, if held.
func (b *backlog) get(seq uint64) (*entry, bool) {
	f := b.first()
	if seq < f || seq > b.head {
		return nil, false
	}
	return b.entries[seq-f], true
}

// dropThrough drops every entry numbered seq or lower.
func (b *backlog) dropThrough(seq uint64) {
	n := 0
	for n < len(b.entries) && b.entries[n].seq <= seq {
		b.bytes -= b.entries[n].size
		b.entries[n] = nil // let the GC have it
		n++
	}
	b.entries = b.entries[n:]
}

// trim drops the oldest entries while more than limit bytes are held, but
// always keeps the newest one. It reports whether it dropped anything.
func (b *backlog) trim() bool {
	n := 0
	for b.bytes > b.limit && len(b.entries)-n > 1 {
		b.bytes -= b.entries[n].size
		b.entries[n] = nil
		n++
	}
	b.entries = b.entries[n:]
	return n > 0
}
