package journal

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	opt := Options{SegmentSize: 2 << 10}
	j := open(t, dir, opt)
	checkBounds(t, j, 0, 0)
	appendRange(t, j, 1, 200)
	checkBounds(t, j, 1, 200)
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, j, 1, 200)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, dir)); n < 5 {
		t.Fatalf("%d segments for 200 records of up to 300 bytes in 2 KiB segments", n)
	}
	// Every segment is named after its first record.
	for _, name := range segFiles(t, dir) {
		first, _ := parseSegName(name)
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, seq := parseRecordHeader(b[headerSize:]); seq != first {
			t.Errorf("%s starts with seq %d", name, seq)
		}
	}

	j = open(t, dir, opt)
	if rec := j.Recovered(); !rec.Clean() || rec.First != 1 || rec.Last != 200 || len(rec.Ignored) != 0 {
		t.Fatalf("Recovered after a clean close: %v", describe(rec))
	}
	checkBounds(t, j, 1, 200)
	checkRecords(t, j, 1, 200)
	// The reopened journal goes on where it stopped.
	if err := j.Append(202, body(202)); !errors.Is(err, ErrGap) {
		t.Fatalf("Append(202) after 200: %v, want ErrGap", err)
	}
	appendRange(t, j, 201, 300)
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, opt)
	checkBounds(t, j, 1, 300)
	checkRecords(t, j, 1, 300)
	if !j.Recovered().Clean() {
		t.Fatalf("Recovered: %v", describe(j.Recovered()))
	}
}

func TestOpenCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "journal")
	open(t, dir, Options{})
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("journal dir mode %v, want 0700", fi.Mode().Perm())
	}
}

func TestAppendGap(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	if err := j.Append(0, nil); !errors.Is(err, ErrGap) {
		t.Fatalf("Append(0): %v, want ErrGap", err)
	}
	// An empty journal starts anywhere.
	appendRange(t, j, 5, 6)
	for _, seq := range []uint64{0, 5, 6, 8, 100} {
		if err := j.Append(seq, body(seq)); !errors.Is(err, ErrGap) {
			t.Fatalf("Append(%d) after 6: %v, want ErrGap", seq, err)
		}
	}
	checkBounds(t, j, 5, 6)
	appendRange(t, j, 7, 7)
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, j, 5, 7)
	if err := j.Reset(); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, j, 0, 0)
	appendRange(t, j, 3, 4) // anywhere again, even below what was there
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, j, 3, 4)
}

func TestAppendTooLarge(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	appendRange(t, j, 1, 1)
	if err := j.Append(2, make([]byte, MaxRecord+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append(MaxRecord+1 bytes): %v, want ErrTooLarge", err)
	}
	// Not sticky, nothing appended.
	checkBounds(t, j, 1, 1)
	appendRange(t, j, 2, 3)
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, j, 1, 3)
}

// A record larger than the buffer and the Reader's chunk goes through
// whole, and empty bodies are records too.
func TestLargeAndEmptyRecords(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{BufferSize: 4 << 10})
	big := bytes.Repeat([]byte("0123456789abcdef"), 80<<10) // 1.25 MiB
	for seq, b := range [][]byte{{}, big, {}, big[:readChunk-recTrailer], big[:readChunk-recTrailer+1]} {
		if err := j.Append(uint64(seq+1), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, Options{})
	r, err := j.Reader(1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, want := range []int{0, len(big), 0, readChunk - recTrailer, readChunk - recTrailer + 1} {
		seq, b, err := r.Next()
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if len(b) != want || !bytes.Equal(b, big[:want]) {
			t.Fatalf("seq %d: %d bytes, want %d", seq, len(b), want)
		}
	}
	if _, _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next at the end: %v, want io.EOF", err)
	}
}
