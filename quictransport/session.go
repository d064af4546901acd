package quictransport

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/quictransport/wire"
)

// session is one master connection on the slave: a reader per stream
// feeding the reorder buffer, one applier calling the Handler in seq order,
// and an ack writer.
type session struct {
	srv  *Server
	conn *quic.Conn
	name string // remote address and certificate CN, for logs
	log  *slog.Logger

	ctx    context.Context // ends with the connection
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // readers and the ack writer

	stopCh   chan struct{} // closed to stop the applier at an op boundary
	stopOnce sync.Once
	shutdown atomic.Bool // the stop is the server's: sync and ack first
	done     chan struct{}

	// Set by handshake.
	ctrl      *quic.Stream
	fr        *wire.FrameReader
	run       wire.RunID
	mode      wire.SyncMode
	resumable bool
	rb        *reorder

	wmu        sync.Mutex // control stream writes
	ctrlClosed bool       // our side of the control stream is closed (guarded by wmu)
	bye        atomic.Bool
	ackSig     chan struct{}
	forceAck   atomic.Bool
	failOnce   sync.Once
	failed     atomic.Bool
}

func newSession(srv *Server, conn *quic.Conn) *session {
	s := &session{
		srv:    srv,
		conn:   conn,
		name:   peerName(conn),
		stopCh: make(chan struct{}),
		done:   make(chan struct{}),
		ackSig: make(chan struct{}, 1),
	}
	s.log = srv.log.With("master", s.name)
	s.ctx, s.cancel = context.WithCancelCause(conn.Context())
	return s
}

// stop asks the applier to stop at the next op boundary; shutdown says the
// server is going down (sync, final ack) rather than replacing us.
func (s *session) stop(shutdown bool) {
	if shutdown {
		s.shutdown.Store(true)
	}
	s.stopOnce.Do(func() { close(s.stopCh) })
}

func (s *session) stopping() bool {
	select {
	case <-s.stopCh:
		return true
	default:
		return false
	}
}

// serve runs the session after prev (the connection it replaces) has
// stopped.
func (s *session) serve(prev *session) {
	defer close(s.done)
	if prev != nil {
		prev.stop(false)
		<-prev.done
	}
	defer s.wg.Wait()
	defer s.cancel(nil)
	if s.stopping() {
		s.conn.CloseWithError(appCode(wire.CodeShutdown), s.stopReason())
		return
	}
	// A replacement or shutdown during the handshake (a peer that never
	// sends Hello, say) must not wait for the hello timeout.
	hsDone := make(chan struct{})
	go func() {
		select {
		case <-s.stopCh:
			s.conn.CloseWithError(appCode(wire.CodeShutdown), s.stopReason())
		case <-hsDone:
		}
	}()
	err := s.handshake()
	close(hsDone)
	if err != nil {
		if s.stopping() {
			s.log.Info("connection closed during its handshake: " + s.stopReason())
			return
		}
		s.fail(err)
		return
	}
	s.wg.Go(s.readControl)
	s.wg.Go(s.acceptData)
	s.wg.Go(s.refuseBidi)
	if !s.resumable {
		// Wait for the master's verdict (FrameError) or the end.
		select {
		case <-s.ctx.Done():
		case <-s.stopCh:
		}
		s.conn.CloseWithError(appCode(wire.CodeShutdown), s.stopReason())
		s.logEnd()
		return
	}
	s.wg.Go(s.ackLoop)
	s.applyLoop()

	switch {
	case s.failed.Load() || s.ctx.Err() != nil:
		s.conn.CloseWithError(appCode(wire.CodeShutdown), "")
		s.logEnd()
	case s.shutdown.Load():
		s.finish()
	default:
		s.log.Info("closing the replaced master connection")
		s.conn.CloseWithError(appCode(wire.CodeShutdown), s.stopReason())
	}
}

// stopReason is the close message once stop was called.
func (s *session) stopReason() string {
	if s.shutdown.Load() {
		return "slave shutting down"
	}
	return "replaced by a newer connection"
}

// finish ends the session for a server shutdown: sync, final ack, then
// close once the master has read it (or after a grace period).
func (s *session) finish() {
	if err := s.syncIfBehind(); err != nil {
		s.fail(err)
		return
	}
	a := s.currentAck()
	if err := s.writeFrame(wire.FrameAck, a.Append(nil)); err == nil {
		// Closing our side of the control stream tells the master we are
		// done; it closes the connection when it reads the EOF, after our
		// ack. CloseWithError alone could discard the ack in flight.
		s.wmu.Lock()
		s.ctrl.Close()
		s.ctrlClosed = true
		s.wmu.Unlock()
		t := time.NewTimer(closeGrace)
		select {
		case <-s.conn.Context().Done():
		case <-t.C:
		}
		t.Stop()
	}
	s.conn.CloseWithError(appCode(wire.CodeShutdown), "slave shutting down")
	s.log.Info("master connection closed: slave shutting down", "applied", a.Applied, "durable", a.Durable)
}

// logEnd logs why the connection ended, unless fail already did.
func (s *session) logEnd() {
	if s.failed.Load() {
		return
	}
	cause := context.Cause(s.conn.Context())
	if ae, ok := errors.AsType[*quic.ApplicationError](cause); ok && ae.Remote {
		switch wire.ErrorCode(ae.ErrorCode) {
		case wire.CodeOK:
			s.log.Info("master connection closed: " + ae.ErrorMessage)
			return
		case wire.CodeNeedsResync:
			s.log.Error("the master says this slave needs a resync: " + ae.ErrorMessage)
			return
		case wire.CodeShutdown:
			s.log.Info("master connection closed by the master: " + ae.ErrorMessage)
			return
		}
	}
	s.log.Warn(fmt.Sprintf("master connection lost: %v", cause))
}

// handshake reads Hello, answers HelloAck and decides where to start:
// applied+1 of the same run, or 1 for a new run.
func (s *session) handshake() error {
	hctx, cancel := context.WithTimeout(s.ctx, helloTimeout)
	defer cancel()
	ctrl, err := s.conn.AcceptStream(hctx)
	if err != nil {
		return fmt.Errorf("waiting for the control stream: %w", err)
	}
	s.ctrl = ctrl
	ctrl.SetReadDeadline(time.Now().Add(helloTimeout))
	s.fr = wire.NewFrameReader(ctrl, s.srv.dec)
	kind, body, err := s.fr.Next()
	if err != nil {
		return fmt.Errorf("%w: reading hello: %w", ErrProtocol, err)
	}
	if kind != wire.FrameHello {
		return fmt.Errorf("%w: %v frame before hello", ErrProtocol, kind)
	}
	h, err := wire.ParseHello(body)
	if err != nil {
		return fmt.Errorf("%w: hello: %w", ErrProtocol, err)
	}
	if h.Version != wire.Version {
		return fmt.Errorf("%w: master speaks protocol version %d, this slave %d", ErrProtocol, h.Version, wire.Version)
	}
	ctrl.SetReadDeadline(time.Time{})
	s.run, s.mode = h.Run, h.Mode

	srv := s.srv
	vouched := false
	if _, _, err := srv.cfg.Handler.State(); err != nil {
		if !errors.Is(err, ErrUnverified) || !h.Vouched {
			return fmt.Errorf("%w: %w", ErrNeedsResync, err)
		}
		vouched = true
	}
	srv.mu.Lock()
	run, applied, durable := srv.run, srv.applied, srv.durable
	next := uint64(1)
	if h.Run == run {
		next = applied + 1
	} else if why := newRunRefused(h, run, applied, durable); why != "" && !(vouched || h.Vouched && run == (wire.RunID{})) {
		srv.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNeedsResync, why)
	}
	s.resumable = next >= h.First
	if h.Run != run && s.resumable {
		srv.run, srv.applied, srv.durable = h.Run, 0, 0
	}
	srv.mu.Unlock()

	ack := wire.HelloAck{Run: run, Applied: applied, Durable: durable, MaxPending: uint64(srv.cfg.MaxPending)}
	if err := s.writeFrame(wire.FrameHelloAck, ack.Append(nil)); err != nil {
		return fmt.Errorf("sending hello-ack: %w", err)
	}
	s.rb = newReorder(next, srv.cfg.MaxPending)
	switch {
	case !s.resumable:
		s.log.Warn("the master cannot resume this slave: it holds ops from seq "+fmt.Sprint(h.First)+", this slave needs "+fmt.Sprint(next)+"; expecting a needs-resync verdict",
			"run", hex.EncodeToString(h.Run[:]))
	case h.Run != run && h.Vouched && (vouched || run == (wire.RunID{})):
		s.log.Warn("master connected: its operator vouches that this replica matches the backing dir (--assume-in-sync)",
			"run", hex.EncodeToString(h.Run[:]), "mode", h.Mode.String())
	case h.Run != run && run == (wire.RunID{}):
		s.log.Info("master connected: a new tree, and this replica is new too", "run", hex.EncodeToString(h.Run[:]),
			"mode", h.Mode.String())
	case h.Run != run:
		s.log.Info("master connected: it restarted cleanly where this slave stood; following its new run",
			"run", hex.EncodeToString(h.Run[:]), "previous_run", hex.EncodeToString(run[:]), "previous_durable", durable,
			"mode", h.Mode.String())
	default:
		s.log.Info("master connected: resuming", "from_seq", next, "durable", durable, "mode", h.Mode.String())
	}
	return nil
}

// newRunRefused says why a slave at (run, applied, durable) cannot follow
// the new master run announced by h from its seq 1, or "" if it can:
// its tree must be the one that run starts from. Either it is durable at
// exactly the end of the master's previous run, which ended cleanly, or
// both are new (no state here, an empty backing dir there; the slave's own
// tree is checked by its Handler). Anything else could be silently
// different: resynchronisation by tree comparison is not implemented yet.
func newRunRefused(h wire.Hello, run wire.RunID, applied, durable uint64) string {
	var zero wire.RunID
	switch {
	case h.PrevRun != zero && run == h.PrevRun && durable == h.PrevHead && applied == durable:
		return ""
	case run == zero && applied == 0 && durable == 0 && h.Fresh:
		return ""
	case run == zero:
		return "this replica has no replication state, and the master's backing dir was not empty when its run began: " +
			"the trees may differ"
	case h.PrevRun == zero:
		return fmt.Sprintf("this replica is at seq %d of master run %s, and the master's previous run did not end cleanly "+
			"(crash or kill): what the replica missed is unknown", durable, hex.EncodeToString(run[:4]))
	case run != h.PrevRun:
		return fmt.Sprintf("this replica is at seq %d of master run %s, but the master's previous run was %s: "+
			"it missed at least one whole run", durable, hex.EncodeToString(run[:4]), hex.EncodeToString(h.PrevRun[:4]))
	default:
		return fmt.Sprintf("this replica is at seq %d (applied %d) of the master's previous run, which ended at seq %d",
			durable, applied, h.PrevHead)
	}
}

// fail closes the connection after a peer's garbage or a local failure:
// one log line naming the peer and the reason, a FrameError if the control
// stream is free, and a QUIC close carrying the same code and reason.
func (s *session) fail(err error) {
	s.failOnce.Do(func() {
		s.failed.Store(true)
		code := codeOf(err)
		msg := err.Error()
		s.log.Warn("closing master connection: "+msg, "code", code.String())
		if s.ctrl != nil && s.wmu.TryLock() {
			// Best effort: the close below carries the reason anyway.
			if !s.ctrlClosed {
				e := wire.Error{Code: code, Msg: msg}
				s.ctrl.SetWriteDeadline(time.Now().Add(time.Second))
				s.ctrl.Write(wire.AppendFrame(nil, wire.FrameError, e.Append(nil), nil))
			}
			s.wmu.Unlock()
		}
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
		s.conn.CloseWithError(appCode(code), msg)
		s.cancel(err)
	})
}

// readControl reads the control stream after Hello: ops, Bye, Error.
func (s *session) readControl() {
	for {
		kind, body, err := s.fr.Next()
		if err != nil {
			s.readFailed("control stream", err)
			return
		}
		switch kind {
		case wire.FrameOp:
			if err := s.handleOp(body); err != nil {
				s.fail(err)
				return
			}
		case wire.FrameBye:
			s.bye.Store(true)
			if s.rb != nil {
				s.rb.wake()
			}
		case wire.FrameError:
			err := peerError(body)
			var pe *PeerError
			if errors.As(err, &pe) && pe.Code == wire.CodeNeedsResync {
				s.log.Error("the master says this slave needs a resync: " + pe.Msg)
			} else {
				s.log.Warn(fmt.Sprintf("the master gave up on this connection: %v", err))
			}
			s.failed.Store(true) // logged: nothing more to say
			s.conn.CloseWithError(appCode(wire.CodeOK), "")
			s.cancel(err)
			return
		default:
			s.fail(fmt.Errorf("%w: unexpected %v frame from the master", ErrProtocol, kind))
			return
		}
	}
}

// readFailed handles a stream read error: garbage closes the connection,
// a connection that is going away just ends the reader.
func (s *session) readFailed(what string, err error) {
	switch {
	case s.ctx.Err() != nil:
	case errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrTruncated):
		s.fail(fmt.Errorf("%w: %s: %w", ErrProtocol, what, err))
	case errors.Is(err, io.EOF):
		s.fail(fmt.Errorf("%w: the master closed its %s", ErrProtocol, what))
	case closedByPeer(err):
	default:
		s.fail(fmt.Errorf("%w: %s: %w", ErrProtocol, what, err))
	}
}

// acceptData reads every data stream as soon as it is opened, each in its
// own goroutine, to its end. Never leaving a stream unread is what keeps
// the connection's flow-control window open while the applier waits for a
// missing op (research pitfall #5).
func (s *session) acceptData() {
	for {
		rs, err := s.conn.AcceptUniStream(s.ctx)
		if err != nil {
			return // the connection is gone
		}
		s.wg.Go(func() { s.readData(rs) })
	}
}

func (s *session) readData(rs *quic.ReceiveStream) {
	fr := wire.NewFrameReader(rs, s.srv.dec)
	for {
		kind, body, err := fr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			s.readFailed("data stream", err)
			return
		}
		if kind != wire.FrameOp {
			s.fail(fmt.Errorf("%w: %v frame on a data stream", ErrProtocol, kind))
			return
		}
		if err := s.handleOp(body); err != nil {
			s.fail(err)
			return
		}
	}
}

// refuseBidi closes the connection if the master opens a second
// bidirectional stream: nothing would read it, and its bytes would pin
// the connection window.
func (s *session) refuseBidi() {
	if _, err := s.conn.AcceptStream(s.ctx); err == nil {
		s.fail(fmt.Errorf("%w: a second bidirectional stream", ErrProtocol))
	}
}

// handleOp decodes a FrameOp body and buffers the op for the applier.
func (s *session) handleOp(body []byte) error {
	// The reader reuses body; ops alias what they decode (Write.Data).
	b := bytes.Clone(body)
	seq, op, err := wire.ParseOp(b)
	if err != nil {
		return fmt.Errorf("%w: op: %w", ErrProtocol, err)
	}
	if !s.resumable {
		return fmt.Errorf("%w: op %d sent although the master cannot resume this slave", ErrProtocol, seq)
	}
	if err := s.rb.insert(seq, op, int64(len(b))); err != nil {
		return err
	}
	_, peak := s.rb.stats()
	s.srv.notePeak(peak)
	return nil
}

// applyLoop applies ops strictly in seq order until stopped, the
// connection ends, or the Handler fails. Every Handler call of the slave
// comes from here, one at a time.
func (s *session) applyLoop() {
	srv := s.srv
	idle := time.NewTimer(srv.cfg.SyncInterval)
	defer idle.Stop()
	// Ack at least every MiB applied (acks are a few bytes), so the
	// master's window, which may be smaller than MaxPending (its own
	// backlog), keeps moving under a steady stream that never drains.
	ackEvery := min(srv.cfg.MaxPending/4, 1<<20)
	var sinceAck int64
	for {
		if s.stopping() || s.ctx.Err() != nil {
			return
		}
		seq, op, size, ok := s.rb.pop()
		if !ok {
			// Drained what was ready: group commit in sync mode, and
			// after a Bye (the master waits for durable == head).
			if s.mode == wire.ModeSync || s.bye.Load() {
				if err := s.syncIfBehind(); err != nil {
					s.fail(err)
					return
				}
			}
			if s.bye.Load() {
				s.forceAck.Store(true)
			}
			s.signalAck()
			sinceAck = 0
			idle.Reset(srv.cfg.SyncInterval)
			select {
			case <-s.rb.ready:
			case <-s.stopCh:
			case <-s.ctx.Done():
			case <-idle.C:
				// Idle with unsynced ops: make them durable in the
				// background so Durable advances in every mode.
				if err := s.syncIfBehind(); err != nil {
					s.fail(err)
					return
				}
				s.signalAck()
			}
			continue
		}
		if _, isSync := op.(*wire.Sync); isSync {
			// Durability lives in the transport: a Sync op counts as
			// applied and makes everything up to it durable.
			s.setApplied(seq)
			if err := s.syncIfBehind(); err != nil {
				s.fail(err)
				return
			}
			s.signalAck()
			continue
		}
		if err := srv.cfg.Handler.Apply(s.run, seq, op); err != nil {
			s.fail(fmt.Errorf("%w: op %d (%v): %w", ErrApply, seq, op.Type(), err))
			return
		}
		s.setApplied(seq)
		if sinceAck += size; sinceAck >= ackEvery {
			s.signalAck()
			sinceAck = 0
		}
	}
}

func (s *session) setApplied(seq uint64) {
	s.srv.mu.Lock()
	s.srv.applied = seq
	s.srv.mu.Unlock()
}

// syncIfBehind makes every applied op durable if some are not yet.
func (s *session) syncIfBehind() error {
	srv := s.srv
	srv.mu.Lock()
	run, applied, durable := srv.run, srv.applied, srv.durable
	srv.mu.Unlock()
	if applied <= durable {
		return nil
	}
	if err := srv.cfg.Handler.Sync(run, applied); err != nil {
		return fmt.Errorf("%w: sync through op %d: %w", ErrApply, applied, err)
	}
	srv.mu.Lock()
	srv.durable = max(srv.durable, applied)
	srv.mu.Unlock()
	return nil
}

func (s *session) currentAck() wire.Ack {
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	return wire.Ack{Applied: s.srv.applied, Durable: s.srv.durable}
}

func (s *session) signalAck() {
	select {
	case s.ackSig <- struct{}{}:
	default:
	}
}

// ackLoop sends the latest Ack whenever signalled, coalescing: one ack
// covers every op applied since the last.
func (s *session) ackLoop() {
	var last wire.Ack
	sent := false
	for {
		select {
		case <-s.ackSig:
		case <-s.ctx.Done():
			return
		}
		force := s.forceAck.Swap(false)
		a := s.currentAck()
		if sent && a == last && !force {
			continue
		}
		if err := s.writeFrame(wire.FrameAck, a.Append(nil)); err != nil {
			if s.ctx.Err() == nil && !closedByPeer(err) && !errors.Is(err, errCtrlClosed) {
				s.fail(fmt.Errorf("sending ack: %w", err))
			}
			return
		}
		last, sent = a, true
	}
}

var errCtrlClosed = errors.New("control stream closed")

// writeFrame writes one frame on the control stream. A master always reads
// its control stream, so a write blocked for writeTimeout means the
// connection is dead.
func (s *session) writeFrame(kind wire.FrameKind, body []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.ctrlClosed {
		return errCtrlClosed
	}
	s.ctrl.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := s.ctrl.Write(wire.AppendFrame(nil, kind, body, nil))
	return err
}
