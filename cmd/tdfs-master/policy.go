package main

import (
	"log/slog"
	"sync"

	"github.com/tdfs/tdfs/mirrorfs"
	"github.com/tdfs/tdfs/quictransport/wire"
)

// policies keeps what the mount allows beyond ordinary entries: the
// strictest of this master's own configuration (--allow-setuid,
// --allow-devices) and of the policy each slave announced in its
// handshake. Until a slave has connected in this run, the master's own
// configuration stands for it: a slave stricter than that may find
// entries it does not hold in the ops journaled before it connected and
// in the tree, which it leaves out of its replica and reports.
type policies struct {
	log *slog.Logger

	mu     sync.Mutex
	own    wire.Policy
	slaves map[string]wire.Policy
	mount  *mirrorfs.Server // nil until mounted
}

// ownPolicy is the master's own configuration: what its flags allow, and
// trusted.* xattrs and POSIX ACLs (it runs as root to mount).
func ownPolicy(allowSetuid, allowDevices bool) wire.Policy {
	p := wire.PermissivePolicy
	if !allowSetuid {
		p.Flags &^= wire.PolicySetid
	}
	if !allowDevices {
		p.Flags &^= wire.PolicyDevices
	}
	return p
}

// announce records the policy a slave announced (quictransport's
// OnPolicy: called with the Master's lock held; SetPolicy does not call
// back into it).
func (p *policies) announce(slave string, sp wire.Policy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.slaves == nil {
		p.slaves = make(map[string]wire.Policy)
	}
	p.slaves[slave] = sp
	if p.own.Flags&sp.Flags != p.own.Flags {
		p.log.Warn("this slave holds less than the master's configuration allows: the mount now refuses the rest, "+
			"and what the tree already holds beyond it is left out of that replica and reported by verify",
			"slave", slave, "slave_policy", sp.String(), "master_policy", p.own.String())
	}
	if p.mount != nil {
		p.mount.SetPolicy(p.effectiveLocked())
	}
}

// attach starts enforcing the policy on the mount.
func (p *policies) attach(srv *mirrorfs.Server) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mount = srv
	srv.SetPolicy(p.effectiveLocked())
}

func (p *policies) effectiveLocked() wire.Policy {
	e := p.own
	for _, sp := range p.slaves {
		e = e.Meet(sp)
	}
	return e
}
