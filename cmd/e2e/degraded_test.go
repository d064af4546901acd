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

// TestDegraded: in fsync mode a slave that stops answering holds fsync back
// only for --sync-timeout, is marked degraded, and catches up once it runs
// again; the other slave is never held back for longer.
func TestDegraded(t *testing.T) {
	k := newPKI(t, "s1", "s2")
	slaves := []*slave{startSlave(t, k, "s1"), startSlave(t, k, "s2")}
	m := startMaster(t, k, slaves, "--sync-timeout", "1s")
	for _, s := range slaves {
		// Past its first pass: a slave being compared holds no writer
		// back, so stopping it then proves nothing.
		m.waitLine(`resync pass done`+ofSlave(s.addr), 30*time.Second)
	}
	stuck := slaves[1]
	stuck.cmd.Process.Signal(syscall.SIGSTOP)
	stopped := true
	t.Cleanup(func() {
		if stopped {
			stuck.cmd.Process.Signal(syscall.SIGCONT)
		}
	})
	f, err := os.Create(filepath.Join(m.mnt, "held"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte("x"), 300<<10)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Sync() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("fsync with a stopped slave: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("fsync stayed blocked by a stopped slave, far beyond --sync-timeout")
	}
	f.Close()
	m.waitLine(`slave degraded.*slave=`+stuck.addr, 30*time.Second)
	stuck.cmd.Process.Signal(syscall.SIGCONT)
	stopped = false
	syncMount(t, m.mnt)
	converge(t, m, slaves, 60*time.Second)
	m.stop(syscall.SIGTERM, 60*time.Second)
	for _, s := range slaves {
		s.stop(syscall.SIGTERM, 30*time.Second)
	}
}

// TestNeedsResync: a slave that is away while more ops than --backlog
// pass no longer needs a resync: the master's journal holds what the
// memory backlog dropped, and the slave resumes from it; a slave that
// never saw this master is compared with the backing dir and repaired,
// without any operator's help.
func TestNeedsResync(t *testing.T) {
	k := newPKI(t, "s1")
	addr := freeUDPAddr(t)
	m := startMaster(t, k, []*slave{{addr: addr}}, "--backlog", "16M", "--sync", "async")
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	write := func(prefix string) {
		t.Helper()
		for i := range 24 {
			if err := os.WriteFile(filepath.Join(m.mnt, prefix+string(rune('A'+i))), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("f")
	m.waitLine(`backlog full`, 30*time.Second)
	s := startSlaveAt(t, k, "s1", addr)
	s.waitLine(`following master epoch \w+: a new replica`, 30*time.Second)
	m.waitLine(`slave connected: it needs a resync`+ofSlave(addr), 30*time.Second)
	m.waitLine(`resync pass done`+ofSlave(addr), 60*time.Second)
	converge(t, m, []*slave{s}, 60*time.Second)

	// Away (stopped cleanly) while more than --backlog passes.
	s.stop(syscall.SIGTERM, 30*time.Second)
	write("g")
	mark := m.mark()
	s2 := restartSlave(t, k, "s1", s)
	m.waitLineFrom(mark, `slave connected: resuming`+ofSlave(addr)+`.*from=journal`, 60*time.Second)
	converge(t, m, []*slave{s2}, 60*time.Second)
	noResync(t, m, mark, addr)
	m.stop(syscall.SIGTERM, 60*time.Second)
	s2.stop(syscall.SIGTERM, 30*time.Second)
}

// TestEnvVars: every setting can come from TDFS_* environment variables.
func TestEnvVars(t *testing.T) {
	k := newPKI(t, "s1")
	base := t.TempDir()
	rep, back, mnt := filepath.Join(base, "replica"), filepath.Join(base, "back"), filepath.Join(base, "mnt")
	for _, d := range []string{rep, back, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	addr := freeUDPAddr(t)
	env := func(extra ...string) []string {
		return append(os.Environ(), append(extra, "TDFS_CA="+filepath.Join(k.dir, "ca.crt"))...)
	}
	scmd := exec.Command(bin("tdfs-slave"))
	scmd.Env = env("TDFS_DIR="+rep, "TDFS_LISTEN="+addr, "TDFS_STATE="+filepath.Join(base, "state"),
		"TDFS_CERT="+filepath.Join(k.dir, "s1.crt"), "TDFS_KEY="+filepath.Join(k.dir, "s1.key"))
	s := startCmd(t, "tdfs-slave", scmd)
	s.waitLine(`msg=listening`, 30*time.Second)
	mcmd := exec.Command(bin("tdfs-master"))
	mcmd.Env = env("TDFS_DIR="+back, "TDFS_MOUNT="+mnt, "TDFS_STATE="+filepath.Join(base, "mstate"), "TDFS_CONNECT="+addr, "TDFS_SYNC=sync",
		"TDFS_COMPRESS=3", "TDFS_CERT="+filepath.Join(k.dir, "master.crt"), "TDFS_KEY="+filepath.Join(k.dir, "master.key"))
	mp := startCmd(t, "tdfs-master", mcmd)
	t.Cleanup(func() {
		if mounted(mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	mp.waitLine(`msg=mounted.*sync=sync`, 30*time.Second)
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("configured by environment"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &master{proc: mp, dir: back, mnt: mnt}
	converge(t, m, []*slave{{proc: s, dir: rep, addr: addr}}, 60*time.Second)
	m.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}
