package quictransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tdfs/tdfs/journal"
	"github.com/tdfs/tdfs/wire"
)

// journalReader is a peer's position in the on-disk journal, for ops the
// memory backlog no longer holds. Used by the peer's sender only (pending
// is read under m.mu).
type journalReader struct {
	r       *journal.Reader
	next    uint64 // the seq r returns next
	pending *entry // read, not sent yet (flow control held it)
}

func (jr *journalReader) close() {
	if jr.r != nil {
		jr.r.Close()
	}
	*jr = journalReader{}
}

// readJournal reads op seq from the journal into jr.pending. An op the
// journal no longer holds makes the slave need a rebase pass.
func (p *peer) readJournal(ctx context.Context, seq uint64) error {
	m := p.m
	j := m.cfg.Journal
	jr := &p.jr
	gone := func(why string) error {
		m.mu.Lock()
		defer m.mu.Unlock()
		p.lostLocked(seq, why)
		return nil
	}
	if j == nil {
		return gone("there is no journal")
	}
	if jr.r == nil || jr.next != seq {
		jr.close()
		r, err := j.Reader(seq)
		if err != nil {
			return gone(err.Error())
		}
		jr.r, jr.next = r, seq
	}
	for attempt := 0; ; attempt++ {
		got, body, err := jr.r.Next()
		switch {
		case errors.Is(err, io.EOF):
			// Appended but not flushed yet: ask for a flush and retry.
			m.jn.kickFlush()
			if attempt > 200 {
				return fmt.Errorf("journal: op %d never reached the journal", seq)
			}
			t := time.NewTimer(5 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return context.Cause(ctx)
			case <-t.C:
			}
			continue
		case err != nil:
			jr.close()
			return gone(err.Error())
		case got != seq:
			jr.close()
			return gone(fmt.Sprintf("the journal returned op %d for op %d", got, seq))
		}
		jr.next = seq + 1
		e := &entry{seq: seq, size: int64(len(body)), body: body}
		if len(body) >= m.cfg.DataThreshold {
			if _, op, err := wire.ParseOp(body); err == nil && op.Type() == wire.OpWrite {
				e.data = true
			}
		}
		m.mu.Lock()
		jr.pending = e
		m.mu.Unlock()
		return nil
	}
}

// lostLocked: the op the slave needs next (seq) is gone; it needs a
// rebase pass (or, without a tree, a manual resync).
func (p *peer) lostLocked(seq uint64, why string) {
	if p.m.tree == nil {
		p.needsResyncLocked(seq-1, "")
		return
	}
	if !p.rebase {
		p.log.Warn("slave needs a resync: the master no longer holds the ops it lacks", "next", seq,
			"held", p.m.heldLocked(), "why", why)
	}
	p.rebase, p.waitBegin = true, true
	if p.pass != nil && p.endSession != nil {
		// A pass is running on ops the master no longer holds for this
		// slave: start over on a new connection, with a rebase pass.
		p.endSession(fmt.Errorf("the slave fell behind what the master holds during a resync pass (next op %d)", seq))
	}
	p.m.broadcastLocked()
	p.poke()
	p.m.poke()
}
