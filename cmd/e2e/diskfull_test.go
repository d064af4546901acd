package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestSlaveDiskFull: a slave whose disk fills up (its replica on a small
// tmpfs), or goes read-only, cannot apply a write: the master marks it degraded, goes on
// serving the mount (an fsync does not wait for it), keeps the ops in its
// journal and retries; once there is room again (the tmpfs grown) the
// slave applies what it lacked and converges, nothing lost.
func TestSlaveDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	k := newPKI(t, "s1")
	dir := tmpfsReplica(t, "4m")
	s := startSlaveIn(t, k, "s1", dir)
	m := startMaster(t, k, []*slave{s})
	m.waitLine(`resync pass done`+ofSlave(s.addr), 60*time.Second)
	if err := os.WriteFile(filepath.Join(m.mnt, "small"), []byte("fits"), 0o644); err != nil {
		t.Fatal(err)
	}
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s}, 60*time.Second)

	// 8 MiB do not fit in the slave's 4: the master's mount goes on.
	big := bytes.Repeat([]byte("0123456789abcdef"), 8<<20/16)
	f, err := os.Create(filepath.Join(m.mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(big); off += 256 << 10 {
		if _, err := f.Write(big[off : off+256<<10]); err != nil {
			t.Fatalf("write through the mount while the slave's disk is full: %v", err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- f.Sync() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("fsync while the slave's disk is full: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("fsync blocked on a slave that cannot apply")
	}
	f.Close()
	m.waitLine(`slave degraded: it cannot apply ops`+ofSlave(s.addr), 60*time.Second)
	waitStatus1(t, m, "degraded", 30*time.Second, func(p slaveRow) bool { return p.State == "degraded" })
	if err := os.WriteFile(filepath.Join(m.mnt, "after"), []byte("still works"), 0o644); err != nil {
		t.Fatalf("the mount with a degraded slave: %v", err)
	}

	// Room again: the slave catches up on what the journal kept.
	mark := m.mark()
	if out, err := exec.Command("mount", "-o", "remount,size=64m", dir).CombinedOutput(); err != nil {
		t.Fatalf("grow tmpfs: %v\n%s", err, out)
	}
	m.waitLineFrom(mark, `slave applies ops again`+ofSlave(s.addr), 60*time.Second)
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s}, 60*time.Second)
	waitStatus1(t, m, "streaming without lag", 30*time.Second, func(p slaveRow) bool {
		return p.State == "streaming" && p.LagOps == 0
	})

	// A replica gone read-only (EROFS) likewise, until it is writable.
	mark = m.mark()
	if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount read-only: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(m.mnt, "while-ro"), []byte("kept in the journal"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.waitLineFrom(mark, `slave degraded: it cannot apply ops`+ofSlave(s.addr), 60*time.Second)
	if out, err := exec.Command("mount", "-o", "remount,rw", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount read-write: %v\n%s", err, out)
	}
	m.waitLineFrom(mark, `slave applies ops again`+ofSlave(s.addr), 60*time.Second)
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s}, 60*time.Second)
	m.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}

// waitStatus1 polls the status of the master's only slave until cond.
func waitStatus1(t *testing.T, m *master, what string, timeout time.Duration, cond func(slaveRow) bool) {
	t.Helper()
	waitStatus(t, m, what, timeout, func(st statusAnswer) bool { return cond(st.Slaves[0]) })
}
