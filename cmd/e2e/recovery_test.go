package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Recovery that needs no operator: every apply failure of a slave is
// either a missing resource (it waits, keeps what it received, and says
// why) or proof that its tree differs from the master's (it is compared
// and repaired at once).

// TestUncleanRestartNewOpsOnLostState: a master killed with kill -9 may
// leave changes in its backing dir that it never journaled (its last
// ops), so no slave has them; the new run's first ops may act on them.
// Here the lost tail is a file made in the backing dir while the master
// is down (what an unjournaled create leaves), opened for writing through
// the mount by the new run before the slave is back: the slave resumes
// from the journal and meets an open of a file it never had. It must
// converge by itself (before the fix it closed the connection with "apply
// failed ... no such file or directory" at every reconnection, for ever,
// its comparison pass never reaching the file).
func TestUncleanRestartNewOpsOnLostState(t *testing.T) {
	t.Parallel() // its own daemons, dirs and ports; the suite is long
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s}, "--sync", "async", "-z", "1")
	m.waitLine(`resync pass done`+ofSlave(s.addr), 60*time.Second)
	if err := os.MkdirAll(filepath.Join(m.mnt, "m"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(m.mnt, "m", fmt.Sprintf("%06d", i)), bytes.Repeat([]byte{byte(i)}, 1000*i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s}, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
	m.crash()

	// The killed run's unjournaled tail: a file and a directory the
	// slave never heard of, and a file it has with other contents.
	lost := filepath.Join(m.dir, "m", "023574")
	if err := os.WriteFile(lost, []byte("created by the killed run"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(m.dir, "lostdir", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, "m", "000003"), []byte("rewritten by the killed run"), 0o644); err != nil {
		t.Fatal(err)
	}

	m2 := m.restart(t)
	m2.waitLine(`previous run did not end cleanly`, 30*time.Second)
	// The new run's first ops act on what the slave lacks.
	f, err := os.OpenFile(filepath.Join(m2.mnt, "m", "023574"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(", appended by the new run"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m2.mnt, "lostdir", "sub", "new"), []byte("in a lost dir"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(m2.mnt, "m", "000003"), filepath.Join(m2.mnt, "lostdir", "moved")); err != nil {
		t.Fatal(err)
	}

	mark := m2.mark()
	s2 := restartSlave(t, k, "s1", s)
	m2.waitLineFrom(mark, `slave connected: resuming`+ofSlave(s.addr), 60*time.Second)
	m2.waitLineFrom(mark, `(check|resync) pass done`+ofSlave(s.addr), 60*time.Second)
	converge(t, m2, []*slave{s2}, 60*time.Second)
	if l := m2.linesFrom(mark, `apply failed`); len(l) > 0 {
		t.Errorf("the slave could not apply the new run's ops:\n%s", strings.Join(l, "\n"))
	}
	waitStatus1(t, m2, "streaming", 30*time.Second, func(p slaveRow) bool { return p.State == "streaming" })
	if out, code := verify(t, m2); code != 0 {
		t.Errorf("verify after convergence: exit %d\n%s", code, out)
	}
	m2.stop(syscall.SIGTERM, 60*time.Second)
	s2.stop(syscall.SIGTERM, 30*time.Second)
}

// TestReplicaWiped: a replica whose contents are removed while its state
// dir is kept (the slave believes it holds everything up to its durable
// seq) is found different at the first op that meets the difference and
// compared and repaired at once, without an operator; the master logs it
// once, naming the op and the path.
func TestReplicaWiped(t *testing.T) {
	t.Parallel() // its own daemons, dirs and ports; the suite is long
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s})
	m.waitLine(`resync pass done`+ofSlave(s.addr), 60*time.Second)
	workloadSmall(t, m.mnt)
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s}, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)

	entries, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	mark := m.mark()
	s2 := restartSlave(t, k, "s1", s)
	m.waitLineFrom(mark, `slave connected: resuming`+ofSlave(s.addr), 60*time.Second)
	// An op on what the slave no longer has.
	if err := os.WriteFile(filepath.Join(m.mnt, "dir1", "after-wipe"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	line := m.waitText(mark, `tree differs from this master's: resynchronising it`+ofSlave(s.addr), 30*time.Second)
	if !strings.Contains(line, "dir1") {
		t.Errorf("the master's line does not name the path: %s", line)
	}
	m.waitLineFrom(mark, `resync pass done`+ofSlave(s.addr), 60*time.Second)
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s2}, 60*time.Second)
	if n := len(m.linesFrom(mark, `tree differs from this master's`)); n != 1 {
		t.Errorf("the divergence was logged %d times, want once", n)
	}
	waitStatus1(t, m, "streaming", 30*time.Second, func(p slaveRow) bool { return p.State == "streaming" })
	if out, code := verify(t, m); code != 0 {
		t.Errorf("verify after the repair: exit %d\n%s", code, out)
	}

	// Wiped again, with nothing written afterwards: nothing meets the
	// difference, so the operator asks for the comparison.
	s2.stop(syscall.SIGTERM, 30*time.Second)
	if err := os.RemoveAll(filepath.Join(s.dir, "dir1")); err != nil {
		t.Fatal(err)
	}
	mark = m.mark()
	s3 := restartSlave(t, k, "s1", s)
	m.waitLineFrom(mark, `slave connected: resuming`+ofSlave(s.addr), 60*time.Second)
	out := runOK(t, bin("tdfs-master"), "resync", "-m", m.dir, "--journal", m.journal, "s1")
	if !strings.Contains(out, "resync requested") {
		t.Errorf("tdfs-master resync said: %s", out)
	}
	m.waitLineFrom(mark, `resync pass done`+ofSlave(s.addr), 60*time.Second)
	converge(t, m, []*slave{s3}, 60*time.Second)
	if out, err := exec.Command(bin("tdfs-master"), "resync", "-m", m.dir, "--journal", m.journal, "nosuchslave").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), `no such slave "nosuchslave"`) {
		t.Errorf("resync of an unknown slave: %v: %s", err, out)
	}
	m.stop(syscall.SIGTERM, 60*time.Second)
	s3.stop(syscall.SIGTERM, 30*time.Second)
}

// TestDiskFullSendsNothingTwice: a slave whose disk is full keeps the
// ops it received and retries them itself: while it waits, almost
// nothing crosses the network (before, the master reconnected every few
// seconds and sent the same megabytes again); status names the cause
// first; once there is room it catches up, and, with nothing written
// meanwhile, its state returns to streaming on an idle tree.
func TestDiskFullSendsNothingTwice(t *testing.T) {
	t.Parallel() // its own daemons, dirs and ports; the suite is long
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	k := newPKI(t, "s1")
	dir := tmpfsReplica(t, "4m")
	s := startSlaveIn(t, k, "s1", dir)
	m := startMaster(t, k, []*slave{s}, "--sync", "fsync", "--sync-timeout", "2s")
	m.waitLine(`resync pass done`+ofSlave(s.addr), 60*time.Second)

	// 6 MiB of incompressible data into 4 MiB.
	data := make([]byte, 6<<20)
	rand.NewChaCha8([32]byte{1}).Read(data)
	if err := os.WriteFile(filepath.Join(m.mnt, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	m.waitLine(`slave degraded: it cannot apply ops`+ofSlave(s.addr), 60*time.Second)
	waitStatus1(t, m, "degraded with its cause", 30*time.Second, func(p slaveRow) bool {
		return p.State == "degraded" && strings.HasPrefix(p.Cause, "disk full: ")
	})
	before := statusOf(t, m).Slaves[0].WireBytes
	// Long enough for several retries of the slave (and, before, several
	// reconnections of the master, each sending the file again).
	s.waitLine(`cannot apply op \d+: disk full`, 10*time.Second)
	waitStatus1(t, m, "stalled for 4 s", 30*time.Second, func(p slaveRow) bool {
		return p.State == "degraded" && len(s.linesFrom(0, `cannot apply op`)) > 0 && stalledFor(t, s) >= 4*time.Second
	})
	after := statusOf(t, m).Slaves[0].WireBytes
	if grew := after - before; grew > 512<<10 {
		t.Errorf("%d bytes sent while the slave waited for room (from %d to %d): data sent again", grew, before, after)
	}
	if n := len(s.linesFrom(0, `cannot apply op`)); n != 1 {
		t.Errorf("the slave logged the stall %d times, want once", n)
	}

	mark := m.mark()
	if out, err := exec.Command("mount", "-o", "remount,size=64m", dir).CombinedOutput(); err != nil {
		t.Fatalf("grow tmpfs: %v\n%s", err, out)
	}
	m.waitLineFrom(mark, `slave applies ops again`+ofSlave(s.addr), 60*time.Second)
	converge(t, m, []*slave{s}, 60*time.Second)
	// Idle tree: nothing is written, and yet the state clears.
	waitStatus1(t, m, "streaming on an idle tree", 30*time.Second, func(p slaveRow) bool {
		return p.State == "streaming" && p.Cause == "" && p.LagOps == 0
	})
	total := statusOf(t, m).Slaves[0].WireBytes
	if total > 2*uint64(len(data))+(2<<20) {
		t.Errorf("%d bytes on the wire for a %d-byte file: data was sent again", total, len(data))
	}
	m.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}

// stalledFor is how long the slave says it has been stalled (0 if not).
func stalledFor(t *testing.T, s *slave) time.Duration {
	t.Helper()
	out := runOK(t, bin("tdfs-slave"), "status", "-m", s.dir, "--state", slaveState(s), "--json")
	var st struct {
		Stalled      string     `json:"stalled"`
		StalledSince *time.Time `json:"stalled_since"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("tdfs-slave status --json: %v\n%s", err, out)
	}
	if st.StalledSince == nil {
		return 0
	}
	return time.Since(*st.StalledSince)
}

// TestDiskFullDuringResync: a new slave too small for the tree stalls in
// the middle of its resync pass, keeps the data it received, and sends
// nothing twice (before, each failure ended the connection and the next
// pass sent the same files again); once there is room the pass ends and,
// with nothing written, the slave is healthy.
func TestDiskFullDuringResync(t *testing.T) {
	t.Parallel() // its own daemons, dirs and ports; the suite is long
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	k := newPKI(t, "s1")
	base := t.TempDir()
	backing := filepath.Join(base, "backing")
	if err := os.Mkdir(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{2})
	for i := range 6 {
		data := make([]byte, 1<<20)
		rng.Read(data)
		if err := os.WriteFile(filepath.Join(backing, fmt.Sprintf("f%d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := tmpfsReplica(t, "3m")
	s := startSlaveIn(t, k, "s1", dir)
	m := startMasterOn(t, k, backing, filepath.Join(base, "journal"), []string{s.addr}, "-z", "1")
	m.waitLine(`slave degraded: it cannot apply ops: resync item`+ofSlave(s.addr), 60*time.Second)
	waitStatus1(t, m, "degraded with its cause", 30*time.Second, func(p slaveRow) bool {
		return p.State == "degraded" && strings.HasPrefix(p.Cause, "disk full: ")
	})
	before := statusOf(t, m).Slaves[0].WireBytes
	waitStatus1(t, m, "stalled for 4 s", 30*time.Second, func(slaveRow) bool { return stalledFor(t, s) >= 4*time.Second })
	if grew := statusOf(t, m).Slaves[0].WireBytes - before; grew > 512<<10 {
		t.Errorf("%d bytes sent while the slave waited for room: data sent again", grew)
	}
	if l := m.linesFrom(0, `resync pass failed`); len(l) > 0 {
		t.Errorf("the pass was started over:\n%s", strings.Join(l, "\n"))
	}
	mark := m.mark()
	if out, err := exec.Command("mount", "-o", "remount,size=64m", dir).CombinedOutput(); err != nil {
		t.Fatalf("grow tmpfs: %v\n%s", err, out)
	}
	m.waitLineFrom(mark, `slave applies ops again`+ofSlave(s.addr), 60*time.Second)
	converge(t, m, []*slave{s}, 60*time.Second)
	waitStatus1(t, m, "streaming on an idle tree", 30*time.Second, func(p slaveRow) bool {
		return p.State == "streaming" && p.Cause == ""
	})
	if total := statusOf(t, m).Slaves[0].WireBytes; total > 9<<20 {
		t.Errorf("%d bytes on the wire for 6 MiB: data was sent again", total)
	}
	m.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}

// tmpfsReplica makes a replica dir on a tmpfs of size (mount's size=),
// unmounted when the test ends: a disk that fills up.
func tmpfsReplica(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "replica")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tdfs-test", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}
