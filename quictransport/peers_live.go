package quictransport

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// The slave set changes while the master runs: AddPeer and RemovePeer.
// m.peers is replaced, never changed in place, under m.mu, so a loop
// over a copy taken under the lock (Append's pokes, Drain) sees a
// consistent set.

// ErrPeerExists: AddPeer of an address already replicated to.
var ErrPeerExists = errors.New("slave already configured")

// ErrNoSuchPeer: RemovePeer of a slave that is not configured.
var ErrNoSuchPeer = errors.New("no such slave")

// peerRun is what Run gives every peer loop, so that one added later
// starts the same way and one removed stops alone.
type peerRun struct {
	ctx context.Context
	wg  *sync.WaitGroup
}

// startLocked starts p's dial loop under Run's context, with a context of
// its own that RemovePeer cancels. m.mu is held and Run is running.
func (m *Master) startLocked(p *peer) {
	ctx, cancel := context.WithCancel(m.run.ctx)
	p.cancel, p.done = cancel, make(chan struct{})
	m.run.wg.Go(func() {
		defer close(p.done)
		p.loop(ctx)
	})
}

// AddPeer starts replicating to another slave. Its position is unknown
// until it connects (it holds the journal from then), and a new replica
// is compared with the tree and repaired, as at a start. Before Run it
// only joins the set.
func (m *Master) AddPeer(pc Peer) error {
	if pc.Addr == "" {
		return errors.New("quictransport: a slave needs an address")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.draining {
		return fmt.Errorf("quictransport: adding slave %s: the master is shutting down", pc.Addr)
	}
	for _, q := range m.peers {
		if q.addr == pc.Addr {
			return fmt.Errorf("%w: %s", ErrPeerExists, pc.Addr)
		}
	}
	p := newPeer(m, pc)
	m.peers = append(slices.Clip(m.peers), p)
	if m.run.ctx != nil {
		m.startLocked(p)
	}
	p.log.Info("slave added")
	m.broadcastLocked()
	return nil
}

// RemovePeer stops replicating to the slave named (its address, or the
// name its certificate must carry): its connection is closed, and what
// the master held for it alone (memory, journal) is released. A verify
// waiting for it fails. It returns the slave's address.
func (m *Master) RemovePeer(ctx context.Context, name string) (string, error) {
	m.mu.Lock()
	i := slices.IndexFunc(m.peers, func(p *peer) bool { return p.named(name) })
	if i < 0 {
		m.mu.Unlock()
		return "", fmt.Errorf("%w: %q", ErrNoSuchPeer, name)
	}
	p := m.peers[i]
	m.peers = slices.Delete(slices.Clone(m.peers), i, i+1)
	cancel, done := p.cancel, p.done
	m.broadcastLocked()
	m.mu.Unlock()
	if cancel != nil {
		cancel()
		select {
		case <-done:
		case <-ctx.Done():
			return p.addr, fmt.Errorf("slave %s removed, but its connection has not closed yet: %w", p.addr, ctx.Err())
		}
	}
	m.mu.Lock()
	for _, r := range p.verifies {
		r.err = fmt.Errorf("slave %s was removed", p.addr)
		close(r.done)
	}
	p.verifies = nil
	m.truncateDurableLocked()
	m.broadcastLocked()
	m.mu.Unlock()
	p.log.Info("slave removed: the master no longer holds ops for it")
	return p.addr, nil
}

// named reports whether name names p: its address, the name its
// certificate must carry, or the name its certificate carried.
func (p *peer) named(name string) bool {
	return p.addr == name || p.tls != nil && p.tls.ServerName == name || p.conn != nil && peerCN(p.conn) == name
}
