package quictransport

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// The replication fence (the user.tdfs.synced xattr of the mount;
// docs/design.md, The fence): WaitSynced tells a caller that every slave it
// can reach holds and has made durable every op up to a seq. It differs from
// Wait, which bounds how long writers are held back: Wait gives up on a slow
// slave (marks it degraded) and reports nothing; WaitSynced never reports
// success for a connected slave that lacks the ops, and says so with an error
// instead.

// ErrNotSynced: WaitSynced's SyncTimeout passed before every connected
// slave was durable at the seq (or while one was being resynchronised).
var ErrNotSynced = errors.New("slaves not synced")

// Master has mirrorfs.SyncedWaiter's method set (mirrorfs may not be
// imported here: dependencies point one way).
var _ interface {
	WaitSynced(ctx context.Context, seq uint64) error
	SyncedSlaves(seq uint64) int
} = (*Master)(nil)

// SyncedSlaves counts the slaves durable at seq and consistent (not being
// resynchronised), connected or not: what a fence that returned covered.
func (m *Master) SyncedSlaves(seq uint64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.syncedCountLocked(seq)
}

// WaitSynced returns nil once every connected slave has made ops up to seq
// durable and is prefix-consistent; the caller has appended a wire.Sync at
// seq, so each slave syncs as soon as it applies it, in every sync mode (in
// async mode with the ops that arrived with it: within 10 ms).
//
// Which slaves count: a slave counts from the moment WaitSynced sees it
// streaming (handshake done) until WaitSynced returns, degraded or not. A
// slave that is not connected at any time during the wait (down, dialing,
// refusing this master) does not count: the master cannot tell whether it
// will ever return, and holds what it lacks for it. One that loses its
// connection during the wait still counts: it must come back and catch up.
//
// A slave being resynchronised is not prefix-consistent (docs/design.md,
// Catch-up) whatever seq it acknowledged: it counts as not synced until its
// pass has ended and it acknowledged every item of it, the ResyncEnd included
// (the slave syncs at a ResyncEnd, so its durable seq then covers the pass).
// So does a slave owed a comparison pass after a crash (CheckAll). A verify
// pass changes nothing and does not hold the fence.
//
// It waits at most SyncTimeout; it then returns an error wrapping
// ErrNotSynced that names the slaves that lacked the ops, and logs it. If
// ctx ends first (the FUSE request was interrupted) the error wraps ctx's.
// It marks no slave degraded and changes nothing writers wait for; a
// fence that succeeds logs nothing (a script may call it in a loop).
func (m *Master) WaitSynced(ctx context.Context, seq uint64) error {
	tctx, cancel := context.WithTimeout(ctx, m.cfg.SyncTimeout)
	defer cancel()
	counted := make(map[*peer]bool, len(m.peers))
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hurryLocked(seq)
	for {
		lacking := m.unsyncedLocked(seq, counted)
		if len(lacking) == 0 {
			if n := m.syncedCountLocked(seq); n < m.cfg.MinSlaves {
				lacking = append(lacking, fmt.Sprintf("%d slaves durable, %d required (--min-slaves)", n, m.cfg.MinSlaves))
			} else {
				return nil
			}
		}
		if tctx.Err() != nil {
			why := strings.Join(lacking, "; ")
			if ctx.Err() != nil {
				return fmt.Errorf("wait for slaves durable at seq %d: %w: %s", seq, ctx.Err(), why)
			}
			err := fmt.Errorf("%w at seq %d within the sync timeout (%v): %s", ErrNotSynced, seq, m.cfg.SyncTimeout, why)
			// Rare, and a reason not to deploy: said once per failed
			// read, naming the slaves it waited for.
			m.log.Warn("the fence timed out: "+err.Error(), "seq", seq)
			return err
		}
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ch:
		case <-tctx.Done():
		}
		m.mu.Lock()
	}
}

// unsyncedLocked describes the counted slaves that are not synced at seq,
// adding to counted those now streaming. Called with m.mu held.
func (m *Master) unsyncedLocked(seq uint64, counted map[*peer]bool) []string {
	var lacking []string
	for _, p := range m.peers {
		streaming := p.state == stateStreaming
		if streaming {
			counted[p] = true
		}
		switch {
		case !counted[p]:
		case !streaming:
			lacking = append(lacking, fmt.Sprintf("slave %s is %s, durable at seq %d", p.addr, p.stateName(), p.durable))
		case p.resyncingLocked():
			lacking = append(lacking, fmt.Sprintf("slave %s is being resynchronised", p.addr))
		case p.durable < seq:
			lacking = append(lacking, fmt.Sprintf("slave %s (%s) is durable at seq %d", p.addr, p.stateName(), p.durable))
		}
	}
	return lacking
}

// resyncingLocked reports whether the slave's tree may still differ from
// the master's as of the seqs it acknowledged: a rebase or comparison pass
// is owed or running, or the items of one are not all acknowledged yet
// (the pass ends on the master once its ResyncEnd is queued; the slave is
// consistent once it applied it). Called with m.mu held.
func (p *peer) resyncingLocked() bool {
	switch {
	case p.rebase || p.check:
		return true
	case p.pass != nil:
		return !p.pass.opts.Verify
	}
	return len(p.items) > 0 || p.itemsSent > p.itemsAcked
}

// syncedCountLocked counts the slaves durable at seq and consistent,
// connected or not. Called with m.mu held.
func (m *Master) syncedCountLocked(seq uint64) int {
	n := 0
	for _, p := range m.peers {
		if p.durable >= seq && !p.resyncingLocked() {
			n++
		}
	}
	return n
}
