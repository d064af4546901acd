package quictransport

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/tdfs/tdfs/wire"
)

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
