package quictransport

import (
	"fmt"

	"github.com/tdfs/tdfs/wire"
)

// The catch-up decision, in one place: when a slave connects, does it
// resume after the op it applied (from memory or the journal), or is it
// resynchronised by a rebase pass (a comparison of trees while live ops
// flow)? And what the master does when a slave says, mid-stream, that its
// tree differs (slaveNeedsResync: it is redialed at once and rebased).

// rebaseReasonLocked says why the slave that answered ack cannot resume
// from its applied op, or "" if it can.
func (m *Master) rebaseReasonLocked(ack wire.HelloAck) string {
	cfg := m.cfg
	switch {
	case ack.Epoch != cfg.Epoch:
		return "it follows another master epoch"
	case ack.Resyncing:
		return "its tree is of unknown state (a new replica, an interrupted resync, or a crash of its host)"
	case ack.Applied > m.bl.head:
		return fmt.Sprintf("it applied op %d, beyond the last this master numbered (%d)", ack.Applied, m.bl.head)
	}
	if ack.Run != cfg.Run {
		var rec *RunRecord
		for i := range cfg.Runs {
			if cfg.Runs[i].Run == ack.Run {
				rec = &cfg.Runs[i]
			}
		}
		switch {
		case rec == nil && ack.Applied > 0:
			return "its last master run is unknown to this master"
		case rec != nil && ack.Applied > rec.End:
			return fmt.Sprintf("it holds ops %d..%d of a master run that crashed before journaling them", rec.End+1, ack.Applied)
		}
	}
	if first := m.firstHeldLocked(); ack.Applied+1 < first {
		return fmt.Sprintf("it is at op %d and the master holds ops from %d on (the journal did not cover its absence)", ack.Applied, first)
	}
	return ""
}

// firstHeldLocked is the lowest seq the master can send: from memory, or
// from the journal when it joins the memory backlog without a gap.
func (m *Master) firstHeldLocked() uint64 {
	first := m.bl.first()
	if j := m.cfg.Journal; j != nil && j.Last() > 0 && j.Last()+1 >= first && j.First() < first {
		first = j.First()
	}
	return first
}

// memFirst is the lowest seq held in memory.
func (m *Master) memFirst() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bl.first()
}

// heldLocked describes the seqs the backlog holds, for messages.
func (m *Master) heldLocked() string {
	if len(m.bl.entries) == 0 {
		return fmt.Sprintf("no ops (head at %d)", m.bl.head)
	}
	return fmt.Sprintf("%d..%d", m.bl.first(), m.bl.head)
}

// needsResyncLocked gives up on the slave, which is at seq at and cannot
// be brought further from here: the master no longer holds op at+1 (the
// reason ""), or reason says why. Logged once per slave.
func (p *peer) needsResyncLocked(at uint64, reason string) {
	msg := fmt.Sprintf("slave %s needs resync: it is at seq %d, the master holds %s", p.addr, at, p.m.heldLocked())
	if reason != "" {
		msg = fmt.Sprintf("slave %s needs resync at seq %d: %s", p.addr, at, reason)
	}
	p.setErrLocked(msg)
	p.degraded = false
	if !p.resyncLogged {
		p.resyncLogged = true
		p.log.Error(msg)
	}
	p.setStateLocked(stateNeedsResync)
	p.poke()
}

// slaveNeedsResync reports whether err is the slave saying it needs a
// resync, by a FrameError or by the code of its QUIC close (whichever
// arrived first), and its reason.
func slaveNeedsResync(err error) (string, bool) { return slaveClosedWith(err, wire.CodeNeedsResync) }
