package journal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// body is the test body of record seq: its length varies with seq (0 to
// 300 bytes) and its bytes depend on seq, so a record read under the wrong
// seq or from the wrong offset does not compare equal.
func body(seq uint64) []byte {
	b := make([]byte, int(seq*37%301))
	for i := range b {
		b[i] = byte(seq*131 + uint64(i)*7)
	}
	return b
}

// open opens a journal in dir and closes it at the end of the test.
func open(t testing.TB, dir string, opt Options) *Journal {
	t.Helper()
	j, err := Open(dir, opt)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// appendRange appends records from..to (inclusive) with body(seq).
func appendRange(t testing.TB, j *Journal, from, to uint64) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		if err := j.Append(seq, body(seq)); err != nil {
			t.Fatalf("Append(%d): %v", seq, err)
		}
	}
}

// checkRecords reads the journal from seq from to its end and checks that
// it holds exactly records from..to with their bodies.
func checkRecords(t testing.TB, j *Journal, from, to uint64) {
	t.Helper()
	r, err := j.Reader(from)
	if err != nil {
		t.Fatalf("Reader(%d): %v", from, err)
	}
	defer r.Close()
	want := from
	for {
		seq, b, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Next after %d: %v", want-1, err)
		}
		if seq != want {
			t.Fatalf("Next: seq %d, want %d", seq, want)
		}
		if !bytes.Equal(b, body(seq)) {
			t.Fatalf("Next: seq %d: body differs (%d bytes, want %d)", seq, len(b), len(body(seq)))
		}
		want++
	}
	if want-1 != to {
		t.Fatalf("read records %d..%d, want ..%d", from, want-1, to)
	}
}

// checkBounds checks First and Last.
func checkBounds(t testing.TB, j *Journal, first, last uint64) {
	t.Helper()
	if f, l := j.First(), j.Last(); f != first || l != last {
		t.Fatalf("First, Last = %d, %d; want %d, %d", f, l, first, last)
	}
}

// segFiles lists the segment files in dir, sorted.
func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if _, ok := parseSegName(e.Name()); ok {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

// recordOffsets returns the offset of every record in a segment file, and
// the file's size, by walking its headers.
func recordOffsets(t testing.TB, path string) (offs []int64, size int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(headerSize)
	for off < int64(len(b)) {
		offs = append(offs, off)
		n, _ := parseRecordHeader(b[off:])
		off += recOverhead + n
	}
	if off != int64(len(b)) {
		t.Fatalf("%s: records end at %d, file is %d bytes", path, off, len(b))
	}
	return offs, int64(len(b))
}

// copyDir copies the regular files of src into a new temp dir.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// build writes records 1..n into a fresh journal in a temp dir, closes it,
// and returns the dir.
func build(t testing.TB, n uint64, opt Options) string {
	t.Helper()
	dir := t.TempDir()
	j, err := Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	appendRange(t, j, 1, n)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func describe(r Recovery) string { return fmt.Sprintf("%v", r) }
