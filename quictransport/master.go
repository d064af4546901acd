package quictransport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// Master fans numbered ops out to every configured slave: one QUIC
// connection per slave, each with its own dial loop and sender, sharing one
// backlog. It is the mount's wire.OpSink (Append, Wait).
type Master struct {
	cfg MasterConfig
	log *slog.Logger
	// ownLimit caps the bytes in flight to any slave, whatever it announces.
	ownLimit int64

	mu       sync.Mutex
	bl       backlog
	clock    seqClock // when ops were appended, for lags in bytes and seconds
	opCounts map[wire.OpType]OpCount
	peers    []*peer
	tree     Tree
	jn       journaler // writes the journal (journaler.go)
	// changed is closed and replaced whenever an ack or a state change may
	// let Wait or Drain return.
	changed chan struct{}
	// maxWaited is the highest seq any Wait waited for: a slave whose
	// durable seq reaches it has caught up with what writers needed.
	maxWaited uint64
	// hurry is the highest seq a writer or the fence waits for, read by
	// the senders without m.mu: what they hold back to send in fewer
	// packets (peer_send.go) goes at once up to it.
	hurry          atomic.Uint64
	tooFew         bool // the last Wait failed for want of MinSlaves slaves (logged once)
	draining       bool
	overflowLogged bool

	drainCh   chan struct{} // closed when Drain starts
	drainOnce sync.Once
	stopCh    chan struct{} // closed when Drain ends: stop dialing
	stopOnce  sync.Once
	running   atomic.Bool
	run       peerRun // set by Run; guarded by mu
}

var _ wire.OpSink = (*Master)(nil)

// PeerStatus is one slave as the master sees it.
type PeerStatus struct {
	Addr string
	Name string // the name its certificate must carry
	// State is "connecting", "streaming", "catching-up", "degraded",
	// "refused" (the slave refuses this master, or a bound of the slave
	// was exceeded), "resyncing",
	// "checking", "verifying", "fenced", "needs-resync" or "stopped".
	State   string
	Head    uint64 // the master's newest op
	Applied uint64 // highest seq the slave acknowledged as applied (this run)
	Durable uint64 // highest seq the slave acknowledged as durable (this run)
	Sent    uint64 // highest seq handed to QUIC on the current connection
	// Lag: the ops appended that the slave has not applied, their bytes
	// (FrameOp bodies, before compression), and how long ago the oldest
	// of them was appended.
	LagOps     uint64
	LagBytes   uint64
	LagSeconds float64
	// Rate is the bytes of ops the slave applied per second, over the
	// last few seconds.
	Rate float64
	// The current session's QUIC statistics (zero when not connected):
	// the primary connection's round-trip time, and the packets sent and
	// lost on all its connections.
	RTT         time.Duration // smoothed round-trip time
	PacketsSent uint64
	PacketsLost uint64
	// Lanes is the connections the current session carries data on (the
	// primary one and its lanes), 0 when not connected.
	Lanes int
	// WireBytesSent is the bytes sent to the slave on every QUIC
	// connection since the master started, ended ones included
	// (ConnectionStats.BytesSent: QUIC packets with retransmissions, no
	// UDP/IP headers).
	WireBytesSent uint64
	// Cause says why the slave is not following now, when it is not for
	// want of a connection: it cannot apply the next op ("disk full:
	// ..."). "" otherwise.
	Cause string
	// Policy is what the slave announced it holds beyond ordinary
	// entries (wire.Policy.String), "" before its first connection.
	Policy      string
	LastError   string
	LastErrorAt time.Time // zero if none
}

// NewMaster checks cfg and returns a Master; Run starts the connections.
func NewMaster(cfg MasterConfig) (*Master, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &Master{
		cfg:      cfg,
		log:      cfg.Logger,
		ownLimit: max(cfg.Backlog, minPending),
		changed:  make(chan struct{}),
		drainCh:  make(chan struct{}),
		stopCh:   make(chan struct{}),
	}
	m.bl.limit = cfg.Backlog
	m.bl.head = cfg.Head
	m.jn.init(cfg.Journal, m.log, &m.mu, &m.bl, cfg.Head)
	for _, p := range cfg.Peers {
		q := newPeer(m, p)
		q.check = cfg.CheckAll
		m.peers = append(m.peers, q)
	}
	return m, nil
}

// SetTree gives the master the backing dir to resync slaves from (the
// mount). Until it is set, slaves that need a resync wait; with none at
// all (tests), they are marked needs-resync.
func (m *Master) SetTree(t Tree) {
	m.mu.Lock()
	m.tree = t
	m.broadcastLocked()
	m.mu.Unlock()
}

// poke wakes whoever waits for a state change (the pass runners).
func (m *Master) poke() { m.broadcastLocked() }

// Run dials every peer, redialing with backoff, and streams ops to each. It
// returns once ctx is done and every goroutine it started has stopped. Call
// it once.
func (m *Master) Run(ctx context.Context) {
	if !m.running.CompareAndSwap(false, true) {
		m.log.Error("Master.Run called twice: the second call does nothing")
		<-ctx.Done()
		return
	}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-m.stopCh: // Drain is over: stop dialing
			cancel()
		case <-dctx.Done():
		}
	})
	m.mu.Lock()
	m.run = peerRun{ctx: dctx, wg: &wg}
	for _, p := range m.peers {
		m.startLocked(p)
	}
	m.mu.Unlock()
	if m.cfg.Journal != nil {
		wg.Go(func() { m.jn.run(ctx) })
	}
	<-ctx.Done()
	cancel()
	wg.Wait()
	m.jn.close()
}

// Append queues op number seq for every slave. Calls come in seq order, one
// at a time. It copies what it keeps (the encoded op) and never blocks on
// the network. The journal is written on other goroutines (journaler),
// unless the ops not journaled yet overflow the backlog on their own.
func (m *Master) Append(seq uint64, op wire.Op) {
	e := newEntry(seq, op, m.cfg.DataThreshold)
	m.mu.Lock()
	m.clock.record(seq, e.size, time.Now())
	m.countOpLocked(op.Type(), e.size)
	prevHead := m.bl.head
	if m.bl.push(e) {
		m.log.Error("ops appended out of order: dropping the backlog, slaves that needed it will need a resync",
			"previous", prevHead, "seq", seq)
	}
	m.truncateDurableLocked()
	m.jn.queuedLocked(e.size)
	dropped := m.jn.trimLocked(seq)
	if dropped && !m.overflowLogged {
		m.overflowLogged = true
		m.log.Warn("backlog full: dropping the oldest ops; slaves that still need them will need a resync",
			"limit_bytes", m.cfg.Backlog, "holds_from", m.bl.first())
	}
	m.checkHeldLocked()
	peers := m.peers
	m.mu.Unlock()
	for _, p := range peers {
		p.pokeOp()
	}
}

// Wait returns once every slave that is streaming and not degraded has
// made op seq durable, and at least MinSlaves slaves have. In async mode
// it returns nil at once. A slave that does not get there within
// SyncTimeout is marked degraded and stops holding writers back, so Wait
// never blocks for longer than SyncTimeout; if fewer than MinSlaves made
// seq durable by then, it returns an error wrapping ErrTooFewSlaves (the
// writer gets EIO).
func (m *Master) Wait(seq uint64) error {
	if m.cfg.Mode == wire.ModeAsync {
		return nil
	}
	start := time.Now()
	if f := m.cfg.OnWait; f != nil {
		defer func() { f(time.Since(start)) }()
	}
	w := newChangeWaiter(start.Add(m.cfg.SyncTimeout))
	defer w.stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maxWaited = max(m.maxWaited, seq)
	m.hurryLocked(seq)
	for {
		lagging := m.laggingLocked(seq)
		durable := m.syncedCountLocked(seq)
		enough := durable >= m.cfg.MinSlaves
		if len(lagging) == 0 && enough {
			if m.tooFew {
				m.tooFew = false
				m.log.Info(fmt.Sprintf("writers' waits are covered again: %d slaves durable (--min-slaves %d)", durable, m.cfg.MinSlaves))
			}
			return nil
		}
		if !w.waitLocked(&m.mu, m.changed) {
			m.degradeLocked(lagging, seq)
			if enough {
				return nil
			}
			return m.tooFewLocked(seq)
		}
	}
}

// hurryLocked tells the senders that a writer waits for ops up to seq.
func (m *Master) hurryLocked(seq uint64) {
	if seq > m.hurry.Load() {
		m.hurry.Store(seq)
		for _, p := range m.peers {
			p.poke()
		}
	}
}

// laggingLocked lists the slaves that hold a Wait for seq back: streaming,
// not degraded nor rebased, and not durable at seq.
func (m *Master) laggingLocked(seq uint64) []*peer {
	var lagging []*peer
	for _, p := range m.peers {
		if p.state == stateStreaming && !p.degraded && !p.rebase && p.durable < seq {
			lagging = append(lagging, p)
		}
	}
	return lagging
}

// degradeLocked marks the slaves that did not make seq durable within the
// sync timeout degraded: writers stop waiting for them.
func (m *Master) degradeLocked(lagging []*peer, seq uint64) {
	for _, p := range lagging {
		p.degraded = true
		p.log.Warn("slave degraded: it did not make ops durable within the sync timeout; writers no longer wait for it",
			"waited_for", seq, "durable", p.durable, "applied", p.applied, "lag", seq-p.durable, "sync_timeout", m.cfg.SyncTimeout)
	}
	m.broadcastLocked()
}

// changeWaiter waits, with mu held around it, for the Master's changed
// channel until a deadline: the timer logic of Wait and Drain.
type changeWaiter struct {
	deadline time.Time
	timer    *time.Timer
}

func newChangeWaiter(deadline time.Time) *changeWaiter {
	return &changeWaiter{deadline: deadline}
}

// waitLocked releases mu, waits until changed is closed or the deadline
// passes, and takes mu again. It reports false, without waiting, once
// the deadline has passed.
func (w *changeWaiter) waitLocked(mu *sync.Mutex, changed <-chan struct{}) bool {
	left := time.Until(w.deadline)
	if left <= 0 {
		return false
	}
	mu.Unlock()
	defer mu.Lock()
	if w.timer == nil {
		w.timer = time.NewTimer(left)
	} else {
		w.timer.Reset(left)
	}
	select {
	case <-changed:
	case <-w.timer.C:
	}
	return true
}

func (w *changeWaiter) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}

// ErrTooFewSlaves: fewer than MinSlaves slaves made the ops a writer
// waited for durable within SyncTimeout.
var ErrTooFewSlaves = errors.New("too few slaves durable")

// tooFewLocked is the error of a Wait for seq that fewer than MinSlaves
// slaves covered, naming those counted and those missing; it is logged
// when waits start failing. m.mu is held.
func (m *Master) tooFewLocked(seq uint64) error {
	var counted, missing []string
	for _, p := range m.peers {
		if p.durable >= seq && !p.resyncingLocked() {
			counted = append(counted, p.addr)
		} else {
			missing = append(missing, fmt.Sprintf("%s (%s, durable at seq %d)", p.addr, p.stateName(), p.durable))
		}
	}
	err := fmt.Errorf("%w: %d of the %d required (--min-slaves) made seq %d durable within %v; counted: [%s]; missing: [%s]",
		ErrTooFewSlaves, len(counted), m.cfg.MinSlaves, seq, m.cfg.SyncTimeout, strings.Join(counted, ", "), strings.Join(missing, ", "))
	if !m.tooFew {
		m.tooFew = true
		m.log.Error("writers' waits fail with EIO until enough slaves are durable: " + err.Error())
	}
	return err
}

// Drain is called once the mount is gone (no more Appends), while Run is
// still running: it delivers
// what each slave is owed, says Bye so the slave syncs, closes, and stops
// dialing. It returns an error wrapping ErrDrainTimeout if timeout passed
// first. Slaves that need a resync cannot be helped by waiting: Drain
// reports them without waiting for them.
func (m *Master) Drain(timeout time.Duration) error {
	m.mu.Lock()
	m.draining = true
	head := m.bl.head
	owed := m.owedLocked(head)
	peers := m.peers
	m.mu.Unlock()
	m.drainOnce.Do(func() { close(m.drainCh) })
	m.log.Info(fmt.Sprintf("draining: %d ops owed to slaves (timeout %v)", owed, timeout), "head", head)
	for _, p := range peers {
		p.poke()
	}

	w := newChangeWaiter(time.Now().Add(timeout))
	defer w.stop()
	m.mu.Lock()
	var d drained
	for {
		d = m.drainedLocked(head)
		if len(d.lacking) == 0 || !w.waitLocked(&m.mu, m.changed) {
			break
		}
	}
	m.mu.Unlock()
	m.stopOnce.Do(func() { close(m.stopCh) })
	return m.reportDrain(d, head, timeout)
}

// owedLocked is the most ops a slave that can be helped lacks of head.
func (m *Master) owedLocked(head uint64) uint64 {
	var owed uint64
	for _, p := range m.peers {
		if p.state != stateNeedsResync && p.state != stateFenced && head > p.durable {
			owed = max(owed, head-p.durable)
		}
	}
	return owed
}

// drained is where the slaves stand in a drain to head.
type drained struct {
	lacking []string // not durable at head: Drain waits for them
	resync  []string // need a resync or refuse this master: not waited for
	away    []string // not connected, with a journal to keep what they lack
}

func (m *Master) drainedLocked(head uint64) drained {
	var d drained
	for _, p := range m.peers {
		switch {
		case p.state == stateNeedsResync || p.state == stateFenced:
			d.resync = append(d.resync, p.addr)
		case p.state == stateConnecting && m.cfg.Journal != nil:
			// Not connected: the journal keeps what it lacks for
			// its return; waiting would only delay the unmount.
			d.away = append(d.away, p.addr)
		case p.state != stateStopped || p.durable < head:
			d.lacking = append(d.lacking, fmt.Sprintf("slave %s (%s) is durable at seq %d, lacks %d..%d", p.addr, p.stateName(), p.durable, p.durable+1, head))
		}
	}
	return d
}

// reportDrain logs how the drain to head ended, and returns its error.
func (m *Master) reportDrain(d drained, head uint64, timeout time.Duration) error {
	if len(d.resync) > 0 {
		m.log.Warn("drained without slaves that need a resync or refuse this master", "slaves", strings.Join(d.resync, ", "))
	}
	if len(d.away) > 0 {
		m.log.Info("slaves not connected: the journal keeps what they lack for their return", "slaves", strings.Join(d.away, ", "))
	}
	if len(d.lacking) > 0 {
		for _, l := range d.lacking {
			m.log.Error("drain timed out: " + l)
		}
		return fmt.Errorf("%w after %v: %s", ErrDrainTimeout, timeout, strings.Join(d.lacking, "; "))
	}
	switch n := len(m.peers) - len(d.away) - len(d.resync); {
	case len(m.peers) == 0:
		m.log.Info(fmt.Sprintf("no slaves configured: nothing replicated seq %d", head))
	case n == 0:
		m.log.Warn(fmt.Sprintf("no slave is durable at seq %d: none was connected", head))
	case n < len(m.peers):
		m.log.Info(fmt.Sprintf("%d of %d slaves durable at seq %d", n, len(m.peers), head))
	default:
		m.log.Info(fmt.Sprintf("all slaves durable at seq %d", head))
	}
	return nil
}

// Status reports every slave, in configuration order.
func (m *Master) Status() []PeerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	out := make([]PeerStatus, 0, len(m.peers))
	for _, p := range m.peers {
		st := PeerStatus{
			Addr:        p.addr,
			State:       p.stateName(),
			Head:        m.bl.head,
			Applied:     p.applied,
			Durable:     p.durable,
			Sent:        p.sent,
			Rate:        p.rate.rate(now),
			Cause:       p.stall,
			Policy:      p.policyString(),
			LastError:   p.lastErr,
			LastErrorAt: p.lastErrAt,
		}
		if p.tls != nil {
			st.Name = p.tls.ServerName
		}
		if st.State == "streaming" && p.applied < p.catchUpTo {
			st.State = "catching-up"
		}
		if p.applied < m.bl.head {
			st.LagOps = m.bl.head - p.applied
			lb, age := m.clock.lag(p.applied, now)
			st.LagBytes, st.LagSeconds = lb, age.Seconds()
		}
		st.WireBytesSent = p.wireEnded
		if p.lanes != nil {
			sent, ps, pl := p.lanes.wireStats()
			st.WireBytesSent += sent
			if p.conn != nil {
				st.RTT = p.conn.ConnectionStats().SmoothedRTT
				st.Lanes = p.lanes.count()
				st.PacketsSent, st.PacketsLost = ps, pl
			}
		}
		out = append(out, st)
	}
	return out
}

// JournalBytes is the size of the on-disk journal (0 without one).
func (m *Master) JournalBytes() int64 {
	if j := m.cfg.Journal; j != nil {
		return j.Size()
	}
	return 0
}

func (m *Master) broadcastLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// truncateDurableLocked drops from memory the ops every slave has made
// durable, and sets how far the journal may be truncated. A slave whose
// position this run has not learnt yet holds everything (it may come
// back wanting old ops); one that needs a rebase pass holds nothing (it
// restarts at the pass). Without a journal, or beyond its bound, memory
// is trimmed to Backlog by Append.
func (m *Master) truncateDurableLocked() {
	low := uint64(math.MaxUint64)
	for _, p := range m.peers {
		switch {
		case p.state == stateNeedsResync || p.state == stateFenced || p.rebase && p.waitBegin:
			// Once its pass's rebasing ResyncBegin is emitted, a rebasing
			// slave needs every op after it (p.durable is its position).
		case !p.known:
			low = 0
		default:
			low = min(low, p.durable)
		}
	}
	low = m.jn.truncatableLocked(min(low, m.bl.head))
	m.bl.dropThrough(low)
}

// checkHeldLocked finds the slaves whose next op the master no longer
// holds (trimmed from memory, not in the journal): they need a rebase
// pass.
func (m *Master) checkHeldLocked() {
	first, head := m.firstHeldLocked(), m.bl.head
	for _, p := range m.peers {
		if p.state == stateNeedsResync || p.state == stateStopped || p.state == stateFenced || p.rebase || !p.known {
			continue
		}
		need := p.applied + 1 // where it resumes when it reconnects
		if p.state == stateStreaming {
			need = p.next // it has been sent everything before
		}
		if need < first || need > head+1 {
			p.lostLocked(need, "")
		}
	}
}
