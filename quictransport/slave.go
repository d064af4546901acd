package quictransport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

// Slave is the slave's end: it accepts the master's QUIC connection,
// reads every stream at once into a reorder buffer, applies ops in seq
// order through a Handler, and acknowledges them.
type Slave struct {
	cfg SlaveConfig
	log *slog.Logger
	udp *net.UDPConn
	tr  *quic.Transport
	ln  *quic.Listener
	dec *wire.Decompressor

	// mu guards the current session and the stall. Where the slave
	// stands is the Handler's alone (Handler.State).
	mu  sync.Mutex
	cur *session
	// stall says why the applier cannot apply the next op ("" if it
	// can), since stallAt.
	stall   string
	stallAt time.Time
	stalled atomic.Bool // stall != "": the applier's check costs no lock

	sessions sync.WaitGroup
	closing  atomic.Bool
	// hsCtx ends when Serve stops accepting: connections still waiting
	// for their Hello are closed then.
	hsCtx    context.Context
	hsCancel context.CancelFunc
	closed   sync.Once

	// helloSlots bounds the connections waiting for their Hello: each
	// costs a goroutine for up to helloTimeout, and a holder of a master
	// certificate could open them by the thousand.
	helloSlots chan struct{}

	refusedMu sync.Mutex
	refused   map[string]refusal // remote host, or fenced master's name -> last refusal logged

	peakPending atomic.Int64 // highest reorder buffer fill seen (tests)

	closesMu sync.Mutex
	closes   map[wire.ErrorCode]uint64 // connections this slave closed, by reason
}

// Master names the master connected now (its address and certificate
// name), "" when none is.
func (s *Slave) Master() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || s.cur.ctx.Err() != nil {
		return ""
	}
	return s.cur.name
}

// Stalled says why this slave cannot apply the next op (its disk full,
// say), and since when; "" when it can.
func (s *Slave) Stalled() (string, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stall, s.stallAt
}

func (s *Slave) setStall(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if msg != "" && s.stall == "" {
		s.stallAt = time.Now()
	}
	s.stall = msg
	s.stalled.Store(msg != "")
}

// Recheck closes the current master connection if SlaveConfig.CheckPeer
// refuses the certificate it presented (revoked by a revocation list
// loaded since the handshake). It returns the reason, or nil. Connections
// still waiting for their Hello are checked when it arrives.
func (s *Slave) Recheck() error {
	s.mu.Lock()
	cur := s.cur
	var err error
	if cur != nil && cur.ctx.Err() == nil {
		err = s.checkPeer(cur)
	}
	s.mu.Unlock()
	if err != nil {
		cur.fail(fmt.Errorf("%w: %w", wire.ErrRefused, err))
	}
	return err
}

// checkPeer runs SlaveConfig.CheckPeer on the certificate of sess.
func (s *Slave) checkPeer(sess *session) error {
	if s.cfg.CheckPeer == nil {
		return nil
	}
	pc := sess.conn.ConnectionState().TLS.PeerCertificates
	if len(pc) == 0 {
		return errors.New("the master presented no certificate")
	}
	return s.cfg.CheckPeer(pc[0])
}

// Refusals counts the master connections this slave closed, by reason
// (the error code it gave: "protocol", "fenced", ...).
func (s *Slave) Refusals() map[string]uint64 {
	s.closesMu.Lock()
	defer s.closesMu.Unlock()
	out := make(map[string]uint64, len(s.closes))
	for c, n := range s.closes {
		out[c.String()] = n
	}
	return out
}

func (s *Slave) countClose(c wire.ErrorCode) {
	s.closesMu.Lock()
	defer s.closesMu.Unlock()
	if s.closes == nil {
		s.closes = make(map[wire.ErrorCode]uint64)
	}
	s.closes[c]++
}

// NewSlave binds the UDP socket (so Addr is known and a busy port is
// reported at once) and starts listening; Serve accepts connections.
func NewSlave(cfg SlaveConfig) (*Slave, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	uaddr, err := net.ResolveUDPAddr("udp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", cfg.Listen, err)
	}
	udp, err := net.ListenUDP("udp", uaddr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on UDP %s: %w", cfg.Listen, err)
	}
	dec, err := wire.NewDecompressor()
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	s := &Slave{cfg: cfg, log: cfg.Logger, udp: udp, dec: dec, refused: make(map[string]refusal),
		helloSlots: make(chan struct{}, maxAwaitingHello)}
	s.hsCtx, s.hsCancel = context.WithCancel(context.Background())
	// Transport.Conn is the *net.UDPConn itself, so quic-go uses GSO, ECN
	// and batched reads (docs/design.md, Implementation traps).
	s.tr = &quic.Transport{Conn: udp, ConnContext: s.connContext}
	if cfg.ResetKey != nil {
		k := quic.StatelessResetKey(*cfg.ResetKey)
		s.tr.StatelessResetKey = &k
	}
	// Listen, not ListenEarly: no 0-RTT and no 0.5-RTT data before the
	// master's certificate is verified (0-RTT data is replayable).
	s.ln, err = s.tr.Listen(cfg.TLS, cfg.quic)
	if err != nil {
		s.tr.Close()
		udp.Close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	return s, nil
}

// Addr is the UDP address the server listens on.
func (s *Slave) Addr() net.Addr { return s.udp.LocalAddr() }

// Serve accepts master connections until ctx is done. A new connection
// replaces the current one. When ctx is done it stops accepting, lets the
// applier finish the op in hand, syncs, sends a final ack, closes the
// connection with CodeShutdown and returns nil.
func (s *Slave) Serve(ctx context.Context) error {
	// The caller logs where it listens (it knows the directory too).
	var err error
	for {
		conn, aerr := s.ln.Accept(ctx)
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("accept: %w", aerr)
			}
			break
		}
		s.startSession(conn)
	}
	s.closing.Store(true)
	s.hsCancel()
	s.ln.Close()
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	if cur != nil {
		cur.stop(true)
	}
	s.sessions.Wait()
	// A session stopped before it could sync (replaced while shutting
	// down) leaves unsynced ops: no session runs now, so sync here.
	st := s.cfg.Handler.State()
	applied := st.Applied
	if applied > st.Durable {
		if serr := s.cfg.Handler.Sync(applied); serr != nil {
			s.log.Error("final sync failed", "applied", applied, "error", serr)
			err = errors.Join(err, fmt.Errorf("final sync through op %d: %w", applied, serr))
		}
	}
	s.Close()
	s.log.Info("slave stopped", "applied", applied)
	return err
}

// Close releases the socket without the graceful steps of Serve; for a
// Slave whose Serve never ran. It is safe to call more than once.
func (s *Slave) Close() error {
	var err error
	s.closed.Do(func() {
		s.closing.Store(true)
		s.hsCancel()
		s.tr.Close() // closes remaining connections
		err = s.udp.Close()
	})
	return err
}

// startSession serves conn, replacing the current connection: the old
// applier stops at an op boundary before the new one starts, so Handler
// calls never overlap.
func (s *Slave) startSession(conn *quic.Conn) {
	if t, ok := conn.Context().Value(trackKey{}).(*connTrack); ok {
		t.accepted.Store(true)
	}
	if !s.admit(conn) {
		return
	}
	sess := newSession(s, conn)
	s.sessions.Go(func() {
		err := s.awaitHello(sess)
		if err == nil && sess.lane != nil {
			s.attachLane(sess)
			return
		}
		if err != nil {
			// A fenced master redials every few seconds: say so once
			// (and hourly while it goes on), not once per attempt.
			quiet := errors.Is(err, ErrFenced) && !s.newRefusal("fenced master "+peerCN(sess.conn), err.Error())
			sess.failLogged(err, !quiet)
			sess.cancel(err)
			close(sess.done)
			return
		}
		prev, ok := s.makeCurrent(sess)
		if !ok {
			return
		}
		if prev != nil {
			select {
			case <-prev.done:
			default:
				s.log.Info("a new master connection replaces the current one", "old", prev.name, "new", sess.name)
			}
		}
		sess.serve(prev)
	})
}

// admit takes one of the slots of the connections awaiting their Hello
// for conn, or refuses it (CodeLimit) when none is free.
func (s *Slave) admit(conn *quic.Conn) bool {
	select {
	case s.helloSlots <- struct{}{}:
		return true
	default:
	}
	s.countClose(wire.CodeLimit)
	msg := fmt.Sprintf("more than %d master connections awaiting their hello", maxAwaitingHello)
	if s.newRefusal("awaiting hello", msg) {
		s.log.Warn("closing master connection: "+msg, "master", peerName(conn), "code", wire.CodeLimit.String())
	}
	conn.CloseWithError(appCode(wire.CodeLimit), msg)
	return false
}

// awaitHello reads the session's Hello, holding its slot meanwhile. Only
// a master this slave may follow replaces the current connection: a
// fenced one is refused without disturbing it.
func (s *Slave) awaitHello(sess *session) error {
	stop := context.AfterFunc(s.hsCtx, func() {
		sess.conn.CloseWithError(appCode(wire.CodeShutdown), "slave shutting down")
	})
	err := sess.readHello(sess.ctx)
	<-s.helloSlots
	if !stop() {
		err = errors.New("slave shutting down")
	}
	return err
}

// makeCurrent makes sess the current session and returns the one it
// replaces, unless the slave is closing or no longer accepts its master
// (then sess is closed, and ok false).
func (s *Slave) makeCurrent(sess *session) (prev *session, ok bool) {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		sess.conn.CloseWithError(appCode(wire.CodeShutdown), "slave shutting down")
		sess.cancel(nil)
		close(sess.done)
		return nil, false
	}
	// Checked under s.mu, as Recheck reads s.cur: a reload either
	// happened before this check, or its Recheck sees this session.
	if err := s.checkPeer(sess); err != nil {
		s.mu.Unlock()
		sess.fail(fmt.Errorf("%w: %w", wire.ErrRefused, err))
		sess.cancel(err)
		close(sess.done)
		return nil, false
	}
	prev = s.cur
	s.cur = sess
	s.mu.Unlock()
	return prev, true
}

// maxAwaitingHello bounds the connections that have not sent their Hello
// yet (Slave.helloSlots). A real master has one.
const maxAwaitingHello = 16

// connTrack tells the refusal logger that a connection was accepted.
type connTrack struct{ accepted atomic.Bool }

type trackKey struct{}

// connContext is quic.Transport.ConnContext. The context it returns ends
// when the connection ends, with the close error as its cause; for a
// connection never accepted that is why its handshake failed (a master
// certificate refused, say), which quic-go would not report otherwise.
func (s *Slave) connContext(ctx context.Context, ci *quic.ClientInfo) (context.Context, error) {
	t := &connTrack{}
	ctx = context.WithValue(ctx, trackKey{}, t)
	go func() {
		<-ctx.Done()
		if !t.accepted.Load() && !s.closing.Load() {
			s.logRefusal(ci.RemoteAddr, context.Cause(ctx))
		}
	}()
	return ctx, nil
}

// logRefusal logs a failed handshake once per remote host and distinct
// reason, so a misconfigured master retrying every few seconds costs one
// line.
func (s *Slave) logRefusal(addr net.Addr, cause error) {
	host := addr.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	msg := fmt.Sprint(cause)
	if s.newRefusal(host, msg) {
		s.log.Warn("refused a connection: handshake failed: "+msg, "peer", addr.String())
	}
}

// refusal is the last refusal logged for a peer.
type refusal struct {
	msg    string
	logged time.Time
}

// refusalRelog is how often a refusal that repeats is logged again: a
// fenced master or a misconfigured peer redials every few seconds, and
// one line per attempt would drown the log.
const refusalRelog = time.Hour

// newRefusal reports whether a refusal of key for msg should be logged:
// the first time, when msg changes, and then once every refusalRelog.
func (s *Slave) newRefusal(key, msg string) bool {
	now := time.Now()
	s.refusedMu.Lock()
	defer s.refusedMu.Unlock()
	if len(s.refused) > 1024 {
		clear(s.refused) // bounded memory whatever the number of scanners
	}
	if r, ok := s.refused[key]; ok && r.msg == msg && now.Sub(r.logged) < refusalRelog {
		return false
	}
	s.refused[key] = refusal{msg: msg, logged: now}
	return true
}

func (s *Slave) notePeak(p int64) {
	for {
		old := s.peakPending.Load()
		if p <= old || s.peakPending.CompareAndSwap(old, p) {
			return
		}
	}
}
