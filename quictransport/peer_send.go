package quictransport

import (
	"bufio"
	"context"
	"fmt"
	"sync"

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
	if p.state == stateNeedsResync {
		return step{act: actResync}
	}
	control := p.pass != nil || len(p.items) > 0 || p.itemsSent > p.itemsAcked
	if len(p.items) > 0 && p.items[0].after < p.next {
		q := p.items[0]
		p.items[0] = queuedItem{}
		p.items = p.items[1:]
		p.itemsSent++
		p.itemFlight = append(p.itemFlight, q.size)
		return step{act: actItem, item: q, control: true}
	}
	if p.waitBegin {
		return step{act: actWait}
	}
	if p.next <= m.bl.head {
		e, ok := m.bl.get(p.next)
		if !ok {
			if p.jr.pending != nil && p.jr.pending.seq == p.next {
				e = p.jr.pending
			} else {
				return step{act: actJournal, seq: p.next}
			}
		}
		// Never more than limit bytes beyond what the slave applied: its
		// reorder buffer would refuse them.
		if p.inflightBytes+e.size > p.limit && len(p.inflight) > 0 {
			return step{act: actWait}
		}
		if !m.jn.sendableLocked(e.seq) {
			// Never send an op the journal has not handed to the kernel:
			// after a kill -9 of the master, no slave is ahead of it.
			return step{act: actFlush}
		}
		p.jr.pending = nil
		p.inflight = append(p.inflight, flight{seq: e.seq, size: e.size})
		p.inflightBytes += e.size
		p.maxInflight = max(p.maxInflight, p.inflightBytes)
		p.sent = e.seq
		p.next++
		return step{act: actSend, e: e, control: control}
	}
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
func (p *peer) send(ctx context.Context, cancel context.CancelCauseFunc, wg *sync.WaitGroup, ls *laneSet, ctrl *quic.Stream) error {
	bw := bufio.NewWriterSize(ctrl, 64<<10)
	sem := make(chan struct{}, p.m.cfg.DataStreams)
	for {
		st := p.nextAction()
		switch st.act {
		case actSend:
			e := st.e
			frame := e.framed(p.m.cfg.Compressor)
			if !e.data || st.control {
				if _, err := bw.Write(frame); err != nil {
					return fmt.Errorf("send op %d: %w", e.seq, err)
				}
				continue
			}
			select {
			case sem <- struct{}{}:
			default:
				// All data streams busy: what is buffered should not wait.
				if err := bw.Flush(); err != nil {
					return fmt.Errorf("send ops: %w", err)
				}
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			}
			lane := ls.pick()
			wg.Go(func() {
				defer func() { <-sem }()
				defer lane.busy.Add(-1)
				if err := sendData(ctx, lane.conn, e.seq, frame); err != nil {
					if lane.n > 0 && lane.conn.Context().Err() != nil {
						// Say which lane died, not which write it cut.
						err = &laneError{n: lane.n, cause: context.Cause(lane.conn.Context())}
					}
					cancel(err)
				}
			})
		case actItem:
			frame := wire.AppendFrame(nil, wire.FrameResync, st.item.body, p.m.cfg.Compressor)
			if _, err := bw.Write(frame); err != nil {
				return fmt.Errorf("send resync item: %w", err)
			}
		case actFlush:
			p.m.jn.flush()
		case actJournal:
			if err := bw.Flush(); err != nil {
				return fmt.Errorf("send ops: %w", err)
			}
			if err := p.readJournal(ctx, st.seq); err != nil {
				return err
			}
		case actWait:
			if err := bw.Flush(); err != nil {
				return fmt.Errorf("send ops: %w", err)
			}
			select {
			case <-p.wake:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		case actBye:
			bw.Write(wire.AppendFrame(nil, wire.FrameBye, nil, nil))
			if err := bw.Flush(); err != nil {
				return fmt.Errorf("send bye: %w", err)
			}
		case actDone:
			return ErrDrained
		case actResync:
			p.m.mu.Lock()
			msg, seq := p.lastErr, p.next
			p.told = true
			p.m.mu.Unlock()
			e := wire.Error{Code: wire.CodeNeedsResync, Seq: seq, Msg: msg}
			bw.Write(wire.AppendFrame(nil, wire.FrameError, e.Append(nil), nil))
			bw.Flush()
			return &resyncError{msg}
		}
	}
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
