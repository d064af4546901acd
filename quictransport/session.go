package quictransport

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
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

// readHello reads Hello and checks the master may feed this slave
// (fencing), before the connection may replace the current one: a
// refused master must not disturb the one the slave follows.
func (s *session) readHello(ctx context.Context) error {
	hctx, cancel := context.WithTimeout(ctx, helloTimeout)
	defer cancel()
	ctrl, err := s.conn.AcceptStream(hctx)
	if err != nil {
		return fmt.Errorf("waiting for the control stream: %w", err)
	}
	return s.readHelloOn(ctrl)
}

// readHelloOn reads Hello, or a lane's LaneHello, on the control stream
// ctrl, and checks the master may feed this slave.
func (s *session) readHelloOn(ctrl ctrlStream) error {
	s.ctrl = ctrl
	ctrl.SetReadDeadline(time.Now().Add(helloTimeout))
	s.fr = wire.NewFrameReader(ctrl, s.srv.dec)
	kind, body, err := s.fr.Next()
	if err != nil {
		return fmt.Errorf("%w: reading hello: %w", ErrProtocol, err)
	}
	if kind == wire.FrameLaneHello {
		// A lane of a session: Slave.attachLane binds it, or not.
		lh, err := wire.ParseLaneHello(body)
		if err != nil {
			return fmt.Errorf("%w: lane-hello: %w", ErrProtocol, err)
		}
		ctrl.SetReadDeadline(time.Time{})
		s.lane = &lh
		return nil
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
	s.mode, s.hello = h.Mode, h
	return fence(s.srv.cfg.Handler.State(), h)
}

// handshake adopts the master if it is a new one, answers HelloAck with
// where the slave stands, and starts the reorder buffer after its applied
// op. The master decides whether the slave resumes there or is
// resynchronised (a rebasing ResyncBegin).
func (s *session) handshake() error {
	h := s.hello
	srv := s.srv
	st := srv.cfg.Handler.State()
	if err := fence(st, h); err != nil {
		return err // another master was adopted meanwhile
	}
	if st.Epoch != h.Epoch {
		how := "a new replica: adopting its first master"
		if st.Epoch != (wire.Epoch{}) {
			how = fmt.Sprintf("the master's epoch %s succeeds epoch %s, which this slave followed (a promotion)",
				epochName(h.Epoch), epochName(st.Epoch))
		}
		s.log.Warn("following master epoch " + epochName(h.Epoch) + ": " + how + "; the tree will be compared and repaired")
		if err := srv.cfg.Handler.Follow(h.Epoch, h.Lineage); err != nil {
			return fmt.Errorf("%w: recording the new master: %w", ErrApply, err)
		}
		st = srv.cfg.Handler.State()
	}
	applied, durable := st.Applied, st.Durable
	ack := wire.HelloAck{Epoch: st.Epoch, Run: st.Run, Applied: applied, Durable: durable,
		MaxPending: uint64(srv.cfg.MaxPending), Resyncing: st.Resyncing, Policy: wire.PermissivePolicy}
	if srv.cfg.Policy != nil {
		ack.Policy = *srv.cfg.Policy
	}
	granted, err := s.grantLanes(&ack)
	if err != nil {
		return err
	}
	// The reorder buffer exists before the HelloAck leaves: a lane may
	// deliver data as soon as the master has read it.
	s.rb = newReorder(applied+1, srv.cfg.MaxPending)
	// The writes a master may have in flight on data streams: those
	// waiting to open one (its DataStreams), those whose stream the slave
	// has not read to its end (at most MaxStreams per connection), and
	// those read but not yet buffered (as many): the rest were skipped.
	s.rb.maxGap = 2*srv.cfg.MaxStreams*granted + 4*DefaultDataStreams
	if err := s.writeFrame(wire.FrameHelloAck, ack.Append(nil)); err != nil {
		return fmt.Errorf("sending hello-ack: %w", err)
	}
	s.log.Info("master connected", "epoch", epochName(h.Epoch), "run", hex.EncodeToString(h.Run[:4]),
		"mode", h.Mode.String(), "applied", applied, "durable", durable, "master_head", h.Head, "resyncing", st.Resyncing,
		"lanes", granted)
	return nil
}

// fence refuses a master this slave must not follow: an older epoch of
// its master (a promoted slave took over: split brain), or an unrelated
// master.
func fence(st SlaveState, h wire.Hello) error {
	var zero wire.Epoch
	switch {
	case st.Epoch == zero || st.Epoch == h.Epoch || slices.Contains(h.Lineage, st.Epoch):
		return nil
	case slices.Contains(st.Lineage, h.Epoch):
		return fmt.Errorf("%w: this slave follows master epoch %s, which replaced this master's epoch %s by promotion: "+
			"this master is stale and must not write here (split brain averted); to use its host again, "+
			"resync it as a slave of the new master", ErrFenced, epochName(st.Epoch), epochName(h.Epoch))
	default:
		return fmt.Errorf("%w: this slave follows master epoch %s, and this master's epoch %s is unrelated "+
			"(another master, or one whose --journal was lost); to make this slave follow it, stop the slave, "+
			"remove its state dir and start it again: its tree is then compared and repaired",
			ErrFenced, epochName(st.Epoch), epochName(h.Epoch))
	}
}

// epochName is the short form of an epoch in messages.
func epochName(e wire.Epoch) string { return hex.EncodeToString(e[:4]) }

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
			if err := s.handleOp(body, true); err != nil {
				s.fail(err)
				return
			}
		case wire.FrameResync:
			after, it, err := wire.ParseResyncItem(bytes.Clone(body))
			if err != nil {
				s.fail(fmt.Errorf("%w: resync item: %w", ErrProtocol, err))
				return
			}
			if err := s.rb.insertItem(after, it, int64(len(body))); err != nil {
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
			s.closeConn(wire.CodeOK, "")
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

// acceptData reads every data stream of conn (the session's connection or
// one of its lanes) as soon as it is opened, each in its own goroutine, to
// its end. Never leaving a stream unread is what keeps the connection's
// flow-control window open while the applier waits for a missing op
// (docs/design.md, Implementation traps).
func (s *session) acceptData(conn *quic.Conn) {
	for {
		rs, err := conn.AcceptUniStream(s.ctx)
		if err != nil {
			return // the connection is gone
		}
		s.wg.Go(func() { s.readData(conn, rs) })
	}
}

// readData reads a data stream: one FrameOp holding a Write, then the
// stream's end (quictransport doc). Anything else is a protocol error: a
// master sends nothing else there, and the skip check of the reorder
// buffer counts one write per data stream.
func (s *session) readData(conn *quic.Conn, rs *quic.ReceiveStream) {
	fr := wire.NewFrameReader(rs, s.srv.dec)
	kind, body, err := fr.Next()
	if err != nil {
		if conn.Context().Err() != nil {
			return // a lane that ended: laneEnded says so
		}
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: an empty data stream", ErrProtocol)
		}
		s.readFailed("data stream", err)
		return
	}
	if kind != wire.FrameOp {
		s.fail(fmt.Errorf("%w: %v frame on a data stream", ErrProtocol, kind))
		return
	}
	if err := s.handleOp(body, false); err != nil {
		s.fail(err)
		return
	}
	if _, _, err := fr.Next(); !errors.Is(err, io.EOF) {
		if err == nil {
			err = fmt.Errorf("%w: a second frame on a data stream", ErrProtocol)
		} else if conn.Context().Err() != nil {
			return
		}
		s.readFailed("data stream", err)
	}
}

// refuseBidi closes the session if the master opens a second
// bidirectional stream on conn: nothing would read it, and its bytes would
// pin the connection window.
func (s *session) refuseBidi(conn *quic.Conn) {
	if _, err := conn.AcceptStream(s.ctx); err == nil {
		s.fail(fmt.Errorf("%w: a second bidirectional stream", ErrProtocol))
	}
}

// handleOp decodes a FrameOp body, read from the control stream or a data
// stream, and buffers the op for the applier.
func (s *session) handleOp(body []byte, control bool) error {
	// The reader reuses body; ops alias what they decode (Write.Data).
	b := bytes.Clone(body)
	seq, op, err := wire.ParseOp(b)
	if err != nil {
		return fmt.Errorf("%w: op: %w", ErrProtocol, err)
	}
	if control {
		err = s.rb.insertControl(seq, op, int64(len(b)))
	} else if _, ok := op.(*wire.Write); !ok {
		err = fmt.Errorf("%w: op %d (%v) on a data stream, which carries only writes", ErrProtocol, seq, op.Type())
	} else {
		err = s.rb.insert(seq, op, int64(len(b)))
	}
	if err != nil {
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
	idle := time.NewTimer(s.srv.cfg.SyncInterval)
	defer idle.Stop()
	// Ack at least every MiB applied (acks are a few bytes), so the
	// master's window, which may be smaller than MaxPending (its own
	// backlog), keeps moving under a steady stream that never drains.
	pace := ackPacer{every: min(s.srv.cfg.MaxPending/4, 1<<20)}
	for !s.stopping() && s.ctx.Err() == nil {
		if err := s.applyNext(idle, &pace); err != nil {
			if !errors.Is(err, errStopped) {
				s.fail(err)
			}
			return
		}
	}
}

// ackPacer counts the bytes of ops applied since the last ack.
type ackPacer struct{ every, since int64 }

// applied adds size bytes and reports whether an ack is due.
func (a *ackPacer) applied(size int64) bool {
	if a.since += size; a.since >= a.every {
		a.since = 0
		return true
	}
	return false
}

// applyNext applies the next resync item or op, or, when none is ready,
// waits (drained). An error ends the session (errStopped: quietly).
func (s *session) applyNext(idle *time.Timer, pace *ackPacer) error {
	if at, it, _, ok := s.rb.popItem(); ok {
		return s.applyItem(at, it)
	}
	seq, op, size, ok := s.rb.pop()
	if !ok {
		pace.since = 0 // drained acks
		return s.drained(idle)
	}
	if _, isSync := op.(*wire.Sync); isSync {
		// Durability lives here: a Sync op counts as applied and makes
		// everything up to it durable (Handler.Sync).
		if err := s.syncThrough(seq); err != nil {
			return err
		}
		s.signalAck()
		return nil
	}
	if err := s.apply(seq, op); err != nil {
		return err
	}
	if s.srv.stalled.Load() {
		s.srv.setStall("") // applied by a new session after a stall
	}
	if pace.applied(size) {
		s.signalAck()
	}
	return nil
}

// apply hands op seq to the Handler, retrying while it lacks a resource
// (stall).
func (s *session) apply(seq uint64, op wire.Op) error {
	err := s.srv.cfg.Handler.Apply(seq, op)
	if re, ok := errors.AsType[*wire.ResourceError](err); ok {
		err = s.stall(seq, op, re)
	}
	if err == nil || errors.Is(err, errStopped) {
		return err
	}
	return handlerError(fmt.Sprintf("op %d (%v)", seq, op.Type()), err)
}

// drained is the applier's step when it applied what had arrived: group
// commit in sync mode and after a Bye (the master waits for durable ==
// head), an ack, then a wait for more, for the end, or for SyncInterval
// of idleness (idle), after which it makes what it applied durable in
// the background so Durable advances in every mode.
func (s *session) drained(idle *time.Timer) error {
	if s.mode == wire.ModeSync || s.bye.Load() {
		if err := s.syncIfBehind(); err != nil {
			return err
		}
	}
	if s.bye.Load() {
		s.forceAck.Store(true)
	}
	s.signalAck()
	idle.Reset(s.srv.cfg.SyncInterval)
	select {
	case <-s.rb.ready:
	case <-s.stopCh:
	case <-s.ctx.Done():
	case <-idle.C:
		if err := s.syncIfBehind(); err != nil {
			return err
		}
		s.signalAck()
	}
	return nil
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

// stall retries op seq, which the Handler could not apply for want of a
// resource (re), until it applies, the session stops, or it fails
// otherwise (that error is returned). The master learns why from a
// wire.Stall, sent when the stall begins and when its cause changes; the
// connection stays up, the readers go on buffering what the master sends
// (at most MaxPending), and nothing is sent twice. Logged when it begins
// and ends, not at every attempt.
func (s *session) stall(seq uint64, op wire.Op, re *wire.ResourceError) error {
	what := fmt.Sprintf("op %d", seq)
	return s.stallOn(wire.Stall{Seq: seq}, what, re, func() error { return s.srv.cfg.Handler.Apply(seq, op) })
}

// stallOn is stall for op or resync item st (its Seq, or its Item and
// position), named what, retried by retry.
func (s *session) stallOn(st wire.Stall, what string, re *wire.ResourceError, retry func() error) error {
	srv := s.srv
	start := time.Now()
	told := ""
	backoff := stallMinBackoff
	for {
		if re.Cause != told {
			told = re.Cause
			s.log.Warn(fmt.Sprintf("cannot apply %s: %v; keeping it and what follows, retrying until it applies",
				what, re), "seq", st.Seq)
			srv.setStall(re.Error())
			st.Msg = re.Error()
			if err := s.writeFrame(wire.FrameStall, st.Append(nil)); err != nil && s.ctx.Err() == nil {
				return fmt.Errorf("sending stall: %w", err)
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-s.stopCh:
			t.Stop()
			return errStopped
		case <-s.ctx.Done():
			t.Stop()
			return errStopped
		}
		backoff = min(2*backoff, stallMaxBackoff)
		err := retry()
		var ok bool
		if re, ok = errors.AsType[*wire.ResourceError](err); ok {
			continue
		}
		srv.setStall("")
		if err == nil {
			s.log.Info("applies ops again", "seq", st.Seq, "stalled", time.Since(start).Round(time.Millisecond))
		}
		return err
	}
}

// applyItem applies a resync item at its position. A rebasing
// ResyncBegin moves the slave's op stream to its position.
func (s *session) applyItem(at uint64, it wire.ResyncItem) error {
	srv := s.srv
	// A rebasing ResyncBegin moves the Handler's applied and durable to
	// at (Handler.Resync).
	err := srv.cfg.Handler.ApplyItem(at, it, s.reply)
	if re, ok := errors.AsType[*wire.ResourceError](err); ok {
		// The Handler says the item may be applied again (its data).
		st := wire.Stall{Seq: at, Item: s.items.Load() + 1}
		err = s.stallOn(st, fmt.Sprintf("resync item %d after op %d", st.Item, at), re,
			func() error { return srv.cfg.Handler.ApplyItem(at, it, s.reply) })
	}
	if errors.Is(err, errStopped) {
		return err
	}
	if err != nil {
		return handlerError(fmt.Sprintf("resync item after op %d (%T)", at, it), err)
	}
	if _, end := it.(*wire.ResyncEnd); end {
		// The tree equals the master's as of this position: make that
		// durable, so a crash does not start the comparison over.
		applied := srv.cfg.Handler.State().Applied
		if err := srv.cfg.Handler.Sync(applied); err != nil {
			return fmt.Errorf("%w: sync after the resync: %w", ErrApply, err)
		}
	}
	s.items.Add(1)
	s.signalAck()
	return nil
}

// reply sends a resync reply to the master.
func (s *session) reply(r wire.ResyncReply) error {
	return s.writeFrame(wire.FrameResyncReply, wire.AppendResyncReply(nil, r))
}

// syncIfBehind makes every applied op durable if some are not yet.
func (s *session) syncIfBehind() error {
	st := s.srv.cfg.Handler.State()
	if st.Applied <= st.Durable {
		return nil
	}
	return s.syncThrough(st.Applied)
}

// syncThrough makes every op up to seq durable, seq counting as applied
// (a Sync op is never passed to Apply).
func (s *session) syncThrough(seq uint64) error {
	if err := s.srv.cfg.Handler.Sync(seq); err != nil {
		return fmt.Errorf("%w: sync through op %d: %w", ErrApply, seq, err)
	}
	return nil
}

// currentAck is where the slave stands, as its Handler says: the
// transport keeps no position of its own.
func (s *session) currentAck() wire.Ack {
	st := s.srv.cfg.Handler.State()
	return wire.Ack{Applied: st.Applied, Durable: st.Durable, Items: s.items.Load()}
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
