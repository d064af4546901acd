package e2e

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Slaves that come and go (docs/design.md, Catch-up), through a userspace
// UDP relay between
// the master and each slave.

// TestSlaveJoinsLate: a slave started 20 s after the master, while a
// workload runs all along, is compared with the backing dir and repaired
// while live ops keep flowing, then follows them: it converges.
func TestSlaveJoinsLate(t *testing.T) {
	k := newPKI(t, "s1")
	addr := freeUDPAddr(t)
	r, target := relayed(t, "s1", addr)
	m := startMasterTo(t, k, []string{target})
	started := time.Now()
	w := runBackground(t, 10*time.Millisecond, 20000, churnStep(m.mnt))
	m.waitLine(`slave connection failed`+ofSlave(r.Addr()), 30*time.Second) // nobody listens yet

	// The scenario: the slave starts 20 s after the master (a
	// deliberate fixed wait, the one the spec asks for).
	time.Sleep(time.Until(started.Add(20 * time.Second)))
	mark := m.mark()
	s := startSlaveAt(t, k, "s1", addr)
	m.waitLineFrom(mark, `slave connected: it needs a resync`+ofSlave(r.Addr()), 60*time.Second)
	done := m.waitText(mark, `resync pass done`+ofSlave(r.Addr()), 120*time.Second)
	t.Logf("%s", done)
	// The workload ran during the pass and goes on after it.
	after := w.steps.Load() + 50
	w.waitFor(t, "50 more steps after the resync pass", 60*time.Second, func(b *background) bool { return b.steps.Load() >= after })
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s}, 60*time.Second)
	m.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}

// TestSlaveKilledMidWrite: a slave killed with SIGKILL in the middle of a
// large write workload, and restarted while more than the memory backlog
// passed, is served from the journal: no resync, and it converges.
func TestSlaveKilledMidWrite(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	r, target := relayed(t, "s1", s.addr)
	m := startMasterTo(t, k, []string{target}, "--backlog", "16M", "--sync", "async")
	m.waitLine(`resync pass done`+ofSlave(r.Addr()), 60*time.Second) // a new replica is compared once

	// 4 files of 2 MiB, rewritten in 256 KiB pwrites (at most 64 MB/s).
	w := runBackground(t, 4*time.Millisecond, 2000, bigWriteStep(m.mnt, 4, 2<<20, 256<<10))
	w.waitFor(t, "16 MiB written", 120*time.Second, func(b *background) bool { return b.bytes.Load() >= 16<<20 })
	waitDirty(t, s)
	s.kill()
	// More than --backlog while it is away: the journal must cover it.
	gap := w.bytes.Load() + 24<<20
	w.waitFor(t, "24 MiB written while the slave is away", 120*time.Second,
		func(b *background) bool { return b.bytes.Load() >= gap })
	mark := m.mark()
	s2 := restartSlave(t, k, "s1", s)
	m.waitLineFrom(mark, `slave connected: resuming`+ofSlave(r.Addr())+`.*from=journal`, 60*time.Second)
	more := w.bytes.Load() + 4<<20
	w.waitFor(t, "4 MiB written after the restart", 120*time.Second, func(b *background) bool { return b.bytes.Load() >= more })
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	converge(t, m, []*slave{s2}, 120*time.Second)
	noResync(t, m, mark, r.Addr())
	m.stop(syscall.SIGTERM, 60*time.Second)
	s2.stop(syscall.SIGTERM, 30*time.Second)
}

// TestMasterKilledMidWorkload: the master killed with SIGKILL while a
// workload runs, and restarted on the same dirs, brings every slave to
// its backing dir (the journal's tail and the backing dir may disagree
// after a kill: each slave is compared once), and numbering goes on.
func TestMasterKilledMidWorkload(t *testing.T) {
	k := newPKI(t, "s1", "s2")
	s1, s2 := startSlave(t, k, "s1"), startSlave(t, k, "s2")
	r1, t1 := relayed(t, "s1", s1.addr)
	r2, t2 := relayed(t, "s2", s2.addr)
	m := startMasterTo(t, k, []string{t1, t2})
	for _, r := range []string{r1.Addr(), r2.Addr()} {
		m.waitLine(`resync pass done`+ofSlave(r), 60*time.Second)
	}
	w := runBackground(t, 2*time.Millisecond, 20000, churnStep(m.mnt))
	w.waitFor(t, "300 steps", 120*time.Second, func(b *background) bool { return b.steps.Load() >= 300 })
	m.crash()
	w.finish() // its steps fail once the mount is gone: expected
	steps := w.steps.Load()

	m2 := m.restart(t)
	m2.waitLine(`previous run did not end cleanly`, 30*time.Second)
	if first := intAttr(t, m2.waitText(0, `msg=mounted`, time.Second), "first_seq"); first < uint64(steps) {
		t.Errorf("the restarted master numbers from %d, below the %d steps (each several ops) of the killed run", first, steps)
	}
	for _, r := range []string{r1.Addr(), r2.Addr()} {
		m2.waitLine(`(check|resync) pass done`+ofSlave(r), 120*time.Second)
	}
	// The new run's ops reach the slaves on top of the repaired trees.
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(m2.mnt, "churn", "after-restart"+string(rune('0'+i))), []byte("new run"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	syncMount(t, m2.mnt)
	converge(t, m2, []*slave{s1, s2}, 120*time.Second)
	m2.stop(syscall.SIGTERM, 60*time.Second)
	s1.stop(syscall.SIGTERM, 30*time.Second)
	s2.stop(syscall.SIGTERM, 30*time.Second)
}
