package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPromotionFencesOldMaster: master A feeds slaves S1 and S2. A stops;
// S1 is promoted (tdfs-master on S1's replica, with S1's state, and a new
// journal) and S2 follows it. When A comes back, S2 refuses it (its
// epoch was superseded: split brain averted), A says it is fenced, A's
// writes go nowhere, and the promoted master keeps feeding S2,
// undisturbed by A's attempts.
func TestPromotionFencesOldMaster(t *testing.T) {
	k := newPKI(t, "s1", "s2")
	// S2 logs at debug level: it logs a fenced master's refusal once at
	// warn level, and each later attempt at debug level only.
	s1, s2 := startSlave(t, k, "s1"), startSlave(t, k, "s2", "--log-level", "debug")
	a := startMaster(t, k, []*slave{s1, s2})
	for _, s := range []*slave{s1, s2} {
		a.waitLine(`resync pass done`+ofSlave(s.addr), 60*time.Second)
	}
	workloadSmall(t, a.mnt)
	syncMount(t, a.mnt)
	converge(t, a, []*slave{s1, s2}, 60*time.Second)
	a.stop(syscall.SIGTERM, 60*time.Second)
	s1.stop(syscall.SIGTERM, 30*time.Second)

	// Promote S1.
	b := startMasterOn(t, k, s1.dir, filepath.Join(t.TempDir(), "journal-b"), []string{s2.addr},
		"--slave-state", slaveState(s1))
	b.waitLine(`promoted`, 10*time.Second)
	s2.waitLine(`following master epoch \w+: the master's epoch \w+ succeeds epoch \w+, which this slave followed`, 60*time.Second)
	b.waitLine(`resync pass done`+ofSlave(s2.addr), 60*time.Second)
	if err := os.WriteFile(filepath.Join(b.mnt, "dir1", "after-promotion"), []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	syncMount(t, b.mnt)
	converge(t, b, []*slave{s2}, 60*time.Second)

	// The old master comes back, on its old dirs and journal.
	mark := s2.mark()
	a2 := a.restart(t)
	a2.waitLine(`the slave refuses this master \(fenced\)`+ofSlave(s2.addr), 60*time.Second)
	const refused = `closing master connection: fenced: this slave follows master epoch \w+, which replaced this master's epoch`
	s2.waitLineFrom(mark, refused, 30*time.Second)
	if err := os.WriteFile(filepath.Join(a2.mnt, "from-the-stale-master"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A keeps asking (slowly): let it be refused once more while B writes.
	if err := os.WriteFile(filepath.Join(b.mnt, "dir2", "after-fencing"), []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(s2.linesFrom(mark, refused)) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the fenced master did not try again within 60s")
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	if l := s2.linesFrom(mark, `level=WARN msg="`+refused); len(l) != 1 {
		t.Errorf("the slave logged the fenced master's refusal %d times at warn level, want once:\n%s", len(l), strings.Join(l, "\n"))
	}
	syncMount(t, b.mnt)
	converge(t, b, []*slave{s2}, 60*time.Second)
	if _, err := os.Stat(filepath.Join(s2.dir, "from-the-stale-master")); !os.IsNotExist(err) {
		t.Errorf("a write of the fenced master reached the slave: %v", err)
	}
	// A refused connection must not cost the promoted master its own.
	if l := s2.linesFrom(mark, `replaces the current one|replaced by a newer connection`); len(l) > 0 {
		t.Errorf("the fenced master's attempts replaced the promoted master's connection:\n%s", strings.Join(l, "\n"))
	}
	a2.stop(syscall.SIGTERM, 60*time.Second)
	b.stop(syscall.SIGTERM, 60*time.Second)
	s2.stop(syscall.SIGTERM, 30*time.Second)
}
