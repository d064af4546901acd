package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The replication fence (docs/design.md, The fence): reading
// user.tdfs.synced on the mount
// blocks until every op issued before the read is durable on every
// connected slave, through a UDP relay that holds the traffic back.

const syncedXattr = "user.tdfs.synced"

type syncedResult struct {
	seq uint64
	err error
}

// readSynced reads the fence of path the way getfattr -n does: a size
// probe, then a read with a buffer of that size.
func readSynced(path string) syncedResult {
	sz, err := unix.Getxattr(path, syncedXattr, nil)
	if err != nil {
		return syncedResult{err: err}
	}
	buf := make([]byte, sz)
	n, err := unix.Getxattr(path, syncedXattr, buf)
	if err != nil {
		return syncedResult{err: err}
	}
	seq, err := strconv.ParseUint(string(buf[:n]), 10, 64)
	return syncedResult{seq: seq, err: err}
}

func readSyncedAsync(path string) <-chan syncedResult {
	ch := make(chan syncedResult, 1)
	go func() { ch <- readSynced(path) }()
	return ch
}

// noFenceLogs fails t if the master logged about the fence at info level
// or above from line mark on: a script may read it in a loop.
func noFenceLogs(t *testing.T, m *master, mark int) {
	t.Helper()
	if l := m.linesFrom(mark, `level=(INFO|WARN|ERROR).*(tdfs\.synced|synced fence)`); len(l) > 0 {
		t.Errorf("the master logged the fence:\n%s", strings.Join(l, "\n"))
	}
}

// TestSyncedFenceWaitsForTheSlave: in every --sync mode, a read of the
// fence made while the relay partitions the slave blocks; once the relay
// lets traffic through it returns a seq past the write that preceded it,
// and the slave's replica holds that write.
func TestSyncedFenceWaitsForTheSlave(t *testing.T) {
	for _, mode := range []string{"async", "fsync", "sync"} {
		t.Run(mode, func(t *testing.T) {
			k := newPKI(t, "s1")
			s := startSlave(t, k, "s1")
			r, target := relayed(t, "s1", s.addr)
			t.Cleanup(func() { r.SetPartition(false) }) // no read stays blocked on a failure
			m := startMasterTo(t, k, []string{target}, "--sync", mode, "--sync-timeout", "60s")
			m.waitLine(`resync pass done`+ofSlave(r.Addr()), 60*time.Second) // a new replica is compared once
			mark := m.mark()
			first := readSynced(m.mnt)
			if first.err != nil {
				t.Fatalf("fence with the slave in sync: %v", first.err)
			}

			// In sync mode the write itself waits for the slave: hold the
			// traffic back only after it.
			if mode != "sync" {
				r.SetPartition(true)
			}
			if err := os.Mkdir(filepath.Join(m.mnt, "deploy"), 0o755); err != nil {
				t.Fatal(err)
			}
			content := []byte("release " + mode)
			if err := os.WriteFile(filepath.Join(m.mnt, "deploy", "app.txt"), content, 0o644); err != nil {
				t.Fatal(err)
			}
			r.SetPartition(true)
			_, dropped := r.Stats()
			res := readSyncedAsync(filepath.Join(m.mnt, "deploy"))
			// Blocked: the master keeps (re)sending the fence's Sync and
			// the relay keeps dropping it.
			deadline := time.Now().Add(60 * time.Second)
			for {
				select {
				case got := <-res:
					t.Fatalf("the fence returned %+v while the relay held the slave back", got)
				default:
				}
				if _, d := r.Stats(); d >= dropped+5 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the master sent nothing the relay could hold back")
				}
				time.Sleep(20 * time.Millisecond) // polling the relay's counter, bounded by the deadline
			}
			select {
			case got := <-res:
				t.Fatalf("the fence returned %+v while the relay held the slave back", got)
			default:
			}
			if mode != "sync" {
				if _, err := os.Stat(filepath.Join(s.dir, "deploy", "app.txt")); err == nil {
					t.Fatal("the write reached the slave through a partition")
				}
			}

			r.SetPartition(false)
			var got syncedResult
			select {
			case got = <-res:
			case <-time.After(60 * time.Second):
				t.Fatal("the fence did not return once the relay let traffic through")
			}
			if got.err != nil {
				t.Fatalf("fence: %v", got.err)
			}
			// mkdir, create and write were numbered between the two
			// fences, the second fence's Sync after them.
			if got.seq < first.seq+4 {
				t.Fatalf("fence after the write returned seq %d, the one before it %d", got.seq, first.seq)
			}
			if b, err := os.ReadFile(filepath.Join(s.dir, "deploy", "app.txt")); err != nil || string(b) != string(content) {
				t.Fatalf("after the fence the slave holds %q, %v; want %q", b, err, content)
			}
			noFenceLogs(t, m, mark)
			m.stop(syscall.SIGTERM, 60*time.Second)
			s.stop(syscall.SIGTERM, 30*time.Second)
		})
	}
}

// TestSyncedFenceTimesOut: with the relay dropping everything, the fence
// fails with ETIMEDOUT after --sync-timeout; once traffic flows again it
// succeeds.
func TestSyncedFenceTimesOut(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	r, target := relayed(t, "s1", s.addr)
	m := startMasterTo(t, k, []string{target}, "--sync-timeout", "1s")
	m.waitLine(`resync pass done`+ofSlave(r.Addr()), 60*time.Second)
	mark := m.mark()
	if err := os.WriteFile(filepath.Join(m.mnt, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.SetPartition(true)
	select {
	case got := <-readSyncedAsync(m.mnt):
		if !errors.Is(got.err, syscall.ETIMEDOUT) {
			t.Fatalf("fence through a partition: %+v, want ETIMEDOUT", got)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the fence blocked beyond --sync-timeout")
	}
	r.SetPartition(false)
	// QUIC resends after its backoff, which may exceed the 1 s timeout:
	// read again until the slave has caught up.
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := readSynced(m.mnt)
		if got.err == nil {
			break
		}
		if !errors.Is(got.err, syscall.ETIMEDOUT) || time.Now().After(deadline) {
			t.Fatalf("fence after the partition: %v", got.err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(s.dir, "f")); err != nil || string(b) != "x" {
		t.Fatalf("after the fence the slave holds %q, %v", b, err)
	}
	noFenceLogs(t, m, mark)
	m.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}
