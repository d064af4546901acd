package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestSlaveRefusesOp: a slave that refuses an op by its policy (a file
// past its --max-file-size) shows as refused on the master, which keeps
// the op in its journal and the mount going; restarted with a larger
// bound, the slave takes it and converges.
func TestSlaveRefusesOp(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1", "--max-file-size", "1M")
	m := startMaster(t, k, []*slave{s})
	m.waitLine(`resync pass done`+ofSlave(s.addr), 60*time.Second)
	if err := os.WriteFile(filepath.Join(m.mnt, "big"), bytes.Repeat([]byte("b"), 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	m.waitLine(`the slave refuses an op of this master`+ofSlave(s.addr)+`.*beyond the largest file`, 60*time.Second)
	waitStatus1(t, m, "refused", 30*time.Second, func(p slaveRow) bool { return p.State == "refused" })
	if err := os.WriteFile(filepath.Join(m.mnt, "after"), []byte("the mount goes on"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.stop(syscall.SIGTERM, 30*time.Second)

	mark := m.mark()
	s2 := restartSlaveWith(t, k, "s1", s, "--max-file-size", "16T")
	m.waitLineFrom(mark, `slave applies ops again`+ofSlave(s.addr), 60*time.Second)
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s2}, 60*time.Second)
	waitStatus1(t, m, "streaming", 30*time.Second, func(p slaveRow) bool { return p.State == "streaming" })
	m.stop(syscall.SIGTERM, 60*time.Second)
	s2.stop(syscall.SIGTERM, 30*time.Second)
}
