package journal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestReaderRange(t *testing.T) {
	j := open(t, t.TempDir(), Options{SegmentSize: 1 << 10})
	if _, err := j.Reader(0); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("Reader(0): %v", err)
	}
	// An empty journal: a Reader waits at any seq.
	r, err := j.Reader(7)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next on an empty journal: %v", err)
	}
	appendRange(t, j, 5, 60)
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	if seq, _, err := r.Next(); err != nil || seq != 7 {
		t.Fatalf("Next = %d, %v; want 7", seq, err)
	}
	if err := j.TruncateThrough(30); err != nil {
		t.Fatal(err)
	}
	first := j.First()
	if _, err := j.Reader(first - 1); !errors.Is(err, ErrTruncated) {
		t.Fatalf("Reader(First-1): %v", err)
	}
	if _, err := j.Reader(62); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("Reader(Last+2): %v", err)
	}
	r2, err := j.Reader(61)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if _, _, err := r2.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next at Last+1: %v", err)
	}
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r2.Next(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

// A Reader may start at any seq, including deep inside a segment large
// enough to have several index entries.
func TestReaderFromEverySeq(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{SegmentSize: 3 << 20})
	const n = 80
	big := func(seq uint64) []byte {
		return bytes.Repeat([]byte{byte(seq)}, 60<<10+int(seq))
	}
	for seq := uint64(1); seq <= n; seq++ {
		if err := j.Append(seq, big(seq)); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(j.segs) != 2 || len(j.segs[0].index) < 2 {
		t.Fatalf("%d segments, %d index entries in the first: the test needs 2 and several", len(j.segs), len(j.segs[0].index))
	}
	check := func(j *Journal) {
		t.Helper()
		for from := uint64(1); from <= n; from++ {
			r, err := j.Reader(from)
			if err != nil {
				t.Fatal(err)
			}
			for want := from; want <= min(from+1, n); want++ {
				seq, b, err := r.Next()
				if err != nil || seq != want || !bytes.Equal(b, big(want)) {
					t.Fatalf("Reader(%d): Next = %d (%d bytes), %v; want %d", from, seq, len(b), err, want)
				}
			}
			r.Close()
		}
	}
	check(j)
	// The index rebuilt by Open works the same.
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, Options{SegmentSize: 3 << 20})
	check(j)
}

// Readers follow a journal that an appender keeps growing and truncating
// behind the slowest of them, across many segments.
func TestReaderFollowsAppender(t *testing.T) {
	j := open(t, t.TempDir(), Options{SegmentSize: 4 << 10, BufferSize: 2 << 10})
	const n, readers = 3000, 3
	var acked [readers]atomic.Uint64
	deadline := time.Now().Add(30 * time.Second)
	errs := make(chan error, readers+1)
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- follow(j, 1, n, &acked[i], deadline)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for seq := uint64(1); seq <= n; seq++ {
			if err := j.Append(seq, body(seq)); err != nil {
				errs <- err
				return
			}
			if seq%7 == 0 {
				if err := j.Flush(); err != nil {
					errs <- err
					return
				}
			}
			if seq%50 == 0 {
				low := acked[0].Load()
				for i := range acked {
					low = min(low, acked[i].Load())
				}
				if err := j.TruncateThrough(low); err != nil {
					errs <- err
					return
				}
			}
		}
		errs <- j.Flush()
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if j.First() == 1 {
		t.Fatal("the appender never truncated: the test did not exercise removal under readers")
	}
}

// follow reads records from..to, checking each, storing progress in acked,
// polling on io.EOF until deadline.
func follow(j *Journal, from, to uint64, acked *atomic.Uint64, deadline time.Time) error {
	r, err := j.Reader(from)
	if err != nil {
		return err
	}
	defer r.Close()
	for want := from; want <= to; {
		seq, b, err := r.Next()
		if errors.Is(err, io.EOF) {
			if time.Now().After(deadline) {
				return fmt.Errorf("reader at %d: no progress before the deadline", want)
			}
			time.Sleep(50 * time.Microsecond) // poll: the appender flushes every few records
			continue
		}
		if err != nil {
			return fmt.Errorf("reader at %d: %w", want, err)
		}
		if seq != want || !bytes.Equal(b, body(seq)) {
			return fmt.Errorf("reader: got seq %d (%d bytes), want %d", seq, len(b), want)
		}
		acked.Store(seq)
		want++
	}
	return nil
}

// A Reader whose records are removed under it gets ErrTruncated, whether
// it had its segment open, had not opened it yet, or finds the file gone.
func TestReaderTruncatedAway(t *testing.T) {
	for _, how := range []string{"open", "not yet open", "file gone", "dropped"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			opt := Options{SegmentSize: 1 << 10}
			if how == "dropped" {
				opt.MaxBytes = 3 << 10
			}
			j := open(t, dir, opt)
			appendRange(t, j, 1, 10)
			if err := j.Flush(); err != nil {
				t.Fatal(err)
			}
			r, err := j.Reader(1)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if how != "not yet open" {
				if seq, _, err := r.Next(); err != nil || seq != 1 {
					t.Fatalf("Next = %d, %v", seq, err)
				}
			}
			switch how {
			case "open", "not yet open":
				appendRange(t, j, 11, 60)
				if err := j.TruncateThrough(j.segs[0].last); err != nil {
					t.Fatal(err)
				}
			case "file gone":
				// The journal still lists the segment; a Reader that must
				// open it finds it gone (as when TruncateThrough runs
				// between its lookup and its open).
				r.Close()
				if r, err = j.Reader(1); err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(filepath.Join(dir, j.segs[0].name)); err != nil {
					t.Fatal(err)
				}
			case "dropped":
				appendRange(t, j, 11, 60)
				if j.Dropped() == 0 {
					t.Fatal("nothing dropped")
				}
			}
			_, _, err = r.Next()
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("Next: %v, want ErrTruncated", err)
			}
			// A new Reader from First works.
			if err := j.Flush(); err != nil {
				t.Fatal(err)
			}
			if how != "file gone" {
				checkRecords(t, j, j.First(), 60)
			}
		})
	}
}

// The disk changing under the journal is reported, not returned as data.
func TestReaderCorrupt(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	appendRange(t, j, 1, 10)
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, j.segs[0].name)
	offs, _ := recordOffsets(t, path)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{0xee}, offs[4]+recHeaderSize); err != nil {
		t.Fatal(err)
	}
	r, err := j.Reader(3)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for want := uint64(3); want <= 4; want++ {
		if seq, _, err := r.Next(); err != nil || seq != want {
			t.Fatalf("Next = %d, %v; want %d", seq, err, want)
		}
	}
	if _, _, err := r.Next(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Next over a changed byte: %v, want ErrCorrupt", err)
	}
}
