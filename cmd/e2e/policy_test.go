package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/internal/treecmp"
)

// TestPolicyAtTheMount: what the slave's default policy does not hold is
// refused at the master's mount, to the application, and replication goes
// on for every later op of every user. The case that halted a replica for
// good before: an unprivileged user's chmod g+s of its own file.
func TestPolicyAtTheMount(t *testing.T) {
	t.Parallel()
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1", "--max-file-size", "1M")
	m := startMaster(t, k, []*slave{s}, "--allow-other")
	m.waitLine(`resync pass done`+ofSlave(s.addr), 60*time.Second)
	waitStatus1(t, m, "the slave's policy", 30*time.Second, func(p slaveRow) bool {
		return strings.Contains(p.Policy, "no-setid,no-devices") && strings.Contains(p.Policy, "max-file-size=1048576")
	})
	openUp(t, m.mnt)
	if err := os.Mkdir(filepath.Join(m.mnt, "u"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(m.mnt, "u"), 0o777); err != nil {
		t.Fatal(err)
	}
	// An ordinary user's chmod g+s of its own file: EPERM, mode kept.
	out, ok := asNobody(t, "cd "+m.mnt+"/u && echo mine > f && chmod 02755 f; echo rc=$?; stat -c %a f")
	if !strings.Contains(out, "Operation not permitted") || !strings.Contains(out, "rc=1") || !strings.HasSuffix(out, "644") {
		t.Errorf("nobody's chmod 02755: ok=%v %q, want EPERM and mode 644", ok, out)
	}
	// Root's setuid chmod, a device node, a file past the slave's bound.
	if err := unix.Chmod(filepath.Join(m.mnt, "u/f"), 0o4755); !errors.Is(err, unix.EPERM) {
		t.Errorf("root's chmod 04755: %v, want EPERM", err)
	}
	if err := unix.Mknod(filepath.Join(m.mnt, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); !errors.Is(err, unix.EPERM) {
		t.Errorf("mknod of a char device: %v, want EPERM", err)
	}
	err := os.WriteFile(filepath.Join(m.mnt, "big"), bytes.Repeat([]byte("b"), 2<<20), 0o644)
	if !errors.Is(err, unix.EFBIG) {
		t.Errorf("a 2 MiB file with a 1 MiB bound on the slave: %v, want EFBIG", err)
	}
	m.waitLine(`refused, as a slave would not replicate it`, 10*time.Second)
	// Every later op of every user replicates.
	if out, ok := asNobody(t, "cd "+m.mnt+"/u && echo later > g && mkdir -m 2775 shared"); !ok {
		t.Errorf("nobody's later ops: %q", out)
	}
	if err := os.WriteFile(filepath.Join(m.mnt, "after"), []byte("the mount goes on"), 0o644); err != nil {
		t.Fatal(err)
	}
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s}, 60*time.Second)
	st := statusOf(t, m).Slaves[0]
	if st.State != "streaming" {
		t.Errorf("slave state %q, want streaming", st.State)
	}
	if strings.Contains(s.output(), "closing master connection") {
		t.Errorf("the slave closed the connection:\n%s", s.output())
	}
	m.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}

// TestPolicyAllowed: with --allow-setuid and --allow-devices on master and
// slave, set-id files, file capabilities and device nodes replicate, by op
// and by a resync pass of a new replica.
func TestPolicyAllowed(t *testing.T) {
	t.Parallel()
	k := newPKI(t, "s1", "s2")
	allow := []string{"--allow-setuid", "--allow-devices"}
	s1 := startSlave(t, k, "s1", allow...)
	m := startMaster(t, k, []*slave{s1}, allow...)
	m.waitLine(`resync pass done`+ofSlave(s1.addr), 60*time.Second)
	mustDo(t, os.WriteFile(filepath.Join(m.mnt, "sudo"), []byte("#!/bin/sh\n"), 0o755))
	mustDo(t, unix.Chmod(filepath.Join(m.mnt, "sudo"), 0o4755))
	mustDo(t, os.WriteFile(filepath.Join(m.mnt, "ping"), []byte("#!/bin/sh\n"), 0o755))
	mustDo(t, unix.Setxattr(filepath.Join(m.mnt, "ping"), "security.capability", capNetRaw, 0))
	mustDo(t, unix.Mknod(filepath.Join(m.mnt, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	mustDo(t, unix.Mknod(filepath.Join(m.mnt, "loop9"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 9))))
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s1}, 60*time.Second)
	// A new slave gets them by a pass.
	m.stop(syscall.SIGTERM, 60*time.Second)
	s2 := startSlave(t, k, "s2", allow...)
	m = startMasterOn(t, k, m.dir, m.journal, []string{s1.addr, s2.addr}, allow...)
	m.waitLine(`resync pass done`+ofSlave(s2.addr), 60*time.Second)
	converge(t, m, []*slave{s1, s2}, 60*time.Second)
	var st unix.Stat_t
	mustDo(t, unix.Lstat(filepath.Join(s2.dir, "loop9"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != unix.Mkdev(7, 9) {
		t.Errorf("s2's loop9: mode %#o rdev %#x", st.Mode, st.Rdev)
	}
	m.stop(syscall.SIGTERM, 60*time.Second)
	s1.stop(syscall.SIGTERM, 30*time.Second)
	s2.stop(syscall.SIGTERM, 30*time.Second)
}

// TestPolicyStricterSlave: a slave that holds less than the tree already
// has (set-id files, devices made while only a permissive slave was
// configured) is never halted: its pass leaves them out and reports them,
// verify lists them, the mount refuses more of them from then on, and
// every other op replicates to it.
func TestPolicyStricterSlave(t *testing.T) {
	t.Parallel()
	k := newPKI(t, "s1", "s2")
	allow := []string{"--allow-setuid", "--allow-devices"}
	s1 := startSlave(t, k, "s1", allow...)
	m := startMaster(t, k, []*slave{s1}, allow...)
	m.waitLine(`resync pass done`+ofSlave(s1.addr), 60*time.Second)
	mustDo(t, os.MkdirAll(filepath.Join(m.mnt, "bin"), 0o755))
	mustDo(t, os.WriteFile(filepath.Join(m.mnt, "bin/sudo"), []byte("#!/bin/sh\n"), 0o755))
	mustDo(t, unix.Chmod(filepath.Join(m.mnt, "bin/sudo"), 0o4755))
	mustDo(t, unix.Mknod(filepath.Join(m.mnt, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	mustDo(t, os.WriteFile(filepath.Join(m.mnt, "plain"), []byte("plain"), 0o644))
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s1}, 60*time.Second)
	m.stop(syscall.SIGTERM, 60*time.Second)

	// s2 runs with the defaults.
	s2 := startSlave(t, k, "s2")
	m = startMasterOn(t, k, m.dir, m.journal, []string{s1.addr, s2.addr}, allow...)
	m.waitLine(`resync pass done`+ofSlave(s2.addr), 60*time.Second)
	m.waitLine(`this slave holds less than the master's configuration allows`+ofSlave(s2.addr), 10*time.Second)
	leftOut := treecmp.Options{Exclude: []string{"bin/sudo", "null"}}
	convergeWith(t, m, s2, leftOut, 60*time.Second)
	for _, p := range []string{"bin/sudo", "null"} {
		if _, err := os.Lstat(filepath.Join(s2.dir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("s2 holds %s: %v", p, err)
		}
	}
	out, code := verify(t, m)
	if code == 0 || !strings.Contains(out, "bin/sudo") || !strings.Contains(out, "null") || !strings.Contains(out, "left out by this slave's policy") {
		t.Errorf("verify: exit %d, want the left-out entries listed:\n%s", code, out)
	}
	// The mount now allows only what both slaves hold.
	mustDo(t, os.WriteFile(filepath.Join(m.mnt, "bin/new"), []byte("x"), 0o755))
	if err := unix.Chmod(filepath.Join(m.mnt, "bin/new"), 0o4755); !errors.Is(err, unix.EPERM) {
		t.Errorf("chmod 04755 with a strict slave connected: %v, want EPERM", err)
	}
	mustDo(t, os.WriteFile(filepath.Join(m.mnt, "later"), []byte("later"), 0o644))
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s1}, 60*time.Second)
	convergeWith(t, m, s2, leftOut, 60*time.Second)
	var st statusAnswer
	mustDo(t, json.Unmarshal([]byte(runOK(t, bin("tdfs-master"), "status", "-m", m.dir, "--journal", m.journal, "--json")), &st))
	for _, p := range st.Slaves {
		if p.State != "streaming" {
			t.Errorf("slave %s state %q, want streaming", p.Addr, p.State)
		}
	}
	m.stop(syscall.SIGTERM, 60*time.Second)
	s1.stop(syscall.SIGTERM, 30*time.Second)
	s2.stop(syscall.SIGTERM, 30*time.Second)
}

// capNetRaw is a version 2 security.capability value granting
// CAP_NET_RAW (13) permitted and effective.
var capNetRaw = []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
