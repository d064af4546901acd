package quictransport

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

// Lanes, slave side. A session may span several QUIC connections: the
// primary one, which carries the control stream, and up to MaxLanes-1
// lanes that carry only data streams, so that bulk data has several
// congestion windows (quic-go's NewReno collapses on a lossy link, one
// window at a time). The HelloAck grants lanes to a Hello that asks for
// them, with a random token; a lane connection opens one bidirectional
// stream and sends a LaneHello with that token. It is bound to the session
// only if the token is the current session's, its certificate is the one
// the session's connection presented (and CheckPeer still accepts it), and
// its number is free and below the grant. Its data streams feed the
// session's reorder buffer like those of the primary connection: the seq
// in each op is the only ordering header, on any connection.
//
// Lifetime: lanes close when their session ends, and a lane that ends
// ends its session (CodeLane): ops in flight on it are lost, and the
// master resends from the slave's applied seq when it reconnects.

// grantLanes decides how many connections the session may use, from what
// the Hello asks and MaxLanes, and puts the grant and a fresh token in
// ack. It returns the grant (1: no lanes).
func (s *session) grantLanes(ack *wire.HelloAck) (int, error) {
	granted := 1
	if s.hello.Lanes > 1 {
		granted = min(int(s.hello.Lanes), s.srv.cfg.MaxLanes)
	}
	if granted < 2 {
		if s.hello.Lanes > 1 {
			s.log.Info("the master asks for lanes; this slave allows none (max lanes 1)", "asked", s.hello.Lanes)
		}
		return 1, nil
	}
	var tok wire.LaneToken
	if _, err := rand.Read(tok[:]); err != nil {
		return 0, fmt.Errorf("lane token: %w", err)
	}
	s.laneMu.Lock()
	s.laneToken, s.laneGranted = tok, granted
	s.lanes = make(map[uint32]*quic.Conn)
	s.laneMu.Unlock()
	ack.Lanes, ack.LaneToken = uint32(granted), tok
	return granted, nil
}

// attachLane binds the lane connection l, whose LaneHello was read, to the
// current session, or refuses it with CodeLane and a log line.
func (s *Slave) attachLane(l *session) {
	defer close(l.done)
	s.mu.Lock()
	cur := s.cur
	var err error
	switch {
	case s.closing.Load():
		err = errors.New("the slave is shutting down")
	case l.lane.Version != wire.Version:
		err = fmt.Errorf("the lane speaks protocol version %d, this slave %d", l.lane.Version, wire.Version)
	case cur == nil:
		err = errors.New("no master session to join (unknown lane token)")
	default:
		// Checked under s.mu, as Recheck reads s.cur (server.go).
		if cerr := s.checkPeer(l); cerr != nil {
			err = fmt.Errorf("its certificate is refused: %w", cerr)
		}
	}
	s.mu.Unlock()
	if err == nil {
		err = cur.bindLane(l)
	}
	if err != nil {
		s.refuseLane(l, err)
		return
	}
	// The master sends data on the lane only once it reads this: the
	// readers run already.
	ack := wire.AppendFrame(nil, wire.FrameLaneAck, nil, nil)
	l.ctrl.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := l.ctrl.Write(ack); err != nil {
		// The lane is gone: laneEnded ends the session.
		cur.log.Debug("sending lane-ack", "lane", l.lane.Lane, "err", err)
	}
	l.ctrl.SetWriteDeadline(time.Time{})
}

// refuseLane closes the lane connection l with CodeLane and err as the
// reason, logged once per master and reason (a master would redial).
func (s *Slave) refuseLane(l *session, err error) {
	msg := fmt.Sprintf("refused a lane connection: %v", err)
	s.countClose(wire.CodeLane)
	level := slog.LevelDebug
	if s.newRefusal("lane "+peerCN(l.conn), msg) {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, msg, "lane", l.lane.Lane, "code", wire.CodeLane.String())
	e := wire.Error{Code: wire.CodeLane, Msg: msg}
	l.ctrl.SetWriteDeadline(time.Now().Add(time.Second))
	l.ctrl.Write(wire.AppendFrame(nil, wire.FrameError, e.Append(nil), nil))
	l.conn.CloseWithError(appCode(wire.CodeLane), msg)
	l.cancel(fmt.Errorf("%w: %v", ErrLane, err))
}

// bindLane makes l a lane of s if its LaneHello and certificate say it
// belongs to s, and starts reading it.
func (s *session) bindLane(l *session) error {
	lh := *l.lane
	s.laneMu.Lock()
	defer s.laneMu.Unlock()
	switch {
	case s.lanesClosed || s.ctx.Err() != nil:
		return errors.New("its session has ended")
	case s.laneGranted < 2 || subtle.ConstantTimeCompare(lh.Token[:], s.laneToken[:]) != 1:
		return errors.New("unknown lane token (not the current master session's)")
	case !sameCert(l.conn, s.conn):
		return fmt.Errorf("its certificate (CN %q) is not the one of its session's connection (CN %q)",
			peerCN(l.conn), peerCN(s.conn))
	case int(lh.Lane) >= s.laneGranted:
		return fmt.Errorf("lane %d, beyond the %d connections granted to the session", lh.Lane, s.laneGranted)
	case s.lanes[lh.Lane] != nil:
		return fmt.Errorf("lane %d is connected already", lh.Lane)
	}
	s.lanes[lh.Lane] = l.conn
	// Added under laneMu while the session runs: before serve's wait
	// (closeLanes sets lanesClosed first).
	s.wg.Go(func() { s.acceptData(l.conn) })
	s.wg.Go(func() { s.refuseBidi(l.conn) })
	s.wg.Go(func() { s.readLaneControl(l) })
	context.AfterFunc(l.conn.Context(), func() { s.laneEnded(lh.Lane, l.conn) })
	s.log.Info("lane connected", "lane", lh.Lane, "lanes", len(s.lanes)+1, "granted", s.laneGranted,
		"peer", l.conn.RemoteAddr().String())
	return nil
}

// sameCert reports whether a and b were authenticated with the same leaf
// certificate (byte for byte).
func sameCert(a, b *quic.Conn) bool {
	ca, cb := a.ConnectionState().TLS.PeerCertificates, b.ConnectionState().TLS.PeerCertificates
	return len(ca) > 0 && len(cb) > 0 && bytes.Equal(ca[0].Raw, cb[0].Raw)
}

// readLaneControl watches the lane's own stream, on which a master sends
// nothing after its LaneHello.
func (s *session) readLaneControl(l *session) {
	kind, _, err := l.fr.Next()
	switch {
	case s.ctx.Err() != nil || l.conn.Context().Err() != nil:
		// The session or the lane ended: closeLanes or laneEnded.
	case err == nil:
		s.fail(fmt.Errorf("%w: a %v frame on lane %d's stream", ErrProtocol, kind, l.lane.Lane))
	case errors.Is(err, io.EOF):
		s.fail(fmt.Errorf("%w: the master closed lane %d's stream", ErrProtocol, l.lane.Lane))
	case errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrTruncated):
		s.fail(fmt.Errorf("%w: lane %d's stream: %w", ErrProtocol, l.lane.Lane, err))
	}
}

// laneEnded ends the session when one of its lanes ends while it runs:
// the ops in flight on the lane are lost, and only a new session (from
// the slave's applied seq) resends them.
func (s *session) laneEnded(lane uint32, conn *quic.Conn) {
	if s.ctx.Err() != nil {
		return // the session ended first: closeLanes closed the lane
	}
	cause := context.Cause(conn.Context())
	err := fmt.Errorf("%w: lane %d (%s) ended: %v", ErrLane, lane, conn.RemoteAddr(), cause)
	if code, ok := remoteCode(cause); ok && (code == wire.CodeOK || code == wire.CodeShutdown) {
		// The master ends the session: it closed the primary connection
		// first, and that close is on its way. Fail only if it never
		// comes.
		time.AfterFunc(closeGrace, func() {
			if s.ctx.Err() == nil {
				s.fail(err)
			}
		})
		return
	}
	s.fail(err)
}

// closeLanes closes the session's lanes and admits no more. Called once
// the session is over. A failed session closes them with its own code and
// reason: the master may see a lane close before the primary connection's,
// and must learn the same from either.
func (s *session) closeLanes() {
	s.laneMu.Lock()
	s.lanesClosed = true
	lanes := s.lanes
	s.lanes = nil
	s.laneMu.Unlock()
	code, msg := wire.CodeShutdown, "its session ended"
	if cause := context.Cause(s.ctx); s.failed.Load() && cause != nil && !errors.Is(cause, context.Canceled) {
		code, msg = closeCode(cause), cause.Error()
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
	}
	for _, c := range lanes {
		c.CloseWithError(appCode(code), msg)
	}
}
