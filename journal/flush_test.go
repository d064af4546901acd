package journal

import (
	"errors"
	"io"
	"testing"
)

// Readers see flushed records only; a full buffer flushes by itself.
func TestFlushVisibility(t *testing.T) {
	j := open(t, t.TempDir(), Options{BufferSize: 1 << 10})
	r, err := j.Reader(1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	appendRange(t, j, 1, 1)
	if _, _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next before Flush: %v, want io.EOF", err)
	}
	if got, want := j.Size(), int64(headerSize+recOverhead+len(body(1))); got != want {
		t.Fatalf("Size with one buffered record = %d, want %d", got, want)
	}
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	if seq, _, err := r.Next(); err != nil || seq != 1 {
		t.Fatalf("Next after Flush: %d, %v", seq, err)
	}
	// Append until the buffer fills: the records reach the file without
	// a Flush.
	seq := uint64(2)
	for ; seq < 100; seq++ {
		appendRange(t, j, seq, seq)
		if got, _, err := r.Next(); err == nil {
			if got != 2 {
				t.Fatalf("Next = %d, want 2", got)
			}
			break
		}
	}
	if seq == 100 {
		t.Fatal("a 1 KiB buffer did not flush itself within 100 records")
	}
}

func TestSyncAndClose(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{SegmentSize: 1 << 10})
	appendRange(t, j, 1, 50)
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, s := range j.segs {
		if s.dirty {
			t.Errorf("segment %s still dirty after Sync", s.name)
		}
	}
	if j.dirDirty {
		t.Error("directory still dirty after Sync")
	}
	r, err := j.Reader(1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := j.Append(51, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if _, _, err := r.Next(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Reader.Next after Close: %v", err)
	}
	if _, err := j.Reader(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Reader after Close: %v", err)
	}
	// A reopened journal's segments must be synced again: a previous
	// run may have left them in the page cache only.
	j = open(t, dir, Options{SegmentSize: 1 << 10})
	for _, s := range j.segs {
		if !s.dirty {
			t.Errorf("recovered segment %s not marked for the next Sync", s.name)
		}
	}
}

// Records of at least half the buffer are written from the caller's memory
// at Append (with everything buffered before them); interleaved with
// buffered ones they read back the same, before and after a reopen, across
// segment boundaries.
func TestLargeRecordsWrittenDirectly(t *testing.T) {
	dir := t.TempDir()
	opt := Options{BufferSize: 256, SegmentSize: 4 << 10}
	j := open(t, dir, opt)
	r, err := j.Reader(1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	large := 0
	for seq := uint64(1); seq <= 500; seq++ {
		appendRange(t, j, seq, seq)
		if len(body(seq)) < opt.BufferSize/2 {
			continue
		}
		large++
		// Written at once: a Reader sees it (and all before it) without a Flush.
		for {
			got, _, err := r.Next()
			if err != nil {
				t.Fatalf("after appending large record %d: Next: %v", seq, err)
			}
			if got == seq {
				break
			}
		}
	}
	if large < 100 {
		t.Fatalf("test bug: only %d large records", large)
	}
	checkRecords(t, j, 1, 500)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, opt)
	if rec := j.Recovered(); len(rec.Repairs) != 0 {
		t.Fatalf("Recovered after a clean close: %v", describe(rec))
	}
	checkRecords(t, j, 1, 500)
}
