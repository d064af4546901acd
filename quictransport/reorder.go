package quictransport

import (
	"fmt"
	"sync"

	"github.com/tdfs/tdfs/wire"
)

// reorder is the slave's buffer of received-but-unapplied ops, keyed by seq.
// Stream readers insert as soon as they decode (they never wait for room: a
// reader that waits at a barrier can deadlock the connection, docs/design.md,
// Implementation traps); the applier pops strictly in seq order.
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
	// The control stream carries ops in seq order; the seqs it skips are
	// large writes on data streams (quictransport doc). hiCtrl is the
	// last seq it carried (or the one before the first expected), and
	// gaps the seqs below it that no data stream has delivered yet. A
	// master has few writes in flight on data streams at once, so more
	// than maxGap of them means ops were skipped, not delayed.
	hiCtrl  uint64
	gaps    map[uint64]struct{}
	maxGap  int
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

// defaultMaxGap bounds the seqs missing below the control stream's last
// op (see maxGap); the session sets it from the stream limit.
const defaultMaxGap = 256

func newReorder(next uint64, max int64) *reorder {
	return &reorder{next: next, items: make(map[uint64]pendingOp), max: max, ready: make(chan struct{}, 1),
		hiCtrl: next - 1, gaps: make(map[uint64]struct{}), maxGap: defaultMaxGap}
}

// insertControl buffers op number seq read from the control stream, which
// carries ops in strictly increasing seq order: a seq at or below the last
// one it carried went backwards, and more seqs missing below it than the
// writes a master can have in flight on data streams were skipped.
func (r *reorder) insertControl(seq uint64, op wire.Op, size int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq >= r.next && seq <= r.hiCtrl {
		return fmt.Errorf("%w: op %d (%v) on the control stream after op %d: the control stream carries ops in seq order",
			ErrSeqOutOfOrder, seq, op.Type(), r.hiCtrl)
	}
	if seq > r.hiCtrl {
		// Each seq is walked once over the connection (the ranges are
		// disjoint), and a walk stops at maxGap missing ones.
		for s := max(r.hiCtrl+1, r.next); s < seq; s++ {
			if _, ok := r.items[s]; ok {
				continue
			}
			r.gaps[s] = struct{}{}
			if len(r.gaps) > r.maxGap {
				return fmt.Errorf("%w: op %d (%v) on the control stream leaves more than %d earlier ops missing (op %d first), "+
					"more writes than a master has in flight on data streams: ops were skipped",
					ErrSeqOutOfOrder, seq, op.Type(), r.maxGap, r.next)
			}
		}
		r.hiCtrl = seq
	}
	return r.insertLocked(seq, op, size)
}

// insert buffers op number seq, whose FrameOp body was size bytes.
func (r *reorder) insert(seq uint64, op wire.Op, size int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.insertLocked(seq, op, size)
}

func (r *reorder) insertLocked(seq uint64, op wire.Op, size int64) error {
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
		return fmt.Errorf("%w: op %d would bring %d buffered bytes beyond the %d announced", wire.ErrLimit, seq, r.pending+size, r.max)
	}
	r.items[seq] = pendingOp{op: op, size: size}
	delete(r.gaps, seq)
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
		return fmt.Errorf("%w: a resync item would bring %d buffered bytes beyond the %d announced", wire.ErrLimit, r.pending+size, r.max)
	}
	if b, ok := it.(*wire.ResyncBegin); ok && b.Rebase {
		for seq, op := range r.items {
			if seq <= after {
				r.pending -= op.size
				delete(r.items, seq)
			}
		}
		// The control stream restarts after the item, possibly below
		// where it was (a new epoch numbers from its own head): what was
		// missing before it is not wanted any more.
		clear(r.gaps)
		r.next = after + 1
		r.rebased = max(r.rebased, after)
		r.hiCtrl = after
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
