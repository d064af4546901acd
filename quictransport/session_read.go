package quictransport

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

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
	// The stream carries one frame: read into a buffer of its own, which
	// the op keeps (no read-ahead buffer, no copy out of it).
	kind, body, err := wire.ReadFrame(rs, s.srv.dec)
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
	if _, _, err := wire.ReadFrame(rs, nil); !errors.Is(err, io.EOF) {
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
	// Ops alias what they decode (Write.Data): the control stream's
	// reader reuses its buffer, a data stream's body is the op's alone.
	b := body
	if control {
		b = bytes.Clone(body)
	}
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
