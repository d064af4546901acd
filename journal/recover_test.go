package journal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A tail torn at every byte of the last record: the records before it
// remain, the journal goes on from there, and the cut is reported.
func TestTornTail(t *testing.T) {
	const n = 9 // body(9) is 32 bytes: 48 cuts
	pristine := build(t, n, Options{})
	segs := segFiles(t, pristine)
	if len(segs) != 1 {
		t.Fatalf("%d segments, want 1", len(segs))
	}
	offs, size := recordOffsets(t, filepath.Join(pristine, segs[0]))
	lastOff := offs[n-1]
	for cut := lastOff; cut < size; cut++ {
		dir := copyDir(t, pristine)
		path := filepath.Join(dir, segs[0])
		if err := os.Truncate(path, cut); err != nil {
			t.Fatal(err)
		}
		j, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("cut at %d: Open: %v", cut, err)
		}
		checkBounds(t, j, 1, n-1)
		rec := j.Recovered()
		if cut == lastOff {
			if !rec.Clean() { // a file ending between records is whole
				t.Fatalf("cut at %d, between records: %v", cut, describe(rec))
			}
		} else if len(rec.Repairs) != 1 || rec.Repairs[0].Offset != lastOff ||
			rec.Repairs[0].Bytes != cut-lastOff || rec.Repairs[0].Removed ||
			!strings.Contains(rec.Repairs[0].Reason, "torn") {
			t.Fatalf("cut at %d: %v", cut, describe(rec))
		}
		if fi, err := os.Stat(path); err != nil || fi.Size() != lastOff {
			t.Fatalf("cut at %d: segment not cut back to %d: %v, %v", cut, lastOff, fi.Size(), err)
		}
		appendRange(t, j, n, n+1)
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		j = open(t, dir, Options{})
		if !j.Recovered().Clean() {
			t.Fatalf("cut at %d, second Open: %v", cut, describe(j.Recovered()))
		}
		checkRecords(t, j, 1, n+1)
		j.Close()
	}
}

// A segment torn inside its header (the crash came right after it was
// created) is removed, and the journal is what the earlier segments hold.
func TestTornHeader(t *testing.T) {
	pristine := build(t, 40, Options{SegmentSize: 1 << 10})
	segs := segFiles(t, pristine)
	last := segs[len(segs)-1]
	first, _ := parseSegName(last)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"partial", segHeader[:5]},
		{"header only", segHeader},
		{"zeros", make([]byte, 100)},
	} {
		dir := copyDir(t, pristine)
		if err := os.WriteFile(filepath.Join(dir, last), tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		j, err := Open(dir, Options{SegmentSize: 1 << 10})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		checkBounds(t, j, 1, first-1)
		rec := j.Recovered()
		if len(rec.Repairs) != 1 || !rec.Repairs[0].Removed || rec.Repairs[0].Segment != last {
			t.Fatalf("%s: %v", tc.name, describe(rec))
		}
		if _, err := os.Stat(filepath.Join(dir, last)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: torn segment still there: %v", tc.name, err)
		}
		appendRange(t, j, first, first+5)
		if err := j.Flush(); err != nil {
			t.Fatal(err)
		}
		checkRecords(t, j, 1, first+5)
		j.Close()
	}
}

// A byte flipped in a middle record: the journal keeps what comes before
// it and drops everything from there, in that segment and after it, and
// reports both.
func TestCorruptMiddleRecord(t *testing.T) {
	opt := Options{SegmentSize: 2 << 10}
	pristine := build(t, 100, opt)
	segs := segFiles(t, pristine)
	if len(segs) < 4 {
		t.Fatalf("%d segments, want at least 4", len(segs))
	}
	mid := segs[1]
	midFirst, _ := parseSegName(mid)
	offs, size := recordOffsets(t, filepath.Join(pristine, mid))
	k := len(offs) / 2 // the record at offs[k] is seq midFirst+k
	bad := midFirst + uint64(k)
	recLen := recOverhead + int64(len(body(bad)))
	for _, tc := range []struct {
		name   string
		at     int64 // byte to change, relative to the record
		set    func(b []byte, at int64)
		reason string
	}{
		{"body", recHeaderSize + 1, flip, "bad CRC"},
		{"seq", 4, flip, "seq"},
		{"crc", recLen - 1, flip, "bad CRC"},
		{"length huge", 3, func(b []byte, at int64) { b[at] = 0xff }, "exceeds"},
		{"length long", 1, func(b []byte, at int64) { b[at] = 0x10 }, "torn record"}, // 4 KiB: past the end
		{"length short", 0, func(b []byte, at int64) { b[at]-- }, "bad CRC"},
	} {
		dir := copyDir(t, pristine)
		path := filepath.Join(dir, mid)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		tc.set(b, offs[k]+tc.at)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		j, err := Open(dir, opt)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		checkBounds(t, j, 1, bad-1)
		checkRecords(t, j, 1, bad-1)
		rec := j.Recovered()
		if len(rec.Repairs) != len(segs)-1 {
			t.Fatalf("%s: %d repairs, want a cut and %d removals: %v", tc.name, len(rec.Repairs), len(segs)-2, describe(rec))
		}
		cut := rec.Repairs[0]
		if cut.Segment != mid || cut.Removed || cut.Offset != offs[k] || cut.Bytes != size-offs[k] ||
			!strings.Contains(cut.Reason, tc.reason) {
			t.Fatalf("%s: cut reported as %v, want at %d (%q)", tc.name, cut, offs[k], tc.reason)
		}
		for i, rep := range rec.Repairs[1:] {
			if rep.Segment != segs[2+i] || !rep.Removed {
				t.Fatalf("%s: repair %v, want %s removed", tc.name, rep, segs[2+i])
			}
		}
		if !strings.Contains(rec.Repairs[1].Reason, "gap") {
			t.Fatalf("%s: %v does not name the gap", tc.name, rec.Repairs[1])
		}
		if got := segFiles(t, dir); len(got) != 2 {
			t.Fatalf("%s: segments left %v", tc.name, got)
		}
		// The journal goes on from the cut.
		appendRange(t, j, bad, bad+3)
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		j = open(t, dir, opt)
		checkRecords(t, j, 1, bad+3)
		j.Close()
	}
}

func flip(b []byte, at int64) { b[at] ^= 0x40 }

// A power loss can leave zeros where the tail should be.
func TestZeroTail(t *testing.T) {
	dir := build(t, 10, Options{})
	path := filepath.Join(dir, segFiles(t, dir)[0])
	_, size := recordOffsets(t, path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	j := open(t, dir, Options{})
	checkBounds(t, j, 1, 10)
	rec := j.Recovered()
	if len(rec.Repairs) != 1 || rec.Repairs[0].Offset != size || rec.Repairs[0].Bytes != 4096 {
		t.Fatalf("Recovered: %v", describe(rec))
	}
}

// Removing a middle segment by hand leaves a gap: what follows is dropped.
func TestGapBetweenSegments(t *testing.T) {
	opt := Options{SegmentSize: 1 << 10}
	dir := build(t, 60, opt)
	segs := segFiles(t, dir)
	if len(segs) < 4 {
		t.Fatalf("%d segments", len(segs))
	}
	if err := os.Remove(filepath.Join(dir, segs[1])); err != nil {
		t.Fatal(err)
	}
	second, _ := parseSegName(segs[1])
	j := open(t, dir, opt)
	checkBounds(t, j, 1, second-1)
	checkRecords(t, j, 1, second-1)
	rec := j.Recovered()
	if len(rec.Repairs) != len(segs)-2 {
		t.Fatalf("Recovered: %v", describe(rec))
	}
	for _, rep := range rec.Repairs {
		if !rep.Removed || rep.Bytes == 0 {
			t.Fatalf("Recovered: %v", describe(rec))
		}
	}
	if got := segFiles(t, dir); len(got) != 1 || got[0] != segs[0] {
		t.Fatalf("segments left: %v", got)
	}
}

// Files that are not segments are left alone; a file with a segment's
// name that is not one makes Open fail without touching anything.
func TestForeignFiles(t *testing.T) {
	dir := build(t, 10, Options{})
	notes := filepath.Join(dir, "notes.txt")
	lookalike := filepath.Join(dir, "00000000000000000001.tdj.bak")
	for _, p := range []string{notes, lookalike} {
		if err := os.WriteFile(p, []byte("mine"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	j := open(t, dir, Options{})
	checkBounds(t, j, 1, 10)
	rec := j.Recovered()
	if !rec.Clean() || strings.Join(rec.Ignored, ",") != "00000000000000000001.tdj.bak,notes.txt,sub" {
		t.Fatalf("Recovered: %v", describe(rec))
	}
	if err := j.Reset(); err != nil {
		t.Fatal(err)
	}
	j.Close()
	for _, p := range []string{notes, lookalike} {
		if b, err := os.ReadFile(p); err != nil || string(b) != "mine" {
			t.Fatalf("%s after Open and Reset: %q, %v", p, b, err)
		}
	}

	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"foreign", []byte("#!/bin/sh\necho hello\n"), ErrForeign},
		{"torn header", []byte("TD"), nil}, // ours: removed, here as past a gap
		{"future version", append([]byte(magic), version+1, 1, 2, 3), ErrVersion},
		{"zeros, then data", append(make([]byte, 100), 1), ErrForeign},
		{"zeros", make([]byte, 100<<10), nil}, // a power loss: ours
	} {
		dir := build(t, 10, Options{SegmentSize: 1 << 10})
		segs := segFiles(t, dir)
		// Placed last, so that the segments before it recover fine.
		last, _ := parseSegName(segs[len(segs)-1])
		path := filepath.Join(dir, segName(last+1000))
		if err := os.WriteFile(path, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		j, err := Open(dir, Options{SegmentSize: 1 << 10})
		if tc.want == nil {
			if err != nil {
				t.Fatalf("%s: Open: %v", tc.name, err)
			}
			j.Close()
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s: not removed: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), path) {
			t.Fatalf("%s: Open: %v, want %v naming %s", tc.name, err, tc.want, path)
		}
		if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, tc.data) {
			t.Fatalf("%s: the file was changed: %q, %v", tc.name, b, err)
		}
		if got := segFiles(t, dir); len(got) != len(segs)+1 {
			t.Fatalf("%s: Open removed segments before refusing: %v", tc.name, got)
		}
	}

	// A directory with a segment's name is refused too.
	dir = t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, segName(1)), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrForeign) {
		t.Fatalf("Open with a directory named like a segment: %v", err)
	}
}
