package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	tslave "github.com/tdfs/tdfs/slave"
)

// TestSlaveRestart: a slave killed with SIGKILL and restarted on the same
// state resumes from what it made durable, from the master's backlog,
// without a resync; and so it does when a file was open for writing on
// the master across the restart: the slave reopens it under the same
// handle, and the writes after the restart land in it.
func TestSlaveRestart(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s})
	m.waitLine(`resync pass done`+ofSlave(s.addr), 60*time.Second) // a new replica is compared once
	workloadSmall(t, m.mnt)
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s}, 60*time.Second)

	// Killed with nothing open and everything durable (the kernel's last
	// RELEASEs may still be arriving: wait until the slave recorded all it
	// applied), the restarted slave resumes.
	waitClean(t, s)
	s.kill()
	for i := range 5 {
		if err := os.WriteFile(filepath.Join(m.mnt, "dir0", "later"+string(rune('0'+i))), []byte("after the kill"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mark := m.mark()
	s2 := restartSlave(t, k, "s1", s)
	m.waitLineFrom(mark, `slave connected: resuming`+ofSlave(s.addr), 60*time.Second)
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
	s2.kill()
	if _, err := f.Write([]byte(" and after the slave died")); err != nil {
		t.Fatal(err)
	}
	mark2 := m.mark()
	s3 := restartSlave(t, k, "s1", s)
	m.waitLineFrom(mark2, `slave connected: resuming`+ofSlave(s.addr), 60*time.Second)
	if _, err := f.Write([]byte(", and after it came back")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	converge(t, m, []*slave{s3}, 60*time.Second)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s3}, 60*time.Second)
	noResync(t, m, mark, s.addr)
	m.stop(syscall.SIGTERM, 60*time.Second)
	s3.stop(syscall.SIGTERM, 30*time.Second)
}

// restartSlave starts slave name again on old's address, directory and state.
func restartSlave(t *testing.T, k *pki, name string, old *slave) *slave {
	t.Helper()
	return restartSlaveWith(t, k, name, old)
}

// restartSlaveWith is restartSlave with extra flags.
func restartSlaveWith(t *testing.T, k *pki, name string, old *slave, extra ...string) *slave {
	t.Helper()
	args := append([]string{"-m", old.dir, "--listen", old.addr, "--state", slaveState(old)}, k.flags(name)...)
	p := start(t, "tdfs-slave", append(args, extra...)...)
	p.waitLine(`msg=listening`, 30*time.Second)
	return &slave{proc: p, dir: old.dir, addr: old.addr}
}

// TestMasterRestart: a master restarted after a clean shutdown goes on
// numbering where it stopped, and its slave follows from where it stood;
// after a SIGKILL of the idle master, the restarted one resumes the slave
// from the journal and compares it once with the backing dir, finding
// nothing to repair.
func TestMasterRestart(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s})
	m.waitLine(`resync pass done`+ofSlave(s.addr), 60*time.Second) // a new replica is compared once
	workloadSmall(t, m.mnt)
	m.stop(syscall.SIGTERM, 60*time.Second)
	last := intAttr(t, m.waitText(0, `msg=exiting`, time.Second), "last_seq")
	converge(t, m, []*slave{s}, 30*time.Second)

	m2 := m.restart(t)
	if first := intAttr(t, m2.waitText(0, `msg=mounted`, time.Second), "first_seq"); first != last+1 {
		t.Errorf("the restarted master numbers from %d, want %d (the last run ended at %d)", first, last+1, last)
	}
	m2.waitLine(`slave connected: resuming`+ofSlave(s.addr), 60*time.Second)
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
	noResync(t, m2, 0, s.addr)

	m2.crash()
	m3 := m2.restart(t)
	m3.waitLine(`previous run did not end cleanly`, 30*time.Second)
	m3.waitLine(`slave connected: resuming`+ofSlave(s.addr), 60*time.Second)
	check := m3.waitText(0, `check pass done`+ofSlave(s.addr), 60*time.Second)
	if d := intAttr(t, check, "differences"); d != 0 {
		t.Errorf("the check after a kill of an idle master found %d differences in an identical replica: %s", d, check)
	}
	noResync(t, m3, 0, s.addr)
	if err := os.WriteFile(filepath.Join(m3.mnt, "third-run"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	syncMount(t, m3.mnt)
	converge(t, m3, []*slave{s}, 60*time.Second)
	m3.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}

// TestSlaveCrashMidStream: a slave killed while it holds applied ops that
// are not yet durable (re-applying a rename blindly would move the wrong
// file) learns from its progress log how far its tree got, and resumes
// there: no resync, and it converges.
func TestSlaveCrashMidStream(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s}, "--sync", "async")
	m.waitLine(`resync pass done`+ofSlave(s.addr), 60*time.Second) // a new replica is compared once
	// A stream of renames and creates, and the slave is killed in the
	// middle of it (async: nothing makes it sync).
	w := runBackground(t, 0, 100000, func(i int) (int, error) {
		p := filepath.Join(m.mnt, "f")
		if err := os.WriteFile(p, []byte(fmt.Sprint(i)), 0o644); err != nil {
			return 0, err
		}
		return 1, os.Rename(p, filepath.Join(m.mnt, "g"))
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(s.dir, "g")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the renames never reached the slave")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	// Kill it while it holds applied ops it has not made durable.
	waitDirty(t, s)
	s.kill()
	mark := m.mark()
	s2 := restartSlave(t, k, "s1", s)
	s2.waitLine(`resuming after a stop without sync`, 30*time.Second)
	m.waitLineFrom(mark, `slave connected: resuming`+ofSlave(s.addr), 60*time.Second)
	after := w.steps.Load() + 100
	w.waitFor(t, "100 more renames", 60*time.Second, func(b *background) bool { return b.steps.Load() >= after })
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	converge(t, m, []*slave{s2}, 60*time.Second)
	noResync(t, m, mark, s.addr)
	m.stop(syscall.SIGTERM, 60*time.Second)
	s2.stop(syscall.SIGTERM, 30*time.Second)
}

// TestSeededSlave: a slave added to an existing tree with a replica that
// is an imperfect copy of the backing dir (made while the master was
// stopped, then changed) is adopted by comparison: only the files that
// differ are sent, extra ones are removed, and it converges.
func TestSeededSlave(t *testing.T) {
	k := newPKI(t, "s1", "s2")
	s1 := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s1})
	seedTree(t, m.mnt)
	m.stop(syscall.SIGTERM, 60*time.Second)

	// The new slave's replica: a copy of the backing dir, spoilt.
	s2dir := filepath.Join(t.TempDir(), "replica")
	if out, err := exec.Command("cp", "-a", m.dir, s2dir).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	differing := spoil(t, s2dir)
	s2 := startSlaveIn(t, k, "s2", s2dir)
	args := append(append([]string(nil), m.args...), "-c", s2.addr)
	m2 := &master{proc: start(t, "tdfs-master", args...), dir: m.dir, mnt: m.mnt, journal: m.journal, args: args}
	m2.waitLine(`msg=mounted`, 30*time.Second)
	m2.waitLine(`slave connected: it needs a resync`+ofSlave(s2.addr), 60*time.Second)
	done := m2.waitText(0, `resync pass done`+ofSlave(s2.addr), 120*time.Second)
	converge(t, m2, []*slave{s1, s2}, 60*time.Second)
	size := treeSize(t, m.dir)
	files, sent := intAttr(t, done, "files_sent"), intAttr(t, done, "bytes_sent")
	t.Logf("tree %d bytes, 3 differing files of %d bytes; resync: %s", size, differing, done)
	if files != 3 {
		t.Errorf("the resync sent %d files, want the 3 whose contents differ", files)
	}
	if sent > uint64(differing)+16<<10 {
		t.Errorf("the resync sent %d bytes; the files that differ hold %d", sent, differing)
	}
	noResync(t, m2, 0, s1.addr)

	if err := os.WriteFile(filepath.Join(m2.mnt, "dir3", "after-seeding"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	syncMount(t, m2.mnt)
	converge(t, m2, []*slave{s1, s2}, 60*time.Second)
	m2.stop(syscall.SIGTERM, 60*time.Second)
	s1.stop(syscall.SIGTERM, 30*time.Second)
	s2.stop(syscall.SIGTERM, 30*time.Second)
}

// dirty reports whether the slave's state says it holds applied ops not
// yet durable.
func dirty(t *testing.T, s *slave) bool {
	t.Helper()
	st, err := tslave.LoadState(slaveState(s))
	if err != nil {
		t.Fatal(err)
	}
	return st.Dirty
}

// waitClean waits until the slave holds no applied op it has not made
// durable (it syncs when idle).
func waitClean(t *testing.T, s *slave) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if !dirty(t, s) {
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
		if dirty(t, s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slave %s never had unsynced ops", s.addr)
		}
		time.Sleep(time.Millisecond) // polling a condition, bounded by the deadline
	}
}
