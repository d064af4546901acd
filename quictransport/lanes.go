package quictransport

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

// Lanes, master side (the slave's side and the protocol: session_lanes.go).
// After the handshake the peer dials the lanes the slave granted, each a
// full mTLS connection that presents the session's token in a LaneHello
// and waits for the slave's LaneAck before it carries anything. The
// sender spreads data streams over the primary connection and its lanes
// (least busy first, ties in turn); DataStreams still bounds the data
// streams in flight in total, and the flow control (limit, inflight) is
// the session's, whatever connection an op travels on. The control stream
// stays on the primary connection.
//
// A lane that cannot be connected is logged and the session goes on with
// the others. A lane that ends after it connected ends the session (the
// writes in flight on it are lost; the next session resends from the
// slave's applied seq), and the session's end closes its lanes.

// laneError: lane n of a session ended, for cause. It is ErrLane, and
// keeps the cause in the chain: a slave that failed closes its lanes with
// its own code (CodeApply, CodeRefused...), which the dial loop reads.
type laneError struct {
	n     uint32
	cause error
}

func (e *laneError) Error() string        { return fmt.Sprintf("lane %d ended: %v", e.n, e.cause) }
func (e *laneError) Unwrap() error        { return e.cause }
func (e *laneError) Is(target error) bool { return target == ErrLane }

// laneSet is the connections of one session that carry data streams: the
// primary one first, then the lanes as they connect.
type laneSet struct {
	mu     sync.Mutex
	conns  []*laneConn
	ended  []*quic.Conn // lanes closed or refused during the session (for their bytes sent)
	turn   int          // where pick starts looking, so equal lanes take turns
	closed bool
}

type laneConn struct {
	n    uint32
	conn *quic.Conn
	busy atomic.Int32 // data streams being written on it
}

func newLaneSet(primary *quic.Conn) *laneSet {
	return &laneSet{conns: []*laneConn{{conn: primary}}}
}

// pick returns the connection with the fewest data streams being written,
// counting the one the caller is about to write (done when it is
// written).
func (ls *laneSet) pick() *laneConn {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	n := len(ls.conns)
	best := ls.conns[ls.turn%n]
	for i := 1; i < n; i++ {
		if c := ls.conns[(ls.turn+i)%n]; c.busy.Load() < best.busy.Load() {
			best = c
		}
	}
	ls.turn = (ls.turn + 1) % n
	best.busy.Add(1)
	return best
}

// add adds a lane that connected; false if the session ended meanwhile.
func (ls *laneSet) add(n uint32, conn *quic.Conn) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.closed {
		ls.ended = append(ls.ended, conn)
		return false
	}
	ls.conns = append(ls.conns, &laneConn{n: n, conn: conn})
	return true
}

// addEnded counts the bytes of a lane connection that never joined.
func (ls *laneSet) addEnded(conn *quic.Conn) {
	ls.mu.Lock()
	ls.ended = append(ls.ended, conn)
	ls.mu.Unlock()
}

// count is the number of connections carrying data now.
func (ls *laneSet) count() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return len(ls.conns)
}

// closeLanes closes every lane (not the primary connection) and admits no
// more.
func (ls *laneSet) closeLanes(code wire.ErrorCode, msg string) {
	ls.mu.Lock()
	ls.closed = true
	lanes := ls.conns[1:]
	ls.mu.Unlock()
	for _, c := range lanes {
		c.conn.CloseWithError(appCode(code), msg)
	}
}

// wireStats sums the QUIC statistics of every connection of the session,
// ended lanes included: bytes and packets sent, packets lost.
func (ls *laneSet) wireStats() (bytesSent, packetsSent, packetsLost uint64) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	add := func(c *quic.Conn) {
		cs := c.ConnectionStats()
		bytesSent += cs.BytesSent
		packetsSent += cs.PacketsSent
		packetsLost += cs.PacketsLost
	}
	for _, c := range ls.conns {
		add(c.conn)
	}
	for _, c := range ls.ended {
		add(c)
	}
	return bytesSent, packetsSent, packetsLost
}

// runLane connects lane n of the session whose primary connection is
// primary and, once connected, ends the session (cancel) if the lane ends
// before it.
func (p *peer) runLane(ctx context.Context, cancel context.CancelCauseFunc, ls *laneSet, primary *quic.Conn, n uint32, tok wire.LaneToken) {
	conn, err := p.dialLane(ctx, ls, primary, n, tok)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn(fmt.Sprintf("lane %d not connected, the session goes on with fewer lanes: %s", n, explain(err)))
		}
		return
	}
	if !ls.add(n, conn) {
		conn.CloseWithError(appCode(wire.CodeShutdown), "its session ended")
		return
	}
	p.log.Info("lane connected", "lane", n, "lanes", ls.count())
	select {
	case <-conn.Context().Done():
		cancel(&laneError{n: n, cause: context.Cause(conn.Context())})
	case <-ctx.Done():
	}
}

// dialLane dials lane n and binds it to the session with the token: it
// returns once the slave acknowledged it.
func (p *peer) dialLane(ctx context.Context, ls *laneSet, primary *quic.Conn, n uint32, tok wire.LaneToken) (_ *quic.Conn, err error) {
	dctx, dcancel := context.WithTimeout(ctx, dialTimeout)
	defer dcancel()
	conn, err := quic.DialAddr(dctx, p.addr, p.tlsConfig(), p.m.cfg.quic)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", p.addr, err)
	}
	defer func() {
		if err != nil {
			conn.CloseWithError(appCode(codeOf(err)), err.Error())
			ls.addEnded(conn)
		}
	}()
	s, err := conn.OpenStreamSync(dctx)
	if err != nil {
		return nil, fmt.Errorf("open lane stream: %w", err)
	}
	lh := wire.LaneHello{Version: wire.Version, Token: tok, Lane: n}
	if _, err := s.Write(wire.AppendFrame(nil, wire.FrameLaneHello, lh.Append(nil), nil)); err != nil {
		return nil, fmt.Errorf("send lane-hello: %w", err)
	}
	// With QUIC mTLS the dial succeeded before the slave checked our
	// certificate (docs/design.md, Implementation traps): nothing goes on
	// the lane before
	// its LaneAck.
	s.SetReadDeadline(time.Now().Add(helloTimeout))
	kind, body, err := wire.NewFrameReader(s, nil).Next()
	if err != nil {
		if errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrTruncated) {
			err = fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return nil, fmt.Errorf("waiting for lane-ack: %w", err)
	}
	switch kind {
	case wire.FrameLaneAck:
	case wire.FrameError:
		return nil, peerError(body)
	default:
		return nil, fmt.Errorf("%w: %v frame instead of lane-ack", ErrProtocol, kind)
	}
	s.SetReadDeadline(time.Time{})
	// The same slave as the primary connection, and one CheckPeer still
	// accepts (a revocation list reloaded since).
	if !sameCert(conn, primary) {
		return nil, fmt.Errorf("%w: the lane's slave certificate (CN %q) is not the one of the session's connection (CN %q)",
			ErrLane, peerCN(conn), peerCN(primary))
	}
	p.m.mu.Lock()
	err = p.m.checkPeerLocked(conn)
	p.m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return conn, nil
}
