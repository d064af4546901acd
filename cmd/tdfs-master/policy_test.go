package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/tdfs/tdfs/wire"
)

// TestPoliciesKeptAcrossRuns: the policy a slave announced is the mount's
// from the first op of the next run, for a slave still configured; the
// master's own configuration bounds it; a damaged file is ignored.
func TestPoliciesKeptAcrossRuns(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	own := ownPolicy(true, true)
	p := loadPolicies(log, dir, own, []string{"a:1", "b:2"})
	if got := p.effective(); got != own {
		t.Fatalf("no slave seen: %v, want the master's own %v", got, own)
	}
	strict := wire.Policy{Flags: wire.PolicyPrivXattrs, MaxFileSize: 1 << 30}
	p.announce("a:1", strict)
	p.announce("b:2", wire.PermissivePolicy)
	if got := p.effective(); got != strict {
		t.Fatalf("after announcements: %v, want %v", got, strict)
	}

	next := loadPolicies(log, dir, own, []string{"a:1", "b:2"})
	if got := next.effective(); got != strict {
		t.Errorf("next run: %v, want %v", got, strict)
	}
	// A slave removed from the configuration no longer counts.
	if got := loadPolicies(log, dir, own, []string{"b:2"}).effective(); got != own.Meet(wire.PermissivePolicy) {
		t.Errorf("a removed from the configuration: %v, want %v", got, own)
	}
	// The master's own configuration bounds what a permissive slave allows.
	if got := loadPolicies(log, dir, ownPolicy(false, false), []string{"b:2"}).effective(); got.Allows(wire.PolicySetid) || got.Allows(wire.PolicyDevices) {
		t.Errorf("master without --allow-setuid/--allow-devices: %v", got)
	}
	if err := os.WriteFile(filepath.Join(dir, policiesFile), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := loadPolicies(log, dir, own, []string{"a:1"}).effective(); got != own {
		t.Errorf("damaged file: %v, want the master's own %v", got, own)
	}
}
