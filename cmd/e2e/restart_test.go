package e2e

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestSlaveRestart: a slave killed with SIGKILL and restarted on the same
// state resumes from what it made durable when the master still holds the
// rest; when a file was open for writing across the restart its writes
// cannot be placed, and the slave is reported as needing a resync instead
// of diverging silently.
func TestSlaveRestart(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s})
	m.waitLine(`slave state: streaming`, 30*time.Second)
	workloadSmall(t, m.mnt)
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s}, 60*time.Second)

	// Killed with nothing open: the restarted slave resumes.
	s.cmd.Process.Kill()
	<-s.done
	for i := range 5 {
		if err := os.WriteFile(filepath.Join(m.mnt, "dir0", "later"+string(rune('0'+i))), []byte("after the kill"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s2 := restartSlave(t, k, "s1", s)
	s2.waitLine(`resuming`, 30*time.Second)
	converge(t, m, []*slave{s2}, 60*time.Second)

	// Killed while a file is open for writing on the master.
	f, err := os.Create(filepath.Join(m.mnt, "open-across-restart"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	s2.cmd.Process.Kill()
	<-s2.done
	if _, err := f.Write([]byte(" and after the slave died")); err != nil {
		t.Fatal(err)
	}
	s3 := restartSlave(t, k, "s1", s)
	m.waitLine(`needs resync at seq \d+: the slave reports: .*unknown handle`, 60*time.Second)
	s3.waitLine(`closing master connection: .*restarted while the file was open`, 30*time.Second)
	f.Close()
	m.stop(syscall.SIGTERM, 60*time.Second)
	s3.stop(syscall.SIGTERM, 30*time.Second)
}

// restartSlave starts slave name again on old's address, directory and state.
func restartSlave(t *testing.T, k *pki, name string, old *slave) *slave {
	t.Helper()
	state := filepath.Join(filepath.Dir(old.dir), "state")
	args := append([]string{"-m", old.dir, "--listen", old.addr, "--state", state}, k.flags(name)...)
	p := start(t, "tdfs-slave", args...)
	p.waitLine(`msg=listening`, 30*time.Second)
	return &slave{proc: p, dir: old.dir, addr: old.addr}
}
