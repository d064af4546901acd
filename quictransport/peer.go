package quictransport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

type peerState int

const (
	stateConnecting peerState = iota
	stateStreaming
	stateNeedsResync // only without a Tree: nothing can bring the slave back
	stateFenced      // the slave refuses this master (epoch): redialed slowly
	stateStopped
)

func (s peerState) String() string {
	switch s {
	case stateConnecting:
		return "connecting"
	case stateStreaming:
		return "streaming"
	case stateNeedsResync:
		return "needs-resync"
	case stateFenced:
		return "fenced"
	case stateStopped:
		return "stopped"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// peer is one slave seen from the master: a dial loop, and while connected
// a sender (control stream + data streams) and an ack reader.
type peer struct {
	m       *Master
	addr    string
	tls     *tls.Config
	tlsFunc func() *tls.Config
	log     *slog.Logger
	// wake is poked by Append, acks, Drain and state changes; the sender
	// waits on it when it has nothing to send.
	wake chan struct{}
	// cancel stops the dial loop, done is closed when it has (set by
	// Master.startLocked under m.mu; RemovePeer uses them).
	cancel context.CancelFunc
	done   chan struct{}

	// Guarded by m.mu.
	state    peerState
	degraded bool
	// known: the slave reported where it stands during this run, so it
	// holds the journal from durable+1 only (an unknown one holds it all).
	known   bool
	applied uint64 // acknowledged
	durable uint64
	sent    uint64 // highest seq handed to QUIC on this connection
	next    uint64 // next seq to send on this connection
	limit   int64  // bytes allowed in flight (beyond the acked applied seq)
	// policy is what the slave last announced it holds (policyKnown).
	policy      wire.Policy
	policyKnown bool
	// inflight lists the ops sent and not yet acknowledged as applied.
	inflight      []flight
	inflightBytes int64
	maxInflight   int64 // highest inflightBytes seen (tests check the bound)
	byeSent       bool
	told          bool // the slave was told it needs a resync
	resyncLogged  bool
	lastErr       string
	lastErrAt     time.Time
	loggedErr     string // last distinct error logged

	// For status (stats.go), guarded by m.mu: the current connection, how
	// fast the slave applies, and the head when it connected (until it
	// reaches it, it is catching up).
	conn      *quic.Conn
	rate      rateWindow
	catchUpTo uint64
	// lanes is the current session's connections (lanes.go), from its
	// dial to its end; wireEnded the bytes sent on connections of
	// sessions that ended (QUIC ConnectionStats.BytesSent).
	lanes     *laneSet
	wireEnded uint64
	// The lanes the slave granted in its HelloAck (1: none), and the
	// token that binds them to the session.
	laneGrant int
	laneToken wire.LaneToken
	// cannotApply: the slave's last connection ended because it could not
	// apply an op (its disk full or read-only, say); it is shown degraded
	// until it applies ops again. refusesOp: it refused this master (its
	// certificate, checked again at the hello) or a bound of the slave was
	// exceeded; it is shown refused until it applies ops again. (A slave
	// leaves out of its replica what its policy does not hold, and asks
	// for a comparison: it never refuses an op.)
	cannotApply bool
	refusesOp   bool
	// stall is why the slave cannot apply op stallSeq (a wire.Stall: its
	// disk full, say), "" when it can: the cause status shows first. It
	// lasts until an ack covers stallSeq (an ack of earlier ops may
	// arrive after the Stall), or a rebase restarts the op stream.
	stall     string
	stallSeq  uint64
	stallItem uint64 // a stall on a resync item: its number (Ack.Items counts them)

	// Resync (peer_resync.go).
	rebase    bool  // the slave's tree is of unknown state: it needs a rebase pass
	fullNext  bool  // the next rebase pass compares every file's contents (Master.Resync)
	waitBegin bool  // send no op until the rebase pass's ResyncBegin sets next
	check     bool  // one comparison pass is owed (CheckAll)
	checked   bool  // a comparison pass completed during this run
	pass      *pass // the running pass, nil if none
	passes    uint64
	verifies  []*verifyReq
	// Items queued (positioned after seq .after), and the sizes of those
	// sent and not yet acknowledged (Ack.Items), oldest first.
	items         []queuedItem
	itemsSent     uint64
	itemsAcked    uint64
	itemFlight    []int64
	itemsReserved int64
	// pending is an entry read from the journal that flow control held.
	jr      journalReader
	passErr string
	// endSession ends the current connection (nil when none).
	endSession context.CancelCauseFunc
}

type queuedItem struct {
	after uint64
	body  []byte // FrameResync body
	size  int64  // reserved
}

type flight struct {
	seq  uint64
	size int64
}

func newPeer(m *Master, p Peer) *peer {
	q := &peer{
		m:       m,
		addr:    p.Addr,
		tls:     p.TLS,
		tlsFunc: p.TLSFunc,
		log:     m.log.With("slave", p.Addr),
		wake:    make(chan struct{}, 1),
	}
	if q.tls == nil && q.tlsFunc != nil {
		q.tls = q.tlsFunc() // for the name it checks, in Status
	}
	return q
}

// tlsConfig is the configuration for the next dial.
func (p *peer) tlsConfig() *tls.Config {
	if p.tlsFunc != nil {
		return p.tlsFunc()
	}
	return p.tls
}

func (p *peer) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// stateName is the state as Status reports it. Called with m.mu held.
func (p *peer) stateName() string {
	if p.state == stateStreaming || p.state == stateConnecting {
		switch {
		case p.refusesOp:
			return "refused"
		case p.cannotApply:
			return "degraded"
		}
	}
	if p.state == stateStreaming {
		switch {
		case p.rebase:
			return "resyncing"
		case p.pass != nil && p.pass.opts.Verify:
			return "verifying"
		case p.pass != nil:
			return "checking"
		case p.degraded:
			return "degraded"
		}
	}
	return p.state.String()
}

// setStateLocked changes the state and logs the change once.
func (p *peer) setStateLocked(s peerState) {
	if p.state == s {
		return
	}
	p.log.Info("slave state: "+s.String(), "was", p.state.String())
	p.state = s
	p.m.broadcastLocked()
}

// loop dials the slave until ctx is done, the drain is over for it, or it
// was told it needs a resync.
func (p *peer) loop(ctx context.Context) {
	backoff := minBackoff
	var lastDiverged time.Time
	for !p.finished(ctx) {
		p.m.mu.Lock()
		before := p.applied
		p.m.mu.Unlock()
		streamed, err := p.connect(ctx)
		if errors.Is(err, ErrDrained) {
			p.m.mu.Lock()
			p.setStateLocked(stateStopped)
			p.m.mu.Unlock()
			return
		}
		if ctx.Err() != nil {
			continue // finished() stops
		}
		p.m.mu.Lock()
		progressed := p.applied > before
		p.m.mu.Unlock()
		if streamed && progressed {
			// Only a session that got ops applied resets the backoff: a
			// slave that fails at once on every connection (disk full,
			// an op it cannot apply) is redialed ever more slowly.
			backoff = minBackoff
		}
		diverged := false
		if msg, ok := slaveNeedsResync(err); ok {
			// The slave itself says it cannot go on from where it is
			// (its tree differs from ours, or it lost state it needs):
			// proof of divergence, never a reason to wait. It is
			// redialed at once and compared.
			p.m.mu.Lock()
			if p.m.tree == nil {
				// Nothing can bring it back: retrying cannot help.
				p.told = true
				p.needsResyncLocked(p.applied, "the slave reports: "+msg)
				p.m.mu.Unlock()
				continue
			}
			p.rebase, diverged = true, true
			p.setErrLocked("needs resync: " + msg)
			p.log.Warn("the slave's tree differs from this master's: resynchronising it (comparing trees while live "+
				"ops flow): "+msg, "state", "resyncing")
			p.m.mu.Unlock()
			if time.Since(lastDiverged) > divergedRedial {
				// Compared at once. A slave that keeps diverging
				// (every pass ends, and an op fails again) backs off
				// like any other failure instead of being compared in
				// a tight loop.
				backoff = minBackoff
			}
			lastDiverged = time.Now()
		}
		if msg, ok := slaveFenced(err); ok {
			// Another master's slave, or one that follows a newer epoch
			// of ours (a promoted slave took over): never feed it. Keep
			// asking, slowly, in case an operator resets it.
			p.m.mu.Lock()
			if p.state != stateFenced {
				p.log.Error("the slave refuses this master (fenced): "+msg, "state", "fenced")
				p.setErrLocked("fenced: " + msg)
				p.setStateLocked(stateFenced)
			}
			p.m.mu.Unlock()
			backoff = maxBackoff
		}
		if msg, ok := slaveCannotApply(err); ok {
			p.m.mu.Lock()
			if !p.cannotApply {
				p.cannotApply = true
				p.log.Warn("slave degraded: it cannot apply ops (is its disk full or read-only?); retrying, "+
					"the journal keeps what it lacks", "reason", msg)
				p.m.broadcastLocked()
			}
			p.m.mu.Unlock()
		}
		if msg, ok := slaveRefusesOp(err); ok {
			p.m.mu.Lock()
			if !p.refusesOp {
				p.refusesOp = true
				p.log.Error("the slave refuses this master; retrying, the journal keeps what it lacks, until "+
					"the slave's or this master's configuration changes", "reason", msg)
				p.m.broadcastLocked()
			}
			p.m.mu.Unlock()
		}
		if _, fenced := slaveFenced(err); !fenced && !diverged {
			p.noteError(err)
		}
		p.m.mu.Lock()
		if p.state == stateStreaming {
			p.setStateLocked(stateConnecting)
		}
		var drainCh <-chan struct{}
		if !p.m.draining {
			// Wake once when the drain starts: a slave that is durable
			// already need not be redialed.
			drainCh = p.m.drainCh
		}
		p.m.mu.Unlock()
		// Exponential backoff with jitter, so slaves that restart together
		// are not redialed in lockstep.
		d := backoff/2 + rand.N(backoff)
		backoff = min(2*backoff, maxBackoff)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-drainCh:
		}
		t.Stop()
	}
}

// finished reports whether loop should stop, setting the final state.
func (p *peer) finished(ctx context.Context) bool {
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case p.state == stateNeedsResync:
		// Keep dialing only to tell the slave (a slave marked while
		// disconnected), unless shutting down.
		return p.told || ctx.Err() != nil
	case ctx.Err() != nil:
		p.setStateLocked(stateStopped)
		return true
	case m.draining && p.durable >= m.bl.head && !p.rebase && p.pass == nil:
		p.setStateLocked(stateStopped)
		return true
	case m.draining && (p.state == stateFenced || !p.known):
		// Nothing to deliver to a slave that refuses us, and one that
		// never came cannot be waited for.
		return false
	}
	return false
}

// noteError records err for Status and logs it if it differs from the last
// one logged, so a slave that stays away costs one log line, not one per
// attempt.
// setErrLocked records the slave's last error, and when.
func (p *peer) setErrLocked(msg string) {
	p.lastErr, p.lastErrAt = msg, time.Now()
}

func (p *peer) noteError(err error) {
	if err == nil {
		return
	}
	msg := explain(err)
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	if errors.Is(err, wire.ErrNeedsResync) {
		return // needsResyncLocked logged it and set lastErr
	}
	p.setErrLocked(msg)
	if msg != p.loggedErr {
		p.loggedErr = msg
		p.log.Warn("slave connection failed: "+msg, "state", p.stateName())
	}
}

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
	var ctrl *quic.Stream
	defer func() {
		if errors.Is(err, ErrProtocol) {
			err = fmt.Errorf("slave %s: %w", peerName(conn), err) // name the culprit
		}
		cancel(err)
		code, msg := codeOf(err), ""
		switch {
		case errors.Is(err, ErrDrained):
			code, msg = wire.CodeOK, "bye"
		case err == nil || errors.Is(err, context.Canceled):
			msg = "master shutting down"
		default:
			msg = err.Error()
		}
		if code == wire.CodeProtocol && ctrl != nil {
			// The slave sent garbage: tell it why before closing. The
			// sender has returned, so nothing else writes the stream.
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
		// After the primary connection, so that the slave sees the
		// session end rather than a lost lane; before the wait, which
		// includes writes blocked on a lane.
		ls.closeLanes(code, msg)
		wg.Wait()
		m.mu.Lock()
		sent, _, _ := ls.wireStats()
		p.wireEnded += sent
		p.endSession, p.conn, p.lanes = nil, nil, nil
		switch {
		case errors.Is(err, ErrDrained), p.state == stateStreaming && ctx.Err() != nil:
			p.setStateLocked(stateStopped)
		case p.state == stateStreaming:
			p.setStateLocked(stateConnecting)
		}
		m.mu.Unlock()
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

// handshake sends Hello, waits for HelloAck and decides where the slave
// resumes, or that it needs a rebase pass. With QUIC mTLS the dial
// succeeded before the slave checked our certificate: a refusal shows up
// here, on the first read.
func (p *peer) handshake(ctx context.Context, conn *quic.Conn) (*quic.Stream, *wire.FrameReader, error) {
	m := p.m
	ctrl, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("open control stream: %w", err)
	}
	// Control frames go ahead of bulk data in the sender's scheduler
	// (quic-go PR #5774): urgency 0, sent in stream order.
	ctrl.SetPriority(0, false)
	m.mu.Lock()
	first, head := m.firstHeldLocked(), m.bl.head
	m.mu.Unlock()
	hello := wire.Hello{Version: wire.Version, Epoch: m.cfg.Epoch, Lineage: m.cfg.Lineage, Run: m.cfg.Run,
		Mode: m.cfg.Mode, First: first, Head: head, Lanes: uint32(m.cfg.Lanes)}
	if _, err := ctrl.Write(wire.AppendFrame(nil, wire.FrameHello, hello.Append(nil), nil)); err != nil {
		return ctrl, nil, fmt.Errorf("send hello: %w", err)
	}
	ctrl.SetReadDeadline(time.Now().Add(helloTimeout))
	fr := wire.NewFrameReader(ctrl, nil)
	// A slave older than lanes reads the Hello's lanes field as garbage.
	lanesHint := ""
	if hello.Lanes > 1 {
		lanesHint = fmt.Sprintf(" (this master asks for %d lanes: is the slave older than --lanes? try --lanes 1)", hello.Lanes)
	}
	kind, body, err := fr.Next()
	if err != nil {
		if errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrTruncated) {
			err = fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if code, ok := remoteCode(err); ok && code == wire.CodeProtocol {
			err = fmt.Errorf("%w%s", err, lanesHint)
		}
		return ctrl, nil, fmt.Errorf("waiting for hello-ack: %w", err)
	}
	switch kind {
	case wire.FrameHelloAck:
	case wire.FrameError:
		err := peerError(body)
		if pe, ok := errors.AsType[*PeerError](err); ok && pe.Code == wire.CodeProtocol {
			pe.Msg += lanesHint
		}
		return ctrl, nil, err
	default:
		return ctrl, nil, fmt.Errorf("%w: %v frame instead of hello-ack", ErrProtocol, kind)
	}
	ack, err := wire.ParseHelloAck(body)
	if err != nil {
		return ctrl, nil, fmt.Errorf("%w: hello-ack: %w", ErrProtocol, err)
	}
	ctrl.SetReadDeadline(time.Time{})
	limit := min(int64(min(ack.MaxPending, math.MaxInt64)), m.ownLimit)
	if limit < wire.MaxFrameLen {
		return ctrl, nil, fmt.Errorf("%w: the slave buffers only %d bytes, below one frame (%d)", ErrProtocol, limit, wire.MaxFrameLen)
	}

	m.mu.Lock()
	why := m.rebaseReasonLocked(ack)
	if why != "" && m.tree == nil {
		// Without a tree nothing can bring the slave back.
		p.applied, p.durable = ack.Applied, ack.Durable
		p.needsResyncLocked(ack.Applied, why)
		p.told = true
		msg := p.lastErr
		m.mu.Unlock()
		e := wire.Error{Code: wire.CodeNeedsResync, Seq: ack.Applied + 1, Msg: msg}
		ctrl.Write(wire.AppendFrame(nil, wire.FrameError, e.Append(nil), nil))
		return ctrl, nil, &resyncError{msg}
	}
	p.limit = limit
	if !p.policyKnown || p.policy != ack.Policy {
		p.policy, p.policyKnown = ack.Policy, true
		if m.cfg.OnPolicy != nil {
			m.cfg.OnPolicy(p.addr, ack.Policy)
		}
	}
	p.laneGrant, p.laneToken = max(1, int(ack.Lanes)), ack.LaneToken
	if p.laneGrant > m.cfg.Lanes {
		m.mu.Unlock()
		return ctrl, nil, fmt.Errorf("%w: the slave grants %d lanes, %d asked", ErrProtocol, p.laneGrant, m.cfg.Lanes)
	}
	if m.cfg.Lanes > 1 && p.laneGrant < m.cfg.Lanes {
		p.log.Info(fmt.Sprintf("the slave grants %d of the %d lanes asked (its --max-lanes)", p.laneGrant, m.cfg.Lanes))
	}
	p.inflight, p.inflightBytes, p.byeSent = nil, 0, false
	p.items, p.itemsSent, p.itemsAcked, p.itemFlight, p.itemsReserved = nil, 0, 0, nil, 0
	if p.stallItem > 0 {
		// Items count per connection, and the pass starts over.
		p.stall, p.stallItem, p.cannotApply = "", 0, false
	}
	p.loggedErr, p.resyncLogged, p.told = "", false, false
	p.jr.close()
	p.known = true
	if why != "" {
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
	p.setStateLocked(stateStreaming)
	m.mu.Unlock()
	if why != "" {
		p.log.Warn("slave connected: it needs a resync ("+why+"); comparing trees while live ops flow",
			"peer", peerName(conn), "slave_applied", ack.Applied, "slave_durable", ack.Durable, "max_pending", limit)
	} else {
		src := "memory"
		if ack.Applied+1 < first || ack.Applied+1 < m.memFirst() {
			src = "journal"
		}
		p.log.Info("slave connected: resuming", "peer", peerName(conn), "from_seq", ack.Applied+1, "head", head,
			"catch_up_ops", head-ack.Applied, "from", src, "slave_durable", ack.Durable, "max_pending", limit)
	}
	return ctrl, fr, nil
}

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
	n := 0
	for n < len(p.inflight) && p.inflight[n].seq <= a.Applied {
		p.inflightBytes -= p.inflight[n].size
		n++
	}
	p.inflight = p.inflight[n:]
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
	p.applied = max(p.applied, a.Applied)
	p.durable = max(p.durable, a.Durable)
	p.rate.add(m.clock.bytesThrough(p.applied), time.Now())
	p.recheckDegradedLocked()
	m.truncateDurableLocked()
	m.broadcastLocked()
	p.poke()
	return nil
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

// slaveCannotApply reports whether err is the slave saying it could not
// apply an op (CodeApply), and its reason.
func slaveCannotApply(err error) (string, bool) { return slaveClosedWith(err, wire.CodeApply) }

// slaveRefusesOp reports whether err is the slave refusing an op by its
// policy or bounds (CodeRefused, CodeLimit), and its reason.
func slaveRefusesOp(err error) (string, bool) {
	if msg, ok := slaveClosedWith(err, wire.CodeRefused); ok {
		return msg, true
	}
	return slaveClosedWith(err, wire.CodeLimit)
}

// slaveClosedWith reports whether err is the slave closing the connection
// with code, by a FrameError or by the code of its QUIC close, and its
// reason.
func slaveClosedWith(err error, code wire.ErrorCode) (string, bool) {
	if pe, ok := errors.AsType[*PeerError](err); ok && pe.Code == code {
		return pe.Msg, true
	}
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && ae.Remote &&
		wire.ErrorCode(ae.ErrorCode) == code {
		return ae.ErrorMessage, true
	}
	return "", false
}

// slaveFenced reports whether err is the slave refusing this master's
// epoch, and its reason.
func slaveFenced(err error) (string, bool) {
	if pe, ok := errors.AsType[*PeerError](err); ok && pe.Code == wire.CodeFenced {
		return pe.Msg, true
	}
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && ae.Remote &&
		wire.ErrorCode(ae.ErrorCode) == wire.CodeFenced {
		return ae.ErrorMessage, true
	}
	return "", false
}

// remoteCode is the code of the peer's QUIC close in err, if err is one.
func remoteCode(err error) (wire.ErrorCode, bool) {
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && ae.Remote {
		return wire.ErrorCode(ae.ErrorCode), true
	}
	return 0, false
}

// peerError decodes a FrameError body into a *PeerError.
func peerError(body []byte) error {
	e, err := wire.ParseError(body)
	if err != nil {
		return fmt.Errorf("%w: error frame: %w", ErrProtocol, err)
	}
	return &PeerError{Code: e.Code, Seq: e.Seq, Msg: e.Msg}
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

// policyString is the slave's announced policy, "" before it announced
// one. m.mu is held.
func (p *peer) policyString() string {
	if !p.policyKnown {
		return ""
	}
	return p.policy.String()
}
