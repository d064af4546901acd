package quictransport

import (
	"errors"
	"fmt"
	"time"

	"github.com/tdfs/tdfs/wire"
)

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
		if err := s.syncDeferred(); err != nil {
			return err
		}
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
		if s.mode == wire.ModeAsync {
			s.deferSync(seq)
			return nil
		}
		if err := s.syncThrough(seq); err != nil {
			return err
		}
		s.ackNow()
		return nil
	}
	if err := s.apply(seq, op); err != nil {
		return err
	}
	if s.srv.stalled.Load() {
		s.srv.setStall("") // applied by a new session after a stall
	}
	if s.syncDue != 0 && time.Since(s.syncSince) >= syncDeferMax {
		if err := s.syncDeferred(); err != nil {
			return err
		}
		pace.since = 0
		s.signalAck()
	} else if pace.applied(size) {
		s.signalAck()
	}
	return nil
}

// syncDeferMax bounds how long a Sync op of async mode waits, under a
// stream that never drains, for the ops after it.
const syncDeferMax = 10 * time.Millisecond

// deferSync takes Sync op seq of async mode: no writer waits for it, so
// the slave makes it durable together with every op that arrived with it,
// once it has applied them all (drained) or after syncDeferMax: one
// syncfs and one save of the state per burst instead of one per fsync on
// the master (a database's commits), which a slave on a slower disk could
// not keep up with.
func (s *session) deferSync(seq uint64) {
	if s.syncDue == 0 {
		s.syncSince = time.Now()
	}
	s.syncDue = seq
}

// syncDeferred makes the deferred Sync op durable, with every op applied
// after it.
func (s *session) syncDeferred() error {
	if s.syncDue == 0 {
		return nil
	}
	seq := max(s.syncDue, s.srv.cfg.Handler.State().Applied)
	s.syncDue = 0
	return s.syncThrough(seq)
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

// drained is the applier's step when it applied what had arrived: the
// deferred Sync of async mode, group commit in sync mode and after a Bye
// (the master waits for durable == head), an ack, then a wait for more,
// for the end, or for SyncInterval of idleness (idle), after which it
// makes what it applied durable in the background so Durable advances in
// every mode.
func (s *session) drained(idle *time.Timer) error {
	if err := s.syncDeferred(); err != nil {
		return err
	}
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
