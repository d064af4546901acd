package journal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Recovery is what Open found in the journal directory and what it
// changed, for the caller to log.
type Recovery struct {
	Segments    int    // segment files kept
	First, Last uint64 // records kept; 0, 0 when none
	// Repairs lists, in order, every change Open made: a torn or corrupt
	// tail cut off, a segment removed. Empty after a clean shutdown.
	Repairs []Repair
	// Ignored lists the names of the other files in the directory, which
	// Open left alone.
	Ignored []string
}

// Repair is one change Open made to a segment.
type Repair struct {
	Segment string // file name
	// Removed: the whole file was removed (no valid record in it, or it
	// came after a gap). Otherwise it was cut at Offset.
	Removed bool
	Offset  int64
	Bytes   int64  // bytes cut or removed
	Reason  string // what was wrong, e.g. "bad CRC at seq 12"
}

// String describes the repair in one line.
func (r Repair) String() string {
	if r.Removed {
		return fmt.Sprintf("%s: removed (%d bytes): %s", r.Segment, r.Bytes, r.Reason)
	}
	return fmt.Sprintf("%s: cut %d bytes at offset %d: %s", r.Segment, r.Bytes, r.Offset, r.Reason)
}

// Clean reports whether Open changed nothing.
func (r Recovery) Clean() bool { return len(r.Repairs) == 0 }

// String summarises the recovery in one line.
func (r Recovery) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d segments, records %d..%d", r.Segments, r.First, r.Last)
	for _, rep := range r.Repairs {
		b.WriteString("; ")
		b.WriteString(rep.String())
	}
	if len(r.Ignored) > 0 {
		fmt.Fprintf(&b, "; ignored %q", r.Ignored)
	}
	return b.String()
}

// candidate is a file with a segment's name, found by recover.
type candidate struct {
	name  string
	first uint64
}

// recover reads the journal directory into j.segs, repairing it (see
// Open). It refuses, before changing anything, a directory holding a file
// with a segment's name that is not a segment.
func (j *Journal) recover() error {
	entries, err := os.ReadDir(j.dir)
	if err != nil {
		return fmt.Errorf("journal %s: %w", j.dir, err)
	}
	var cands []candidate // os.ReadDir sorts by name, so by first seq
	for _, e := range entries {
		first, ok := parseSegName(e.Name())
		if !ok {
			j.rec.Ignored = append(j.rec.Ignored, e.Name())
			continue
		}
		path := filepath.Join(j.dir, e.Name())
		if !e.Type().IsRegular() {
			return fmt.Errorf("journal %s: %w: not a regular file", path, ErrForeign)
		}
		if err := checkSegmentFile(path); err != nil {
			return err
		}
		cands = append(cands, candidate{name: e.Name(), first: first})
	}

	repaired := false
	var expect uint64 // the seq the next segment must start at; 0: any
	for i, c := range cands {
		path := filepath.Join(j.dir, c.name)
		if expect != 0 && c.first != expect {
			reason := fmt.Sprintf("gap: starts at seq %d, want %d", c.first, expect)
			for _, d := range cands[i:] {
				if err := j.removeRecovered(d.name, reason); err != nil {
					return err
				}
				reason = fmt.Sprintf("after the gap at seq %d", expect)
			}
			repaired = true
			break
		}
		res, err := scanSegment(path, c.first)
		if err != nil {
			return err
		}
		if res.last < c.first {
			if err := j.removeRecovered(c.name, res.reason); err != nil {
				return err
			}
			repaired = true
			continue
		}
		if res.end < res.size {
			if err := cutFile(path, res.end); err != nil {
				return err
			}
			j.rec.Repairs = append(j.rec.Repairs, Repair{Segment: c.name, Offset: res.end,
				Bytes: res.size - res.end, Reason: res.reason})
			repaired = true
		}
		j.segs = append(j.segs, &segment{name: c.name, first: c.first, last: res.last,
			size: res.end, flushedLast: res.last, index: res.index,
			// Whatever a previous run flushed may still be only in the page
			// cache: the first Sync makes it durable.
			dirty: true})
		j.total += res.end
		expect = res.last + 1
	}
	if repaired {
		// Make the repairs durable, so a power loss cannot bring a removed
		// segment back next to newer ones.
		if err := syncDir(j.dir); err != nil {
			return err
		}
	}
	j.rec.Segments = len(j.segs)
	if len(j.segs) > 0 {
		j.rec.First, j.rec.Last = j.segs[0].first, j.segs[len(j.segs)-1].last
	}
	return nil
}

// removeRecovered removes a segment file during recovery and reports it.
func (j *Journal) removeRecovered(name, reason string) error {
	path := filepath.Join(j.dir, name)
	var size int64
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("journal %s: %w", path, err)
	}
	j.rec.Repairs = append(j.rec.Repairs, Repair{Segment: name, Removed: true, Bytes: size, Reason: reason})
	return nil
}

// checkSegmentFile refuses a file with a segment's name whose header is
// neither ours nor a torn write of ours.
func checkSegmentFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("journal %s: %w", path, err)
	}
	defer f.Close()
	h := make([]byte, headerSize)
	n, err := io.ReadFull(f, h)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("journal %s: %w", path, err)
	}
	kind := checkHeader(h[:n])
	if kind == headerTorn && n == headerSize {
		// Zeros where the header belongs: a power loss, if the rest of
		// the file is zeros too. Otherwise it is not ours to remove.
		if zero, err := allZero(f); err != nil {
			return fmt.Errorf("journal %s: %w", path, err)
		} else if !zero {
			kind = headerForeign
		}
	}
	switch kind {
	case headerForeign:
		return fmt.Errorf("journal %s: %w (bad magic %q); move it away", path, ErrForeign, h[:n])
	case headerVersion:
		return fmt.Errorf("journal %s: %w %d (this binary writes %d)", path, ErrVersion, h[headerSize-1], version)
	}
	return nil
}

// allZero reports whether the rest of r holds only zero bytes.
func allZero(r io.Reader) (bool, error) {
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		for _, c := range buf[:n] {
			if c != 0 {
				return false, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// scanResult is what scanSegment found in one segment file.
type scanResult struct {
	size  int64  // file size
	end   int64  // offset just after the last valid record; 0 if the header is torn
	last  uint64 // seq of the last valid record; first-1 when none
	index []indexEntry
	// reason says why the scan stopped before size; "" when it did not.
	reason string
}

// scanSegment verifies the records of a segment file whose first record
// must be first, streaming it: memory is bounded by the read buffer
// whatever the lengths claim, since bodies are checksummed as they are
// read, never held.
func scanSegment(path string, first uint64) (scanResult, error) {
	res := scanResult{last: first - 1}
	f, err := os.Open(path)
	if err != nil {
		return res, fmt.Errorf("journal %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return res, fmt.Errorf("journal %s: %w", path, err)
	}
	res.size = fi.Size()
	br := bufio.NewReaderSize(f, 64<<10)
	ioErr := func(err error) (scanResult, error) {
		return res, fmt.Errorf("journal %s: read at %d: %w", path, res.end, err)
	}
	// stop classifies err: the end of the file inside a record is a torn
	// write; anything else is an I/O error, which fails Open rather than
	// cut what might be good data.
	stop := func(err error, what string) (scanResult, error) {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			res.reason = "torn " + what
			return res, nil
		}
		return ioErr(err)
	}

	h := make([]byte, headerSize)
	if _, err := io.ReadFull(br, h); err != nil {
		return stop(err, "header")
	}
	if checkHeader(h) != headerOK { // zeros: checkSegmentFile let it through
		res.reason = "torn header"
		return res, nil
	}
	res.end = int64(headerSize)
	if first == 0 {
		res.reason = "seq 0 is never written"
		return res, nil
	}

	var rh [recHeaderSize]byte
	var crc [recTrailer]byte
	want := first
	for res.end < res.size {
		if _, err := io.ReadFull(br, rh[:]); err != nil {
			return stop(err, fmt.Sprintf("record header at seq %d", want))
		}
		n, seq := parseRecordHeader(rh[:])
		switch {
		case n > MaxRecord:
			res.reason = fmt.Sprintf("length %d at seq %d exceeds %d", n, want, MaxRecord)
			return res, nil
		case res.end+recOverhead+n > res.size:
			res.reason = fmt.Sprintf("torn record at seq %d (length %d, %d bytes left)", want, n, res.size-res.end)
			return res, nil
		case seq != want:
			res.reason = fmt.Sprintf("seq %d where %d belongs", seq, want)
			return res, nil
		}
		sum := crc32.New(castagnoli)
		sum.Write(rh[4:])
		if _, err := io.CopyN(sum, br, n); err != nil {
			return stop(err, fmt.Sprintf("record at seq %d", want))
		}
		if _, err := io.ReadFull(br, crc[:]); err != nil {
			return stop(err, fmt.Sprintf("record at seq %d", want))
		}
		if got := sum.Sum32(); got != binary.LittleEndian.Uint32(crc[:]) {
			res.reason = fmt.Sprintf("bad CRC at seq %d", want)
			return res, nil
		}
		res.index = appendIndex(res.index, seq, res.end)
		res.end += recOverhead + n
		res.last = seq
		want++
	}
	return res, nil
}

// cutFile truncates a segment to its valid prefix, durably.
func cutFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("journal %s: %w", path, err)
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("journal %s: cut at %d: %w", path, size, err)
	}
	return nil
}
