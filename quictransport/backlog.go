package quictransport

import (
	"sync"

	"github.com/tdfs/tdfs/wire"
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

	once sync.Once
	body []byte // until framed
	// buf, when set, is wire.FrameRoom bytes of room followed by body:
	// an uncompressed frame is then built around the body, not copied.
	buf   []byte
	frame []byte // after framed
}

// newEntry encodes op number seq into an entry, leaving room for the frame
// header before it. It is the one copy of a write's data the master makes
// for the slaves (the FUSE request buffer is reused after the request).
func newEntry(seq uint64, op wire.Op, dataThreshold int) *entry {
	hint := 64
	w, isWrite := op.(*wire.Write)
	if isWrite {
		hint += len(w.Data)
	}
	buf := wire.AppendOp(make([]byte, wire.FrameRoom, wire.FrameRoom+hint), seq, op)
	body := buf[wire.FrameRoom:]
	return &entry{seq: seq, size: int64(len(body)), body: body, buf: buf,
		data: isWrite && len(w.Data) >= dataThreshold}
}

// framed returns the entry's FrameOp, compressing it the first time. It is
// done in the senders, not in Append (which runs in the FUSE path), once
// per entry whatever the number of slaves. The master frames an entry only
// after the journal has it (a sender never sends beyond what the journal
// holds), so body is no longer needed afterwards.
func (e *entry) framed(c *wire.Compressor) []byte {
	e.once.Do(func() {
		if e.buf != nil {
			e.frame = wire.FrameInPlace(e.buf, wire.FrameOp, c)
		} else {
			e.frame = wire.AppendFrame(nil, wire.FrameOp, e.body, c)
		}
		e.body, e.buf = nil, nil
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

// trim drops the oldest entries numbered through at most, while more than
// limit bytes are held, but always keeps the newest one. It reports
// whether it dropped anything.
func (b *backlog) trim(through uint64) bool {
	n := 0
	for b.bytes > b.limit && len(b.entries)-n > 1 && b.entries[n].seq <= through {
		b.bytes -= b.entries[n].size
		b.entries[n] = nil
		n++
	}
	b.entries = b.entries[n:]
	return n > 0
}
