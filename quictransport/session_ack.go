package quictransport

import (
	"errors"
	"fmt"
	"time"

	"github.com/tdfs/tdfs/wire"
)

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

// ackNow sends the latest Ack from the calling goroutine (the applier,
// after a Sync op: a writer on the master waits for it, and the hand-off
// to ackLoop would cost a wake-up on the way). If the write fails, ackLoop
// is told, and meets the failure itself. A later ack of ackLoop may carry
// older figures: the master keeps the highest.
func (s *session) ackNow() {
	a := s.currentAck()
	if err := s.writeFrame(wire.FrameAck, a.Append(nil)); err != nil {
		s.signalAck()
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
