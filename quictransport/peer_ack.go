package quictransport

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// The ack reader: one goroutine per connection that reads the slave's
// control frames and books them under m.mu, freeing flow-control credit
// and waking Wait and the sender.

// readAcks reads the slave's control frames until the connection ends; it
// always returns the reason.
func (p *peer) readAcks(fr *wire.FrameReader) error {
	for {
		kind, body, err := fr.Next()
		switch {
		case errors.Is(err, io.EOF):
			return errors.New("the slave closed its control stream (it is shutting down)")
		case errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrTruncated):
			return fmt.Errorf("%w: from the slave: %w", ErrProtocol, err)
		case err != nil:
			return err
		}
		switch kind {
		case wire.FrameAck:
			a, err := wire.ParseAck(body)
			if err != nil {
				return fmt.Errorf("%w: ack: %w", ErrProtocol, err)
			}
			if err := p.onAck(a); err != nil {
				return err
			}
		case wire.FrameStall:
			st, err := wire.ParseStall(body)
			if err != nil {
				return fmt.Errorf("%w: stall: %w", ErrProtocol, err)
			}
			p.onStall(st)
		case wire.FrameResyncReply:
			r, err := wire.ParseResyncReply(body)
			if err != nil {
				return fmt.Errorf("%w: resync reply: %w", ErrProtocol, err)
			}
			if err := p.onReply(r, len(body)); err != nil {
				return err
			}
		case wire.FrameError:
			return peerError(body)
		default:
			return fmt.Errorf("%w: unexpected %v frame from the slave", ErrProtocol, kind)
		}
	}
}

// onAck books an ack: frees flow-control credit, advances the slave's
// seqs, trims the backlog, wakes Wait and the sender.
func (p *peer) onAck(a wire.Ack) error {
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if a.Items > p.itemsSent || a.Items < p.itemsAcked {
		return fmt.Errorf("%w: ack for %d resync items, %d sent and %d acknowledged before", ErrProtocol, a.Items, p.itemsSent, p.itemsAcked)
	}
	itemsApplied := a.Items > p.itemsAcked
	for ; p.itemsAcked < a.Items; p.itemsAcked++ {
		p.itemsReserved -= p.itemFlight[0]
		p.itemFlight = p.itemFlight[1:]
	}
	if p.waitBegin || p.pass != nil && a.Items < p.pass.rebaseItem {
		// The slave has not reached the rebasing ResyncBegin yet: its
		// applied and durable count its old op stream.
		m.broadcastLocked()
		p.poke()
		return nil
	}
	if a.Applied > p.sent {
		return fmt.Errorf("%w: ack for op %d, only %d sent", ErrProtocol, a.Applied, p.sent)
	}
	p.landedLocked(a.Applied)
	p.appliesAgainLocked(a, itemsApplied)
	p.applied = max(p.applied, a.Applied)
	p.durable = max(p.durable, a.Durable)
	p.rate.add(m.clock.bytesThrough(p.applied), time.Now())
	p.recheckDegradedLocked()
	m.truncateDurableLocked()
	m.broadcastLocked()
	if p.windowFull || m.draining || itemsApplied {
		// Only then can an ack change the sender's next step (credit
		// for the op it holds back, a drain's end, a pass's items): a
		// wake-up per ack otherwise finds nothing to do.
		p.poke()
	}
	return nil
}

// landedLocked frees the flow-control credit of the ops in flight
// through applied.
func (p *peer) landedLocked(applied uint64) {
	n := 0
	for n < len(p.inflight) && p.inflight[n].seq <= applied {
		p.inflightBytes -= p.inflight[n].size
		n++
	}
	p.inflight = p.inflight[n:]
}

// appliesAgainLocked clears what kept the slave shown degraded or refused
// once ack a shows it applies again: an ack past its stall, or, after a
// connection it ended, any progress.
func (p *peer) appliesAgainLocked(a wire.Ack, itemsApplied bool) {
	switch {
	case p.stall != "":
		if p.stallItem > 0 && a.Items >= p.stallItem || p.stallItem == 0 && a.Applied >= p.stallSeq {
			p.cannotApply, p.refusesOp, p.stall = false, false, ""
			p.log.Info("slave applies ops again", "applied", a.Applied)
		}
	case (p.cannotApply || p.refusesOp) && (a.Applied > p.applied || itemsApplied):
		// It applies again: ops, or the items of a pass (an idle tree
		// has no op to say so).
		p.cannotApply, p.refusesOp = false, false
		p.log.Info("slave applies ops again", "applied", a.Applied)
	}
}

// onStall books a slave's report that it cannot apply an op for want of a
// resource: it is degraded (writers stop waiting for it) and keeps the
// connection, retrying; the first ack past the op ends it.
func (p *peer) onStall(st wire.Stall) {
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.stall == "" {
		what := fmt.Sprintf("op %d", st.Seq)
		if st.Item > 0 {
			what = fmt.Sprintf("resync item %d after op %d", st.Item, st.Seq)
		}
		p.log.Warn(fmt.Sprintf("slave degraded: it cannot apply ops: %s: %s; it keeps what it received and "+
			"retries, nothing is sent again", what, st.Msg), "state", "degraded")
	}
	p.stall, p.stallSeq, p.stallItem, p.cannotApply = st.Msg, st.Seq, st.Item, true
	if m.cfg.Mode != wire.ModeAsync {
		// Writers stop waiting for it now, not after --sync-timeout, and
		// until it has caught up with what they waited for meanwhile.
		p.degraded = true
	}
	p.setErrLocked(st.Msg)
	m.broadcastLocked()
}

// recheckDegradedLocked clears degraded once the slave holds what writers
// waited for and is not being resynchronised: at an ack, and when a pass
// ends (on an idle tree no ack may follow).
func (p *peer) recheckDegradedLocked() {
	if p.degraded && p.durable >= p.m.maxWaited && !p.rebase && p.stall == "" {
		p.degraded = false
		p.log.Info("slave healthy again: it caught up with what writers waited for", "durable", p.durable)
	}
}
