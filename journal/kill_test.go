package journal

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const killDirEnv = "TDFS_JOURNAL_KILL_CHILD_DIR"

// What was flushed survives kill -9 of the process writing the journal,
// whatever it was doing when killed; the next Open repairs the rest.
func TestKill9(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), killDirEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	// Kill it once it reported some flushes, while it goes on writing.
	var flushed uint64
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if seq, ok := strings.CutPrefix(sc.Text(), "flushed "); ok {
			if flushed, err = strconv.ParseUint(seq, 10, 64); err != nil {
				t.Fatal(err)
			}
			if flushed >= 3000 {
				break
			}
		}
	}
	if flushed < 3000 {
		t.Fatalf("child stopped after reporting seq %d flushed: %v", flushed, sc.Err())
	}
	// Let it run freely for a few hundred more flushes, draining its
	// output, so it is killed while writing the journal rather than while
	// blocked on a full pipe.
	var more atomic.Uint64
	go func() {
		for sc.Scan() {
			if seq, ok := strings.CutPrefix(sc.Text(), "flushed "); ok {
				n, _ := strconv.ParseUint(seq, 10, 64)
				more.Store(n)
			}
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); more.Load() < flushed+3000; {
		if time.Now().After(deadline) {
			t.Fatalf("child stuck at %d", more.Load())
		}
		time.Sleep(100 * time.Microsecond)
	}
	flushed = more.Load()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed = true
	cmd.Wait()

	j := open(t, dir, Options{SegmentSize: 64 << 10})
	last := j.Last()
	if last < flushed {
		t.Fatalf("Last %d after kill -9, but %d was flushed (%v)", last, flushed, describe(j.Recovered()))
	}
	checkRecords(t, j, 1, last)
	t.Logf("flushed %d, recovered %d: %v", flushed, last, describe(j.Recovered()))
}

// TestKillChild is the process TestKill9 kills: it appends and flushes,
// reporting each flush, until killed (or 20 s or 10^6 records pass, should
// its parent be gone).
func TestKillChild(t *testing.T) {
	dir := os.Getenv(killDirEnv)
	if dir == "" {
		t.Skip("the process TestKill9 runs and kills")
	}
	j, err := Open(dir, Options{SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	stop := time.Now().Add(20 * time.Second)
	for seq := uint64(1); seq <= 1e6 && time.Now().Before(stop); seq++ {
		if err := j.Append(seq, body(seq)); err != nil {
			t.Fatal(err)
		}
		if seq%10 == 0 {
			if err := j.Flush(); err != nil {
				t.Fatal(err)
			}
			fmt.Printf("flushed %d\n", seq)
		}
	}
	t.Fatal("not killed")
}
