package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/tdfs/tdfs/mirrorfs"
	"github.com/tdfs/tdfs/wire"
)

// policies keeps what the mount allows beyond ordinary entries: the
// strictest of this master's own configuration (--allow-setuid,
// --allow-devices) and of the policy each slave announced in its
// handshake. The slaves' policies are kept in the journal dir, so that
// after a restart the mount enforces them from its first op, before the
// slaves connect. A slave never seen stands at the master's own
// configuration: a stricter one may find entries it does not hold in the
// tree and in the ops journaled before it connected, which it leaves out
// of its replica and reports.
type policies struct {
	log *slog.Logger
	dir string // the journal dir, where policiesFile is kept ("": not kept)

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
	old, known := p.slaves[slave]
	p.slaves[slave] = sp
	if known && old == sp {
		return
	}
	if err := p.saveLocked(); err != nil {
		p.log.Warn("cannot record the slaves' policies (after a restart the mount enforces them only once the slaves connect)", "err", err)
	}
	if p.own.Flags&sp.Flags != p.own.Flags {
		p.log.Warn("this slave holds less than the master's configuration allows: the mount now refuses the rest, "+
			"and what the tree already holds beyond it is left out of that replica and reported by verify",
			"slave", slave, "slave_policy", sp.String(), "master_policy", p.own.String())
	}
	if p.mount != nil {
		p.mount.SetPolicy(p.effectiveLocked())
	}
}

// forget drops a removed slave's policy: the mount allows again what only
// it did not hold.
func (p *policies) forget(slave string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.slaves[slave]; !ok {
		return
	}
	delete(p.slaves, slave)
	if err := p.saveLocked(); err != nil {
		p.log.Warn("cannot record the slaves' policies", "err", err)
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

// effective is the policy the mount enforces now.
func (p *policies) effective() wire.Policy {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.effectiveLocked()
}

func (p *policies) effectiveLocked() wire.Policy {
	e := p.own
	for _, sp := range p.slaves {
		e = e.Meet(sp)
	}
	return e
}

// policiesFile, in the journal dir, holds the policy each slave last
// announced, by its -c address.
const policiesFile = "slave-policies.json"

type policyRecord struct {
	Flags       wire.PolicyFlags `json:"flags"`
	MaxFileSize uint64           `json:"max_file_size"`
}

// loadPolicies reads the policies the configured slaves announced in
// earlier runs; one that cannot be read is logged and ignored (the slaves
// announce theirs again when they connect).
func loadPolicies(log *slog.Logger, dir string, own wire.Policy, slaves []string) *policies {
	p := &policies{log: log, dir: dir, own: own, slaves: make(map[string]wire.Policy)}
	data, err := os.ReadFile(filepath.Join(dir, policiesFile))
	if errors.Is(err, os.ErrNotExist) {
		return p
	}
	var recs map[string]policyRecord
	if err == nil {
		err = json.Unmarshal(data, &recs)
	}
	if err != nil {
		log.Warn("cannot read the slaves' policies of earlier runs: the mount enforces them once the slaves connect", "err", err)
		return p
	}
	for _, s := range slaves {
		if r, ok := recs[s]; ok {
			p.slaves[s] = wire.Policy{Flags: r.Flags, MaxFileSize: r.MaxFileSize}
		}
	}
	return p
}

func (p *policies) saveLocked() error {
	if p.dir == "" {
		return nil
	}
	recs := make(map[string]policyRecord, len(p.slaves))
	for s, sp := range p.slaves {
		recs[s] = policyRecord{Flags: sp.Flags, MaxFileSize: sp.MaxFileSize}
	}
	data, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	return writeDurable(p.dir, policiesFile, append(data, '\n'))
}
