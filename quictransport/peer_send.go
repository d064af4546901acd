package quictransport

import (
	"bufio"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

// The sender: one goroutine per connection that takes its next step from
// the peer's state under m.mu (nextAction, which books what it sends) and
// writes it without the lock.

type action int

const (
	actWait    action = iota // nothing to send now
	actSend                  // send the entry
	actItem                  // send the resync item
	actJournal               // read op next from the journal
	actFlush                 // journal and flush the queued ops before sending op next
	actBye                   // drained: send Bye
	actDone                  // the slave is durable at head: close
	actResync                // the slave needs a resync: tell it and close
)

// step is the sender's next step.
type step struct {
	act  action
	e    *entry
	item queuedItem
	seq  uint64 // actJournal: the op to read
	// control: send even a large write on the control stream, because
	// resync items are in flight: they and ops must reach the slave in
	// one order.
	control bool
}

// nextAction decides the sender's next step and books what it sends.
func (p *peer) nextAction() step {
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case p.state == stateNeedsResync:
		return step{act: actResync}
	case len(p.items) > 0 && p.items[0].after < p.next:
		return p.nextItemLocked()
	case p.waitBegin:
		return step{act: actWait}
	case p.next <= m.bl.head:
		return p.nextOpLocked()
	}
	return p.drainStepLocked()
}

// nextItemLocked books the first queued resync item as sent.
func (p *peer) nextItemLocked() step {
	q := p.items[0]
	p.items[0] = queuedItem{}
	p.items = p.items[1:]
	p.itemsSent++
	p.itemFlight = append(p.itemFlight, q.size)
	return step{act: actItem, item: q, control: true}
}

// nextOpLocked books op next as sent, unless it must first be read from
// the journal, or wait for flow control or the journal's flush.
func (p *peer) nextOpLocked() step {
	m := p.m
	e, ok := m.bl.get(p.next)
	if !ok {
		if p.jr.pending == nil || p.jr.pending.seq != p.next {
			return step{act: actJournal, seq: p.next}
		}
		e = p.jr.pending
	}
	// Never more than limit bytes beyond what the slave applied: its
	// reorder buffer would refuse them.
	if p.inflightBytes+e.size > p.limit && len(p.inflight) > 0 {
		p.windowFull = true
		return step{act: actWait}
	}
	p.windowFull = false
	if !m.jn.sendableLocked(e.seq) {
		return step{act: actFlush}
	}
	p.jr.pending = nil
	p.inflight = append(p.inflight, flight{seq: e.seq, size: e.size})
	p.inflightBytes += e.size
	p.maxInflight = max(p.maxInflight, p.inflightBytes)
	p.sent = e.seq
	p.next++
	control := p.pass != nil || len(p.items) > 0 || p.itemsSent > p.itemsAcked
	return step{act: actSend, e: e, control: control}
}

// drainStepLocked is the step when every op is sent: during a drain, Bye
// and then the end once the slave is durable at the head; else wait.
func (p *peer) drainStepLocked() step {
	m := p.m
	if m.draining && p.pass == nil && len(p.items) == 0 && !p.rebase {
		if p.durable >= m.bl.head {
			return step{act: actDone}
		}
		if !p.byeSent {
			p.byeSent = true
			return step{act: actBye}
		}
	}
	return step{act: actWait}
}

// send writes ops and resync items in order: small ops and items on the
// control stream (buffered, flushed when nothing more is ready), large
// writes each on a data stream of their own, on the least busy connection
// of the session (lanes.go), at most DataStreams in flight in all.
func (p *peer) send(ctx context.Context, cancel context.CancelCauseFunc, wg *sync.WaitGroup, ls *laneSet, ctrl ctrlStream) error {
	s := &sender{p: p, ctx: ctx, cancel: cancel, wg: wg, ls: ls,
		bw: bufio.NewWriterSize(ctrl, 64<<10), sem: make(chan struct{}, p.m.cfg.DataStreams)}
	for {
		if err := s.do(p.nextAction()); err != nil {
			return err
		}
	}
}

// sender is one connection's send, for the steps nextAction decides.
type sender struct {
	p      *peer
	ctx    context.Context
	cancel context.CancelCauseFunc // ends the session: a data stream failed
	wg     *sync.WaitGroup         // the session's, for the data stream writers
	ls     *laneSet
	bw     *bufio.Writer // the control stream
	sem    chan struct{} // a token per data stream in flight
	// What the buffer holds (coalesce): since when, from which op, and
	// whether something in it must go at once.
	since    time.Time
	firstSeq uint64
	urgent   bool
}

// do takes step st; an error ends the connection.
func (s *sender) do(st step) error {
	switch st.act {
	case actSend:
		return s.op(st.e, st.control)
	case actItem:
		frame := wire.AppendFrame(nil, wire.FrameResync, st.item.body, s.p.m.cfg.Compressor)
		if _, err := s.bw.Write(frame); err != nil {
			return fmt.Errorf("send resync item: %w", err)
		}
		s.urgent = true // a pass waits for the slave's replies
	case actFlush:
		s.p.m.jn.flush()
	case actJournal:
		if err := s.flush(); err != nil {
			return err
		}
		return s.p.readJournal(s.ctx, st.seq)
	case actWait:
		if wait := s.lingerFor(); wait > 0 {
			return s.linger(wait)
		}
		if err := s.flush(); err != nil {
			return err
		}
		select {
		case <-s.p.wake:
		case <-s.ctx.Done():
			return context.Cause(s.ctx)
		}
	case actBye:
		s.bw.Write(wire.AppendFrame(nil, wire.FrameBye, nil, nil))
		if err := s.bw.Flush(); err != nil {
			return fmt.Errorf("send bye: %w", err)
		}
	case actDone:
		return ErrDrained
	case actResync:
		return s.resync()
	}
	return nil
}

// flush writes what is buffered for the control stream.
func (s *sender) flush() error {
	s.urgent, s.firstSeq = false, 0
	if err := s.bw.Flush(); err != nil {
		return fmt.Errorf("send ops: %w", err)
	}
	return nil
}

// coalesce is how long small ops may wait in the buffer for more, when
// nothing else is ready and no one waits for them: a file created through
// the mount is several ops a few microseconds apart, and sent one by one
// each would cost a QUIC packet, its encryption and its acknowledgement on
// both hosts. A writer's fsync (or, in sync mode, every op), the fence, a
// resync item and a drain send at once; in async mode the slaves are at
// most this much later.
var coalesce = time.Millisecond // a variable for the tests

// lingerFor is how much longer the buffered ops may wait: 0 to send them
// now.
func (s *sender) lingerFor() time.Duration {
	if s.bw.Buffered() == 0 || s.urgent || s.p.m.hurry.Load() >= s.firstSeq {
		return 0
	}
	return coalesce - time.Since(s.since)
}

// linger waits d, or less if anything but a new op needs the sender
// (pokeOp), and lets the loop take its next step: every op appended
// meanwhile joins the buffer then, without a wake-up each.
func (s *sender) linger(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	s.p.lingering.Store(true)
	defer s.p.lingering.Store(false)
	select {
	case <-s.p.wake:
		s.p.lingerCut.Add(1)
	case <-t.C:
	case <-s.ctx.Done():
		return context.Cause(s.ctx)
	}
	return nil
}

// buffered notes that op seq went into the control stream's buffer.
func (s *sender) buffered(seq uint64) {
	if s.firstSeq == 0 {
		s.since, s.firstSeq = time.Now(), seq
	}
}

// op sends op e: on the control stream if it is small or must keep its
// order with resync items (control), else on a data stream of its own.
func (s *sender) op(e *entry, control bool) error {
	frame := e.framed(s.p.m.cfg.Compressor)
	if !e.data || control {
		s.buffered(e.seq)
		if _, err := s.bw.Write(frame); err != nil {
			return fmt.Errorf("send op %d: %w", e.seq, err)
		}
		return nil
	}
	select {
	case s.sem <- struct{}{}:
	default:
		// All data streams busy: what is buffered should not wait.
		if err := s.flush(); err != nil {
			return err
		}
		select {
		case s.sem <- struct{}{}:
		case <-s.ctx.Done():
			return context.Cause(s.ctx)
		}
	}
	lane := s.ls.pick()
	s.wg.Go(func() {
		defer func() { <-s.sem }()
		defer lane.busy.Add(-1)
		if err := sendData(s.ctx, lane.conn, e.seq, frame); err != nil {
			if lane.n > 0 && lane.conn.Context().Err() != nil {
				// Say which lane died, not which write it cut.
				err = &laneError{n: lane.n, cause: context.Cause(lane.conn.Context())}
			}
			s.cancel(err)
		}
	})
	return nil
}

// resync tells the slave it needs a resync, and ends the connection.
func (s *sender) resync() error {
	p := s.p
	p.m.mu.Lock()
	msg, seq := p.lastErr, p.next
	p.told = true
	p.m.mu.Unlock()
	e := wire.Error{Code: wire.CodeNeedsResync, Seq: seq, Msg: msg}
	s.bw.Write(wire.AppendFrame(nil, wire.FrameError, e.Append(nil), nil))
	s.bw.Flush()
	return &resyncError{msg}
}

// sendData sends one frame on a data stream of its own.
func sendData(ctx context.Context, conn *quic.Conn, seq uint64, frame []byte) error {
	s, err := conn.OpenUniStreamSync(ctx)
	if err != nil {
		return fmt.Errorf("open data stream for op %d: %w", seq, err)
	}
	if _, err := s.Write(frame); err != nil {
		return fmt.Errorf("send op %d: %w", seq, err)
	}
	if err := s.Close(); err != nil {
		return fmt.Errorf("send op %d: %w", seq, err)
	}
	return nil
}
