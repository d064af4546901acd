package quictransport

import (
	"fmt"
	"sync"

	"github.com/tdfs/tdfs/quictransport/wire"
)

// reorder is the slave's buffer of received-but-unapplied ops, keyed by
// seq. Stream readers insert as soon as they decode (they never wait for
// room: a reader that waits at a barrier can deadlock the connection,
// research pitfall #5); the applier pops strictly in seq order.
//
// Its byte bound is enforced, not waited for: the master keeps what it has
// in flight below the MaxPending the slave announced, so only a broken or
// hostile master exceeds it.
type reorder struct {
	mu    sync.Mutex
	next  uint64 // the seq the applier needs next
	items map[uint64]pendingOp
	// resync holds positioned resync items in arrival order (they all
	// come on the control stream); the front one is due once every op up
	// to its position is applied.
	resync []pendingItem
	// rebased is the highest position a rebasing ResyncBegin moved the
	// stream to: ops up to it that arrive late (large writes sent on data
	// streams before the Begin) are dropped, not refused.
	rebased uint64
	pending int64 // bytes of items
	max     int64
	peak    int64 // highest pending seen (tests check the bound)
	// ready is poked when next becomes available (and by wake).
	ready chan struct{}
}

type pendingOp struct {
	op   wire.Op
	size int64
}

type pendingItem struct {
	after uint64
	item  wire.ResyncItem
	size  int64
}

func newReorder(next uint64, max int64) *reorder {
	return &reorder{next: next, items: make(map[uint64]pendingOp), max: max, ready: make(chan struct{}, 1)}
}

// insert buffers op number seq, whose FrameOp body was size bytes.
func (r *reorder) insert(seq uint64, op wire.Op, size int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq <= r.rebased && seq < r.next {
		return nil // sent before a rebase: not wanted
	}
	if seq < r.next {
		return fmt.Errorf("%w: op %d (%v) arrived but the next op expected is %d", ErrSeqOutOfOrder, seq, op.Type(), r.next)
	}
	if _, dup := r.items[seq]; dup {
		return fmt.Errorf("%w: op %d (%v) arrived twice", ErrSeqOutOfOrder, seq, op.Type())
	}
	if r.pending+size > r.max {
		return fmt.Errorf("%w: op %d would bring %d buffered bytes beyond the %d announced", ErrLimit, seq, r.pending+size, r.max)
	}
	r.items[seq] = pendingOp{op: op, size: size}
	r.pending += size
	r.peak = max(r.peak, r.pending)
	if seq == r.next {
		r.wakeLocked()
	}
	return nil
}

// insertItem buffers a resync item positioned after op number after. A
// ResyncBegin with Rebase moves the stream: ops up to after are not
// wanted any more (the pass will compare whatever they changed), the next
// op is after+1, and the item is due at once.
func (r *reorder) insertItem(after uint64, it wire.ResyncItem, size int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending+size > r.max {
		return fmt.Errorf("%w: a resync item would bring %d buffered bytes beyond the %d announced", ErrLimit, r.pending+size, r.max)
	}
	if b, ok := it.(*wire.ResyncBegin); ok && b.Rebase {
		for seq, op := range r.items {
			if seq <= after {
				r.pending -= op.size
				delete(r.items, seq)
			}
		}
		r.next = after + 1
		r.rebased = max(r.rebased, after)
	} else if n := len(r.resync); n > 0 && after < r.resync[n-1].after {
		return fmt.Errorf("%w: resync item positioned after op %d follows one positioned after op %d", ErrProtocol, after, r.resync[n-1].after)
	}
	r.resync = append(r.resync, pendingItem{after: after, item: it, size: size})
	r.pending += size
	r.peak = max(r.peak, r.pending)
	if after < r.next {
		r.wakeLocked()
	}
	return nil
}

// popItem takes the front resync item if it is due: every op up to its
// position applied.
func (r *reorder) popItem() (after uint64, it wire.ResyncItem, size int64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.resync) == 0 || r.resync[0].after >= r.next {
		return 0, nil, 0, false
	}
	pi := r.resync[0]
	r.resync[0] = pendingItem{}
	r.resync = r.resync[1:]
	r.pending -= pi.size
	return pi.after, pi.item, pi.size, true
}

// pop takes the op numbered next, if it has arrived and no resync item is
// due before it. Its bytes leave the account at once: the op in hand is
// the applier's.
func (r *reorder) pop() (seq uint64, op wire.Op, size int64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.resync) > 0 && r.resync[0].after < r.next {
		return 0, nil, 0, false
	}
	it, ok := r.items[r.next]
	if !ok {
		return 0, nil, 0, false
	}
	delete(r.items, r.next)
	r.pending -= it.size
	seq = r.next
	r.next++
	return seq, it.op, it.size, true
}

// wake pokes the applier (a Bye, a stop request).
func (r *reorder) wake() {
	r.mu.Lock()
	r.wakeLocked()
	r.mu.Unlock()
}

func (r *reorder) wakeLocked() {
	select {
	case r.ready <- struct{}{}:
	default:
	}
}

// stats returns the bytes buffered now and at most so far.
func (r *reorder) stats() (pending, peak int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pending, r.peak
}
