package e2e

import (
	"os"
	"os/exec"
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

	// Killed with nothing open and everything durable (the kernel's last
	// RELEASEs may still be arriving: wait until the slave recorded all it
	// applied), the restarted slave resumes.
	waitClean(t, s)
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
	waitClean(t, s2)
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

// TestMasterRestart: after a clean shutdown (unmount, drain) a restarted
// master is followed by its slave from where it stood; after a SIGKILL of
// the master the slave cannot know what it missed, and says it needs a
// resync instead of following blindly.
func TestMasterRestart(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s})
	workloadSmall(t, m.mnt)
	m.stop(syscall.SIGTERM, 60*time.Second)
	converge(t, m, []*slave{s}, 30*time.Second)

	m2 := m.restart(t)
	s.waitLine(`restarted cleanly`, 30*time.Second)
	for i := range 5 {
		if err := os.WriteFile(filepath.Join(m2.mnt, "dir1", "second-run"+string(rune('0'+i))), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(filepath.Join(m2.mnt, "dir2"), filepath.Join(m2.mnt, "dir2-renamed")); err != nil {
		t.Fatal(err)
	}
	syncMount(t, m2.mnt)
	converge(t, m2, []*slave{s}, 60*time.Second)

	m2.cmd.Process.Kill()
	<-m2.done
	// The mount of a killed master stays behind, dead: clear it.
	syscall.Unmount(m2.mnt, syscall.MNT_DETACH)
	m3 := m2.restart(t)
	m3.waitLine(`needs resync at seq \d+: the slave reports: .*did not end cleanly`, 60*time.Second)
	m3.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}

// TestSlaveCrashMidStream: a slave killed while it holds applied ops that
// are not yet durable cannot tell which of them its tree holds (re-applying
// a rename would move the wrong file): after the restart it says it needs a
// resync, and the master stops sending to it.
func TestSlaveCrashMidStream(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s}, "--sync", "async")
	m.waitLine(`slave state: streaming`, 30*time.Second)
	// A stream of renames and creates, and the slave is killed in the
	// middle of it (async: nothing makes it sync).
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < 100000 && err == nil; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			p := filepath.Join(m.mnt, "f")
			if err = os.WriteFile(p, []byte("v"), 0o644); err == nil {
				err = os.Rename(p, filepath.Join(m.mnt, "g"))
			}
		}
		done <- err
	}()
	s.waitLine(`master connected`, 30*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(s.dir, "g")); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	// Kill it while it holds applied ops it has not made durable.
	waitDirty(t, s)
	s.cmd.Process.Kill()
	<-s.done
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s2 := restartSlave(t, k, "s1", s)
	s2.waitLine(`cannot follow a master until it is resynchronised: this slave stopped without syncing`, 30*time.Second)
	m.waitLine(`needs resync at seq \d+: the slave reports: .*stopped without syncing`, 60*time.Second)
	m.stop(syscall.SIGTERM, 60*time.Second)
	s2.stop(syscall.SIGTERM, 30*time.Second)
}

// TestSeededSlave: a slave added to an existing tree, seeded by hand with a
// copy of the backing dir while the master is stopped, is refused (its
// tree cannot be proved to match) until the operator vouches for it with
// --assume-in-sync; then it follows.
func TestSeededSlave(t *testing.T) {
	k := newPKI(t, "s1", "s2")
	s1 := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s1})
	workloadSmall(t, m.mnt)
	m.stop(syscall.SIGTERM, 60*time.Second)

	// The new slave's replica: a copy of the backing dir.
	s2dir := filepath.Join(t.TempDir(), "replica")
	if out, err := exec.Command("cp", "-a", m.dir, s2dir).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	s2 := startSlaveIn(t, k, "s2", s2dir)
	args := append(append([]string(nil), m.args...), "-c", s2.addr)
	m2 := &master{proc: start(t, "tdfs-master", args...), dir: m.dir, mnt: m.mnt, args: args}
	m2.waitLine(`msg=mounted`, 30*time.Second)
	m2.waitLine(`needs resync at seq \d+: the slave reports: .*no replication state`, 60*time.Second)
	m2.stop(syscall.SIGTERM, 60*time.Second)

	args = append(args, "--assume-in-sync")
	m3 := &master{proc: start(t, "tdfs-master", args...), dir: m.dir, mnt: m.mnt, args: args}
	m3.waitLine(`msg=mounted`, 30*time.Second)
	s2.waitLine(`vouches that this replica matches`, 30*time.Second)
	if err := os.WriteFile(filepath.Join(m3.mnt, "dir3", "after-seeding"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	syncMount(t, m3.mnt)
	converge(t, m3, []*slave{s1, s2}, 60*time.Second)
	m3.stop(syscall.SIGTERM, 60*time.Second)
	s1.stop(syscall.SIGTERM, 30*time.Second)
	s2.stop(syscall.SIGTERM, 30*time.Second)
}

// dirtyMarker is the slave's marker of applied ops not yet durable.
func dirtyMarker(s *slave) string { return filepath.Join(filepath.Dir(s.dir), "state", "dirty") }

// waitClean waits until the slave holds no applied op it has not made
// durable (it syncs when idle).
func waitClean(t *testing.T, s *slave) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(dirtyMarker(s)); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slave %s still has unsynced ops after 30s", s.addr)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by the deadline
	}
}

// waitDirty waits until the slave holds applied ops it has not made
// durable.
func waitDirty(t *testing.T, s *slave) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(dirtyMarker(s)); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slave %s never had unsynced ops", s.addr)
		}
		time.Sleep(time.Millisecond) // polling a condition, bounded by the deadline
	}
}
