package quictransport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

// session is one master connection on the slave: a reader per stream
// feeding the reorder buffer, one applier calling the Handler in seq order,
// and an ack writer.
type session struct {
	srv  *Slave
	conn *quic.Conn
	name string // remote address and certificate CN, for logs
	cn   string // the certificate CN alone
	log  *slog.Logger
	// closeConn closes the connection with a code and a reason: all the
	// control-stream code needs of it (tests run that code over a
	// net.Pipe, without one).
	closeConn func(code wire.ErrorCode, msg string)

	ctx    context.Context // ends with the connection
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // readers and the ack writer

	stopCh   chan struct{} // closed to stop the applier at an op boundary
	stopOnce sync.Once
	shutdown atomic.Bool // the stop is the server's: sync and ack first
	done     chan struct{}

	// Set by readHello and handshake. lane is set instead of hello when
	// the connection is a lane of another session (session_lanes.go).
	hello wire.Hello
	lane  *wire.LaneHello
	ctrl  ctrlStream
	fr    *wire.FrameReader
	mode  wire.SyncMode
	rb    *reorder
	// items counts the resync items applied on this connection (Ack.Items).
	items atomic.Uint64
	// The applier's alone: the last Sync op of async mode not made
	// durable yet (session_apply.go, deferSync; 0: none), and since when.
	syncDue   uint64
	syncSince time.Time

	wmu        sync.Mutex // control stream writes
	ctrlClosed bool       // our side of the control stream is closed (guarded by wmu)
	bye        atomic.Bool
	ackSig     chan struct{}
	forceAck   atomic.Bool
	failOnce   sync.Once
	failed     atomic.Bool

	// The session's lanes (session_lanes.go), guarded by laneMu.
	laneMu      sync.Mutex
	laneToken   wire.LaneToken
	laneGranted int                   // connections granted, the primary one included (0 or 1: none)
	lanes       map[uint32]*quic.Conn // by lane number
	lanesClosed bool                  // the session ended: no more lanes
}

func newSession(srv *Slave, conn *quic.Conn) *session {
	s := newControlSession(srv, peerName(conn), conn.Context(), func(code wire.ErrorCode, msg string) {
		conn.CloseWithError(appCode(code), msg)
	})
	s.conn, s.cn = conn, peerCN(conn)
	return s
}

// newControlSession is a session named name that ends with ctx, closed by
// closeConn, before it has a connection.
func newControlSession(srv *Slave, name string, ctx context.Context, closeConn func(wire.ErrorCode, string)) *session {
	s := &session{
		srv:       srv,
		name:      name,
		closeConn: closeConn,
		stopCh:    make(chan struct{}),
		done:      make(chan struct{}),
		ackSig:    make(chan struct{}, 1),
	}
	s.log = srv.log.With("master", s.name)
	s.ctx, s.cancel = context.WithCancelCause(ctx)
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
	// Lanes end with their session (after the cancel, so that their end
	// is not taken for a lost lane), and before the wait for their
	// readers.
	defer s.closeLanes()
	defer s.cancel(nil)
	if s.stopping() {
		s.closeConn(wire.CodeShutdown, s.stopReason())
		return
	}
	// A replacement or shutdown during the handshake (a peer that never
	// sends Hello, say) must not wait for the hello timeout.
	hsDone := make(chan struct{})
	go func() {
		select {
		case <-s.stopCh:
			s.closeConn(wire.CodeShutdown, s.stopReason())
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
	s.wg.Go(func() { s.acceptData(s.conn) })
	s.wg.Go(func() { s.refuseBidi(s.conn) })
	s.wg.Go(s.ackLoop)
	s.applyLoop()

	switch {
	case s.failed.Load() || s.ctx.Err() != nil:
		s.closeConn(wire.CodeShutdown, "")
		s.logEnd()
	case s.shutdown.Load():
		s.finish()
	default:
		s.log.Info("closing the replaced master connection")
		s.closeConn(wire.CodeShutdown, s.stopReason())
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
	if err := s.syncDeferred(); err != nil {
		s.fail(err)
		return
	}
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
	s.closeConn(wire.CodeShutdown, "slave shutting down")
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

// handlerError wraps the error of a Handler call on what (an op, a resync
// item): a refusal, a protocol violation or a limit keeps its own code;
// anything else is ErrApply (the slave could not apply it).
func handlerError(what string, err error) error {
	if errors.Is(err, wire.ErrRefused) || errors.Is(err, ErrProtocol) || errors.Is(err, wire.ErrLimit) ||
		errors.Is(err, wire.ErrNeedsResync) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrApply, what, err)
}

// closeCode is codeOf, with the refusals of the slave's own policy. A
// refusal the slave answers by asking for a comparison (it wraps
// ErrNeedsResync) closes with CodeNeedsResync.
func closeCode(err error) wire.ErrorCode {
	if errors.Is(err, wire.ErrRefused) && !errors.Is(err, wire.ErrNeedsResync) {
		return wire.CodeRefused
	}
	return codeOf(err)
}

// fail closes the connection after a peer's garbage or a local failure:
// one log line naming the peer and the reason, a FrameError if the control
// stream is free, and a QUIC close carrying the same code and reason.
func (s *session) fail(err error) { s.failLogged(err, true) }

// failLogged is fail, logging the reason at debug level unless loud.
func (s *session) failLogged(err error, loud bool) {
	s.failOnce.Do(func() {
		s.failed.Store(true)
		code := closeCode(err)
		s.srv.countClose(code)
		msg := err.Error()
		if code == wire.CodeRefused && !s.srv.newRefusal("refused op from "+s.cn, msg) {
			// The master resends the refused op at every reconnection.
			loud = false
		}
		level := slog.LevelDebug
		if loud {
			level = slog.LevelWarn
		}
		s.log.Log(context.Background(), level, "closing master connection: "+msg, "code", code.String())
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
		s.closeConn(code, msg)
		s.cancel(err)
	})
}

// Stalls: how long the applier waits before it tries an op again that it
// could not apply for want of a resource, doubling from the first to the
// last. A freed disk is used within stallMaxBackoff.
const (
	stallMinBackoff = 100 * time.Millisecond
	stallMaxBackoff = 5 * time.Second
)

// errStopped: the session stopped (replaced, shut down, connection gone)
// while the applier waited.
var errStopped = errors.New("session stopped")

var errCtrlClosed = errors.New("control stream closed")
