package quictransport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
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

// peer is one slave seen from the master: a dial loop (loop, and per
// connection session, peer_dial.go), and while connected a sender
// (peer_send.go), an ack reader (peer_ack.go) and a pass runner
// (peer_resync.go). Its state is in groups by owner below; every group is
// guarded by m.mu (one lock, because Append, Wait and acks read several
// groups of every peer together with the backlog).
type peer struct {
	// Set by newPeer, then read only.
	m       *Master
	addr    string
	tls     *tls.Config
	tlsFunc func() *tls.Config
	log     *slog.Logger
	// wake is poked by Append, acks, Drain and state changes; the sender
	// waits on it when it has nothing to send.
	wake chan struct{}
	// lingering: the sender holds small ops back for more (linger) and
	// takes every op ready when that ends, so Append does not wake it
	// (pokeOp); a waiting writer still does (Master.hurryLocked).
	lingering atomic.Bool
	lingerCut atomic.Int64 // wake-ups that ended a linger early (for tests)
	// cancel stops the dial loop, done is closed when it has (set by
	// Master.startLocked under m.mu; RemovePeer uses them).
	cancel context.CancelFunc
	done   chan struct{}

	peerHealth
	peerFlow
	peerLink
	peerPasses

	// jr is the sender's alone (its pending entry is read under m.mu).
	jr journalReader
}

// peerHealth is how the slave is doing, for Status and for Wait: written
// by the dial loop (state, errors), the handshake, the ack reader (stalls
// and their end) and Master.Wait (degraded). Guarded by m.mu.
type peerHealth struct {
	state    peerState
	degraded bool
	// policy is what the slave last announced it holds (policyKnown).
	policy       wire.Policy
	policyKnown  bool
	told         bool // the slave was told it needs a resync
	resyncLogged bool
	lastErr      string
	lastErrAt    time.Time
	loggedErr    string // last distinct error logged
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
}

// peerFlow is where the slave stands and what is in flight to it: the
// handshake sets it for each connection, then the sender books what it
// sends (next, sent, inflight, byeSent) and the ack reader what the slave
// acknowledged (applied, durable, and the credit it frees). Guarded by
// m.mu.
type peerFlow struct {
	// known: the slave reported where it stands during this run, so it
	// holds the journal from durable+1 only (an unknown one holds it all).
	known   bool
	applied uint64 // acknowledged
	durable uint64
	sent    uint64 // highest seq handed to QUIC on this connection
	next    uint64 // next seq to send on this connection
	limit   int64  // bytes allowed in flight (beyond the acked applied seq)
	// inflight lists the ops sent and not yet acknowledged as applied.
	inflight      []flight
	inflightBytes int64
	maxInflight   int64 // highest inflightBytes seen (tests check the bound)
	// windowFull: the sender waits for an ack to free credit (the only
	// wait of the sender an ack ends, besides a drain's).
	windowFull bool
	byeSent    bool
	// How fast the slave applies (the ack reader adds to it), for status.
	rate rateWindow
}

// peerLink is the current connection: written by the dial loop's
// goroutine as a session starts and ends (session, peer_dial.go), read by
// Status and Recheck (stats.go). Guarded by m.mu.
type peerLink struct {
	conn *quic.Conn
	// catchUpTo is the head when it connected: until the slave reaches
	// it, it is catching up.
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
	// endSession ends the current connection (nil when none).
	endSession context.CancelCauseFunc
}

// peerPasses is the slave's resync passes (peer_resync.go): written by
// the pass runner and the Tree's Emit (items), the sender (which takes
// items), the ack reader (which counts their acks), the handshake, and
// StartResync and Verify (which ask for passes). Guarded by m.mu.
type peerPasses struct {
	rebase    bool  // the slave's tree is of unknown state: it needs a rebase pass
	fullNext  bool  // the next rebase pass compares every file's contents (Master.StartResync)
	waitBegin bool  // send no op until the rebase pass's ResyncBegin sets next
	check     bool  // one comparison pass is owed (CheckAll)
	checked   bool  // a comparison pass completed during this run
	pass      *pass // the running pass, nil if none
	passes    uint64
	verifies  []*verifyReq
	passErr   string
	// Items queued (positioned after seq .after), and the sizes of those
	// sent and not yet acknowledged (Ack.Items), oldest first.
	items         []queuedItem
	itemsSent     uint64
	itemsAcked    uint64
	itemFlight    []int64
	itemsReserved int64
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

// pokeOp tells the sender a new op is ready: a wake-up, unless it is
// lingering. (Append pushes the op under m.mu before it looks, and the
// sender clears lingering before it looks for ops under m.mu, so an op is
// never left behind.)
func (p *peer) pokeOp() {
	if !p.lingering.Load() {
		p.poke()
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
		end := p.sessionFailed(err)
		switch {
		case end.given:
			continue
		case end.diverged:
			if time.Since(lastDiverged) > divergedRedial {
				// Compared at once. A slave that keeps diverging
				// (every pass ends, and an op fails again) backs off
				// like any other failure instead of being compared in
				// a tight loop.
				backoff = minBackoff
			}
			lastDiverged = time.Now()
		}
		if end.fenced {
			backoff = maxBackoff
		}
		p.pause(ctx, backoff)
		backoff = min(2*backoff, maxBackoff)
	}
}

// sessionEnd is what a session's error says of the slave.
type sessionEnd struct {
	given    bool // it needs a resync and nothing can bring it back
	diverged bool // its tree differs from ours: it is compared
	fenced   bool // it refuses this master
}

// sessionFailed books why a session ended with err.
func (p *peer) sessionFailed(err error) sessionEnd {
	var end sessionEnd
	if msg, ok := slaveNeedsResync(err); ok {
		// The slave itself says it cannot go on from where it is (its
		// tree differs from ours, or it lost state it needs): proof of
		// divergence, never a reason to wait. It is redialed at once and
		// compared.
		if end.given = p.diverged(msg); end.given {
			return end
		}
		end.diverged = true
	}
	if msg, ok := slaveFenced(err); ok {
		// Another master's slave, or one that follows a newer epoch of
		// ours (a promoted slave took over): never feed it. Keep asking,
		// slowly, in case an operator resets it.
		p.fenced(msg)
		end.fenced = true
	}
	if msg, ok := slaveCannotApply(err); ok {
		p.flag(&p.cannotApply, func() {
			p.log.Warn("slave degraded: it cannot apply ops (is its disk full or read-only?); retrying, "+
				"the journal keeps what it lacks", "reason", msg)
		})
	}
	if msg, ok := slaveRefusesOp(err); ok {
		p.flag(&p.refusesOp, func() {
			p.log.Error("the slave refuses this master; retrying, the journal keeps what it lacks, until "+
				"the slave's or this master's configuration changes", "reason", msg)
		})
	}
	if !end.fenced && !end.diverged {
		p.noteError(err)
	}
	return end
}

// diverged books the slave's report that it needs a resync (msg): it is
// rebased, or, with no tree to resync it from, given up on (reported
// true).
func (p *peer) diverged(msg string) bool {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	if p.m.tree == nil {
		// Nothing can bring it back: retrying cannot help.
		p.told = true
		p.needsResyncLocked(p.applied, "the slave reports: "+msg)
		return true
	}
	p.rebase = true
	p.setErrLocked("needs resync: " + msg)
	p.log.Warn("the slave's tree differs from this master's: resynchronising it (comparing trees while live "+
		"ops flow): "+msg, "state", "resyncing")
	return false
}

// fenced books the slave's refusal of this master's epoch (msg).
func (p *peer) fenced(msg string) {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	if p.state != stateFenced {
		p.log.Error("the slave refuses this master (fenced): "+msg, "state", "fenced")
		p.setErrLocked("fenced: " + msg)
		p.setStateLocked(stateFenced)
	}
}

// flag sets *f, a health flag, under m.mu; when it was not set, it says so
// (say) and wakes the waiters.
func (p *peer) flag(f *bool, say func()) {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	if !*f {
		*f = true
		say()
		p.m.broadcastLocked()
	}
}

// pause waits before the next dial: about backoff, with jitter so slaves
// that restart together are not redialed in lockstep, and no longer than
// until ctx is done or the drain starts.
func (p *peer) pause(ctx context.Context, backoff time.Duration) {
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
	t := time.NewTimer(backoff/2 + rand.N(backoff))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-drainCh:
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

// setErrLocked records the slave's last error, and when.
func (p *peer) setErrLocked(msg string) {
	p.lastErr, p.lastErrAt = msg, time.Now()
}

// noteError records err for Status and logs it if it differs from the last
// one logged, so a slave that stays away costs one log line, not one per
// attempt.
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

// policyString is the slave's announced policy, "" before it announced
// one. m.mu is held.
func (p *peer) policyString() string {
	if !p.policyKnown {
		return ""
	}
	return p.policy.String()
}
