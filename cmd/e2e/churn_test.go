package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// background runs a workload on its own goroutine while the test does
// something else (starts, kills, partitions slaves), until stopped or
// until it has run max steps.
type background struct {
	stop    chan struct{}
	done    chan struct{}
	err     error // the first step that failed, after done
	steps   atomic.Int64
	bytes   atomic.Int64 // written so far
	stopped atomic.Bool
}

// runBackground calls step(i) for i = 0, 1, ... at most max times, at
// most one step per pace (0: no pacing), until finish is called or a step
// fails. step returns the bytes it wrote.
func runBackground(t *testing.T, pace time.Duration, max int, step func(i int) (int, error)) *background {
	t.Helper()
	b := &background{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		var tick <-chan time.Time
		if pace > 0 {
			// Pacing keeps the workload's volume (and the journal) small
			// over the seconds a test lets it run; nothing waits on it.
			tk := time.NewTicker(pace)
			defer tk.Stop()
			tick = tk.C
		}
		for i := 0; i < max; i++ {
			select {
			case <-b.stop:
				return
			default:
			}
			if tick != nil {
				select {
				case <-tick:
				case <-b.stop:
					return
				}
			}
			n, err := step(i)
			if err != nil {
				b.err = fmt.Errorf("workload step %d: %w", i, err)
				return
			}
			b.bytes.Add(int64(n))
			b.steps.Add(1)
		}
	}()
	t.Cleanup(func() { b.finish() })
	return b
}

// finish stops the workload and returns the error of the step that
// failed, if one did.
func (b *background) finish() error {
	if b.stopped.CompareAndSwap(false, true) {
		close(b.stop)
	}
	<-b.done
	return b.err
}

// waitFor waits until cond holds for the workload, failing the test if it
// ended or timeout passed first.
func (b *background) waitFor(t *testing.T, what string, timeout time.Duration, cond func(*background) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond(b) {
		select {
		case <-b.done:
			t.Fatalf("the workload ended (%v) before %s (%d steps, %d bytes)", b.err, what, b.steps.Load(), b.bytes.Load())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v (%d steps, %d bytes)", what, timeout, b.steps.Load(), b.bytes.Load())
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, bounded by the deadline
	}
}

// churnStep is one step of a metadata-heavy workload over a small tree
// (at most 8 dirs x 24 names of up to 24 KiB): create, overwrite, rename
// over, unlink, chmod, truncate, xattrs, hard links.
func churnStep(mnt string) func(i int) (int, error) {
	return func(i int) (int, error) {
		dir := filepath.Join(mnt, "churn", fmt.Sprintf("d%d", i%8))
		if i < 8 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return 0, err
			}
		}
		p := func(format string, a ...any) string { return filepath.Join(dir, fmt.Sprintf(format, a...)) }
		size := (i * 7919) % (24 << 10)
		data := bytes.Repeat([]byte{byte(i)}, size)
		if size >= 8 {
			binary.LittleEndian.PutUint64(data, uint64(i))
		}
		f := p("f%d", i%12)
		if err := os.WriteFile(f, data, 0o644); err != nil {
			return 0, err
		}
		var err error
		switch i % 6 {
		case 1:
			err = os.Rename(f, p("g%d", i%12))
		case 2:
			err = os.Remove(p("g%d", (i+5)%12))
		case 3:
			err = os.Chmod(f, 0o600|os.FileMode(i%2)*0o044)
		case 4:
			err = os.Truncate(f, int64(size/2))
		case 5:
			if err = unix.Setxattr(f, "user.step", []byte(fmt.Sprint(i)), 0); err == nil {
				l := p("h%d", i%4)
				if err = os.Remove(l); err == nil || errors.Is(err, os.ErrNotExist) {
					err = os.Link(f, l)
				}
			}
		}
		if errors.Is(err, os.ErrNotExist) {
			err = nil // the name was renamed away or removed by an earlier step
		}
		return size, err
	}
}

// bigWriteStep is one step of a large-write workload: chunk-sized pwrites
// that cycle over files files of perFile bytes each, so the tree stays
// small however much is written. Every chunk is distinct.
func bigWriteStep(mnt string, files int, perFile, chunk int) func(i int) (int, error) {
	perChunk := perFile / chunk
	return func(i int) (int, error) {
		name := filepath.Join(mnt, fmt.Sprintf("big%d", (i/perChunk)%files))
		f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return 0, err
		}
		data := bytes.Repeat([]byte{byte(i * 31)}, chunk)
		binary.LittleEndian.PutUint64(data, uint64(i))
		_, werr := f.WriteAt(data, int64(i%perChunk)*int64(chunk))
		cerr := f.Close()
		if werr != nil {
			return 0, werr
		}
		return chunk, cerr
	}
}
