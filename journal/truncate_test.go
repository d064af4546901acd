package journal

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestMaxBytes(t *testing.T) {
	dir := t.TempDir()
	opt := Options{SegmentSize: 1 << 10, MaxBytes: 4 << 10}
	j := open(t, dir, opt)
	appendRange(t, j, 1, 10)
	if j.Dropped() != 0 || j.First() != 1 {
		t.Fatalf("Dropped %d, First %d before reaching MaxBytes", j.Dropped(), j.First())
	}
	appendRange(t, j, 11, 500)
	if size := j.Size(); size > opt.MaxBytes {
		t.Fatalf("Size %d > MaxBytes %d", size, opt.MaxBytes)
	}
	first, dropped := j.First(), j.Dropped()
	if first <= 1 || dropped != first-1 {
		t.Fatalf("First %d, Dropped %d: want whole segments dropped, Dropped = First-1", first, dropped)
	}
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, j, first, 500)
	// The files on disk are what the journal says: whole segments, first
	// named after First.
	var disk int64
	segs := segFiles(t, dir)
	for _, name := range segs {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		disk += fi.Size()
	}
	if disk != j.Size() || segs[0] != segName(first) {
		t.Fatalf("on disk: %d bytes in %v; journal: %d bytes from %d", disk, segs, j.Size(), first)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, opt)
	checkBounds(t, j, first, 500)
	if j.Dropped() != 0 {
		t.Fatalf("Dropped %d after reopen: it counts since Open", j.Dropped())
	}
}

// MaxBytes below one segment keeps the segment being written.
func TestMaxBytesBelowSegment(t *testing.T) {
	j := open(t, t.TempDir(), Options{SegmentSize: 4 << 10, MaxBytes: 1 << 10})
	appendRange(t, j, 1, 100)
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	first := j.First()
	if first == 1 || j.Dropped() != first-1 || len(j.segs) != 1 {
		t.Fatalf("First %d, Dropped %d, %d segments", first, j.Dropped(), len(j.segs))
	}
	checkRecords(t, j, first, 100)
}

func TestTruncateThrough(t *testing.T) {
	dir := t.TempDir()
	opt := Options{SegmentSize: 1 << 10}
	j := open(t, dir, opt)
	appendRange(t, j, 1, 100)
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	segs := append([]*segment(nil), j.segs...)
	if len(segs) < 5 {
		t.Fatalf("%d segments", len(segs))
	}
	// Through the middle of the third segment: the first two go, the
	// third stays whole.
	third := segs[2]
	if err := j.TruncateThrough(third.first + 1); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, j, third.first, 100)
	checkRecords(t, j, third.first, 100)
	if got := segFiles(t, dir); got[0] != third.name || len(got) != len(segs)-2 {
		t.Fatalf("segments after TruncateThrough: %v", got)
	}
	// Through the last record of the third: it goes.
	if err := j.TruncateThrough(third.last); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, j, third.last+1, 100)
	// Through everything: the segment being written stays.
	if err := j.TruncateThrough(1000); err != nil {
		t.Fatal(err)
	}
	newest := segs[len(segs)-1]
	checkBounds(t, j, newest.first, 100)
	if j.Dropped() != 0 {
		t.Fatalf("Dropped %d: TruncateThrough is not a drop", j.Dropped())
	}
	appendRange(t, j, 101, 200)
	if err := j.TruncateThrough(150); err != nil {
		t.Fatal(err)
	}
	if f := j.First(); f > 151 || f <= newest.first {
		t.Fatalf("First %d after appending more and TruncateThrough(150)", f)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	first := j.First()
	j = open(t, dir, opt)
	if !j.Recovered().Clean() {
		t.Fatalf("Recovered: %v", describe(j.Recovered()))
	}
	checkBounds(t, j, first, 200)
	checkRecords(t, j, first, 200)
}

func TestReset(t *testing.T) {
	dir := t.TempDir()
	opt := Options{SegmentSize: 1 << 10, MaxBytes: 3 << 10}
	j := open(t, dir, opt)
	appendRange(t, j, 1, 100)
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := j.Reader(j.Last())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if j.Dropped() == 0 {
		t.Fatal("nothing dropped")
	}
	if err := j.Reset(); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, j, 0, 0)
	if j.Size() != 0 || j.Dropped() != 0 || len(segFiles(t, dir)) != 0 {
		t.Fatalf("after Reset: Size %d, Dropped %d, files %v", j.Size(), j.Dropped(), segFiles(t, dir))
	}
	// The same names come back, with other contents: the old Reader must
	// not read them.
	appendRange(t, j, 1, 100)
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Next(); !errors.Is(err, ErrTruncated) {
		t.Fatalf("Next on a Reader from before Reset: %v, want ErrTruncated", err)
	}
	checkRecords(t, j, j.First(), 100)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, opt)
	checkRecords(t, j, j.First(), 100)
}
