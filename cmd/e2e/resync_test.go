package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestPartitionBeyondJournal: a slave cut off (the relay drops everything)
// while more than --journal-max is written can no longer be served ops:
// once the partition heals it is resynchronised by comparing trees, and
// since little of the tree changed, little is sent. The partition heals
// either while the QUIC connection still stands (the pass runs on it, and
// data streams sent before it arrive late), or after the connection died
// (the slave reconnects and is found behind the journal).
func TestPartitionBeyondJournal(t *testing.T) {
	for _, tc := range []struct {
		name string
		// untilLost: keep the partition until the master has lost the
		// connection (QUIC's idle timeout).
		untilLost bool
	}{{"connection-kept", false}, {"connection-lost", true}} {
		t.Run(tc.name, func(t *testing.T) { partitionBeyondJournal(t, tc.untilLost) })
	}
}

func partitionBeyondJournal(t *testing.T, untilLost bool) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	r, target := relayed(t, "s1", s.addr)
	m := startMasterTo(t, k, []string{target}, "--journal-max", "64M", "--backlog", "16M", "--sync", "async")
	m.waitLine(`resync pass done`+ofSlave(r.Addr()), 60*time.Second) // a new replica is compared once

	// An 8 MiB file and a few more MiB.
	big := make([]byte, 8<<20)
	rand.Read(big)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(m.mnt, "big"), big, 0o644))
	must(os.Mkdir(filepath.Join(m.mnt, "rest"), 0o755))
	for i := range 6 {
		b := make([]byte, 512<<10)
		rand.Read(b)
		must(os.WriteFile(filepath.Join(m.mnt, "rest", fmt.Sprintf("f%d", i)), b, 0o644))
	}
	converge(t, m, []*slave{s}, 60*time.Second)
	size := treeSize(t, m.dir)

	r.SetPartition(true)
	mark := m.mark()
	// 96 MiB of ops, more than the journal keeps, that change little:
	// the big file overwritten in place 12 times, each time differing in
	// its first bytes only (whichever of these writes reach the slave
	// before the pass, its copy differs in the first block only); and
	// one small file added.
	f, err := os.OpenFile(filepath.Join(m.mnt, "big"), os.O_WRONLY, 0)
	must(err)
	for i := range 12 {
		binary.LittleEndian.PutUint64(big, uint64(i))
		_, err := f.WriteAt(big, 0)
		must(err)
	}
	must(f.Close())
	must(os.WriteFile(filepath.Join(m.mnt, "rest", "new"), []byte("written during the partition"), 0o644))
	m.waitLineFrom(mark, `(the master no longer holds the ops it lacks|it needs a resync)`+ofSlave(r.Addr()), 60*time.Second)
	if untilLost {
		m.waitLineFrom(mark, `slave state: connecting`+ofSlave(r.Addr()), 60*time.Second)
	}
	if _, dropped := r.Stats(); dropped == 0 {
		t.Fatal("the relay dropped nothing: there was no partition")
	}
	r.SetPartition(false)

	done := m.waitText(mark, `resync pass done`+ofSlave(r.Addr()), 180*time.Second)
	converge(t, m, []*slave{s}, 60*time.Second)
	sent := intAttr(t, done, "bytes_sent")
	t.Logf("tree %d bytes, resync sent %d bytes: %s", size, sent, done)
	if sent > uint64(size)/10 {
		t.Errorf("the resync sent %d bytes for a tree of %d where one block and one small file changed", sent, size)
	}
	if untilLost {
		m.waitLineFrom(mark, `slave connected: it needs a resync \(it is at op \d+ and the master holds ops from \d+ on`+ofSlave(r.Addr()), time.Second)
	}
	m.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}

// seedTree writes, through mnt, ten dirs each with a file of random
// bytes (20000 + 5000*i bytes) and 4 MiB of bulk files.
func seedTree(t *testing.T, mnt string) {
	t.Helper()
	for i := range 10 {
		d := filepath.Join(mnt, fmt.Sprintf("dir%d", i))
		b := make([]byte, 20000+5000*i)
		rand.Read(b)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "f"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(mnt, "bulk"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		b := make([]byte, 1<<20)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(mnt, "bulk", fmt.Sprintf("b%d", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// spoil changes a copy of seedTree's tree: three files whose contents
// differ (one rewritten with its size kept, one longer, one missing), one with another mode only, and extra files and dirs. It
// returns the size the master's versions of the three files sum to.
func spoil(t *testing.T, dir string) int64 {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var sum int64
	p := func(i int) string { return filepath.Join(dir, fmt.Sprintf("dir%d", i), "f") }
	for _, i := range []int{3, 5, 7} {
		st, err := os.Stat(p(i))
		must(err)
		sum += st.Size()
	}
	// Same size, other bytes (and so another mtime: a resync pass, like
	// rsync, hashes the files whose size or mtime differ).
	f, err := os.OpenFile(p(3), os.O_WRONLY, 0)
	must(err)
	_, err = f.WriteAt(bytes.Repeat([]byte("X"), 100), 1000)
	must(err)
	must(f.Close())
	f, err = os.OpenFile(p(5), os.O_WRONLY|os.O_APPEND, 0)
	must(err)
	_, err = f.Write(bytes.Repeat([]byte("appended"), 125))
	must(err)
	must(f.Close())
	must(os.Remove(p(7)))
	must(os.Chmod(p(4), 0o600))
	must(os.WriteFile(filepath.Join(dir, "extra"), bytes.Repeat([]byte("e"), 200<<10), 0o644))
	must(os.MkdirAll(filepath.Join(dir, "dir2", "extra-dir", "deeper"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "dir2", "extra-dir", "deeper", "x"), []byte("x"), 0o644))
	return sum
}
