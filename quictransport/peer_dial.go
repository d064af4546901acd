package quictransport

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

// One connection to a slave, as the dial loop (peer.go) runs it: dial,
// Hello/HelloAck and the decision where the slave resumes (catchup.go
// decides whether it can), then the sender, the ack reader and the pass
// runner until the connection ends.

// connect dials once and, if the handshake succeeds, streams until the
// connection ends. streamed says whether it got that far.
func (p *peer) connect(ctx context.Context) (streamed bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	conn, err := quic.DialAddr(dctx, p.addr, p.tlsConfig(), p.m.cfg.quic)
	cancel()
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", p.addr, err)
	}
	return p.session(ctx, conn)
}

// session runs one connection: Hello/HelloAck, then the sender and the ack
// reader until either fails, ctx is done, or the drain completes.
func (p *peer) session(ctx context.Context, conn *quic.Conn) (streamed bool, err error) {
	m := p.m
	ls := newLaneSet(conn)
	m.mu.Lock()
	p.lanes = ls
	m.mu.Unlock()
	sctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	var ctrl ctrlStream
	defer func() {
		if errors.Is(err, ErrProtocol) {
			err = fmt.Errorf("slave %s: %w", peerName(conn), err) // name the culprit
		}
		cancel(err)
		code, msg := closeReason(err)
		closeConn(conn, ctrl, code, msg)
		// After the primary connection, so that the slave sees the
		// session end rather than a lost lane; before the wait, which
		// includes writes blocked on a lane.
		ls.closeLanes(code, msg)
		wg.Wait()
		p.sessionEnded(ctx, ls, err)
	}()

	ctrl, fr, err := p.handshake(sctx, conn)
	if err != nil {
		return false, err
	}
	wg.Go(func() { cancel(p.readAcks(fr)) })
	wg.Go(func() { p.runPasses(sctx, cancel) })
	m.mu.Lock()
	// Checked under m.mu, as Recheck reads p.conn: a reload either
	// happened before this check, or its Recheck sees this connection.
	if err := m.checkPeerLocked(conn); err != nil {
		m.mu.Unlock()
		cancel(err)
		return false, err
	}
	p.endSession = cancel
	p.conn, p.catchUpTo = conn, m.bl.head
	p.rate.reset()
	grant, tok := p.laneGrant, p.laneToken
	m.mu.Unlock()
	for n := 1; n < grant; n++ {
		wg.Go(func() { p.runLane(sctx, cancel, ls, conn, uint32(n), tok) })
	}
	err = p.send(sctx, cancel, &wg, ls, ctrl)
	cancel(err)
	return true, context.Cause(sctx)
}

// closeReason is the code and message a session that ended with err
// closes with.
func closeReason(err error) (wire.ErrorCode, string) {
	switch {
	case errors.Is(err, ErrDrained):
		return wire.CodeOK, "bye"
	case err == nil || errors.Is(err, context.Canceled):
		return codeOf(err), "master shutting down"
	}
	return codeOf(err), err.Error()
}

// closeConn closes the session's primary connection with code and msg,
// first telling the slave why on ctrl (nil if it was never opened) when
// it sent garbage. The sender has returned, so nothing else writes ctrl.
func closeConn(conn *quic.Conn, ctrl ctrlStream, code wire.ErrorCode, msg string) {
	if code == wire.CodeProtocol && ctrl != nil {
		e := wire.Error{Code: code, Msg: msg}
		ctrl.SetWriteDeadline(time.Now().Add(time.Second))
		ctrl.Write(wire.AppendFrame(nil, wire.FrameError, e.Append(nil), nil))
	}
	if code == wire.CodeNeedsResync {
		// Give the FrameError a chance to arrive before the close
		// (which discards what is in flight): the slave closes when it
		// reads it.
		t := time.NewTimer(closeGrace)
		select {
		case <-conn.Context().Done():
		case <-t.C:
		}
		t.Stop()
	}
	conn.CloseWithError(appCode(code), msg)
}

// sessionEnded books the end of the session on ls, which ended with err
// (ctx is the dial loop's).
func (p *peer) sessionEnded(ctx context.Context, ls *laneSet, err error) {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	sent, _, _ := ls.wireStats()
	p.wireEnded += sent
	p.endSession, p.conn, p.lanes = nil, nil, nil
	switch {
	case errors.Is(err, ErrDrained), p.state == stateStreaming && ctx.Err() != nil:
		p.setStateLocked(stateStopped)
	case p.state == stateStreaming:
		p.setStateLocked(stateConnecting)
	}
}

// handshake opens the control stream and runs the hello on it. With QUIC
// mTLS the dial succeeded before the slave checked our certificate: a
// refusal shows up here, on the first read.
func (p *peer) handshake(ctx context.Context, conn *quic.Conn) (ctrlStream, *wire.FrameReader, error) {
	ctrl, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("open control stream: %w", err)
	}
	// Control frames go ahead of bulk data in quic-go's send scheduler:
	// urgency 0, sent in stream order.
	ctrl.SetPriority(0, false)
	fr, err := p.hello(ctrl, peerName(conn))
	return ctrl, fr, err
}

// hello sends Hello on ctrl, waits for HelloAck and decides where the
// slave (named name, for the log) resumes, or that it needs a rebase pass.
func (p *peer) hello(ctrl ctrlStream, name string) (*wire.FrameReader, error) {
	m := p.m
	m.mu.Lock()
	first, head := m.firstHeldLocked(), m.bl.head
	m.mu.Unlock()
	hello := wire.Hello{Version: wire.Version, Epoch: m.cfg.Epoch, Lineage: m.cfg.Lineage, Run: m.cfg.Run,
		Mode: m.cfg.Mode, First: first, Head: head, Lanes: uint32(m.cfg.Lanes)}
	if _, err := ctrl.Write(wire.AppendFrame(nil, wire.FrameHello, hello.Append(nil), nil)); err != nil {
		return nil, fmt.Errorf("send hello: %w", err)
	}
	fr := wire.NewFrameReader(ctrl, nil)
	ack, err := readHelloAck(ctrl, fr, hello.Lanes)
	if err != nil {
		return nil, err
	}
	limit := min(int64(min(ack.MaxPending, math.MaxInt64)), m.ownLimit)
	if limit < wire.MaxFrameLen {
		return nil, fmt.Errorf("%w: the slave buffers only %d bytes, below one frame (%d)", ErrProtocol, limit, wire.MaxFrameLen)
	}

	m.mu.Lock()
	why := m.rebaseReasonLocked(ack)
	if why != "" && m.tree == nil {
		// Without a tree nothing can bring the slave back.
		msg := p.cannotResumeLocked(ack, why)
		m.mu.Unlock()
		e := wire.Error{Code: wire.CodeNeedsResync, Seq: ack.Applied + 1, Msg: msg}
		ctrl.Write(wire.AppendFrame(nil, wire.FrameError, e.Append(nil), nil))
		return nil, &resyncError{msg}
	}
	err = p.adoptLocked(ack, limit, why != "")
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	p.logConnected(name, ack, why, first, head, limit)
	return fr, nil
}

// readHelloAck reads the slave's answer to a Hello that asked for lanes,
// under helloTimeout.
func readHelloAck(ctrl ctrlStream, fr *wire.FrameReader, lanes uint32) (wire.HelloAck, error) {
	ctrl.SetReadDeadline(time.Now().Add(helloTimeout))
	// A slave older than lanes reads the Hello's lanes field as garbage.
	lanesHint := ""
	if lanes > 1 {
		lanesHint = fmt.Sprintf(" (this master asks for %d lanes: is the slave older than --lanes? try --lanes 1)", lanes)
	}
	kind, body, err := fr.Next()
	if err != nil {
		if errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrTruncated) {
			err = fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if code, ok := remoteCode(err); ok && code == wire.CodeProtocol {
			err = fmt.Errorf("%w%s", err, lanesHint)
		}
		return wire.HelloAck{}, fmt.Errorf("waiting for hello-ack: %w", err)
	}
	switch kind {
	case wire.FrameHelloAck:
	case wire.FrameError:
		err := peerError(body)
		if pe, ok := errors.AsType[*PeerError](err); ok && pe.Code == wire.CodeProtocol {
			pe.Msg += lanesHint
		}
		return wire.HelloAck{}, err
	default:
		return wire.HelloAck{}, fmt.Errorf("%w: %v frame instead of hello-ack", ErrProtocol, kind)
	}
	ack, err := wire.ParseHelloAck(body)
	if err != nil {
		return wire.HelloAck{}, fmt.Errorf("%w: hello-ack: %w", ErrProtocol, err)
	}
	ctrl.SetReadDeadline(time.Time{})
	return ack, nil
}

// cannotResumeLocked marks a slave that cannot resume, with no tree to
// resync it from, as needing a resync, and returns what to tell it.
func (p *peer) cannotResumeLocked(ack wire.HelloAck, why string) string {
	p.applied, p.durable = ack.Applied, ack.Durable
	p.needsResyncLocked(ack.Applied, why)
	p.told = true
	return p.lastErr
}

// adoptLocked starts the connection from what the slave announced in its
// HelloAck: its bound, policy and lanes, and where it resumes (after its
// applied op, or, with rebase, where its pass's ResyncBegin will say).
func (p *peer) adoptLocked(ack wire.HelloAck, limit int64, rebase bool) error {
	m := p.m
	p.limit = limit
	if !p.policyKnown || p.policy != ack.Policy {
		p.policy, p.policyKnown = ack.Policy, true
		if m.cfg.OnPolicy != nil {
			m.cfg.OnPolicy(p.addr, ack.Policy)
		}
	}
	p.laneGrant, p.laneToken = max(1, int(ack.Lanes)), ack.LaneToken
	if p.laneGrant > m.cfg.Lanes {
		return fmt.Errorf("%w: the slave grants %d lanes, %d asked", ErrProtocol, p.laneGrant, m.cfg.Lanes)
	}
	if m.cfg.Lanes > 1 && p.laneGrant < m.cfg.Lanes {
		p.log.Info(fmt.Sprintf("the slave grants %d of the %d lanes asked (its --max-lanes)", p.laneGrant, m.cfg.Lanes))
	}
	p.resetConnLocked()
	p.resumeLocked(ack, rebase)
	p.setStateLocked(stateStreaming)
	return nil
}

// resetConnLocked forgets what belonged to the previous connection: what
// was in flight, the items (counted per connection), the errors logged.
func (p *peer) resetConnLocked() {
	p.inflight, p.inflightBytes, p.byeSent = nil, 0, false
	p.items, p.itemsSent, p.itemsAcked, p.itemFlight, p.itemsReserved = nil, 0, 0, nil, 0
	if p.stallItem > 0 {
		// Items count per connection, and the pass starts over.
		p.stall, p.stallItem, p.cannotApply = "", 0, false
	}
	p.loggedErr, p.resyncLogged, p.told = "", false, false
	p.jr.close()
	p.known = true
}

// resumeLocked sets where the slave's op stream goes on, and whether it
// holds writers back meanwhile.
func (p *peer) resumeLocked(ack wire.HelloAck, rebase bool) {
	m := p.m
	if rebase {
		// Send nothing until the pass's ResyncBegin says where the
		// slave's op stream restarts.
		p.rebase, p.waitBegin = true, true
		p.applied, p.durable = 0, 0
		p.next, p.sent = 0, 0
	} else {
		p.rebase, p.waitBegin = false, false
		p.applied, p.durable = ack.Applied, ack.Durable
		p.next, p.sent = ack.Applied+1, ack.Applied
	}
	if m.cfg.Mode != wire.ModeAsync && (p.durable < m.maxWaited || p.rebase) && !p.degraded {
		// Writers already waited for ops this slave lacks: it catches up
		// before it holds them back again.
		p.degraded = true
		if p.durable < m.maxWaited {
			// (A slave being compared with nothing waited for holds
			// no writer back: its pass says what happens.)
			p.log.Warn("slave degraded until it catches up", "durable", p.durable, "waited_for", m.maxWaited)
		}
	}
}

// logConnected says how the slave named name resumes, or why it is
// resynchronised.
func (p *peer) logConnected(name string, ack wire.HelloAck, why string, first, head uint64, limit int64) {
	if why != "" {
		p.log.Warn("slave connected: it needs a resync ("+why+"); comparing trees while live ops flow",
			"peer", name, "slave_applied", ack.Applied, "slave_durable", ack.Durable, "max_pending", limit)
		return
	}
	src := "memory"
	if ack.Applied+1 < first || ack.Applied+1 < p.m.memFirst() {
		src = "journal"
	}
	p.log.Info("slave connected: resuming", "peer", name, "from_seq", ack.Applied+1, "head", head,
		"catch_up_ops", head-ack.Applied, "from", src, "slave_durable", ack.Durable, "max_pending", limit)
}

// peerName names the other end of conn: address and certificate CN.
func peerName(conn *quic.Conn) string {
	return fmt.Sprintf("%s (CN %q)", conn.RemoteAddr(), peerCN(conn))
}

// peerCN is the common name of the peer's certificate, "?" if none.
func peerCN(conn *quic.Conn) string {
	if pc := conn.ConnectionState().TLS.PeerCertificates; len(pc) > 0 {
		return pc[0].Subject.CommonName
	}
	return "?"
}
