package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// readChunk is how much a Reader reads from a segment at once.
const readChunk = 64 << 10

// Reader iterates over the journal's records in seq order, reading them
// from disk. One goroutine uses a Reader at a time; any number of Readers
// run concurrently with each other and with the writer.
type Reader struct {
	j      *Journal
	gen    uint64 // j.gen when created: a Reset or Close ends the Reader
	seq    uint64 // the next record to return
	closed bool

	f        *os.File // the segment holding seq, once opened
	segFirst uint64   // first seq of f's segment
	path     string
	off      int64  // offset in f of record seq
	buf      []byte // bytes of f from bufOff, all below the segment's flushed size when read
	bufOff   int64
	seqBytes [8]byte // seq as encoded in the last header read, for the CRC
}

// Reader returns a Reader whose first record is seq. seq must be within
// First()..Last()+1 (any seq but 0 when the journal is empty); below First
// it returns ErrTruncated, beyond Last()+1 ErrOutOfRange.
func (j *Journal) Reader(seq uint64) (*Reader, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil, ErrClosed
	}
	if seq == 0 {
		return nil, fmt.Errorf("journal %s: reader at seq 0: %w", j.dir, ErrOutOfRange)
	}
	if first, last := j.boundsLocked(); first != 0 {
		if seq < first {
			return nil, fmt.Errorf("journal %s: reader at seq %d, first is %d: %w", j.dir, seq, first, ErrTruncated)
		}
		if seq > last+1 {
			return nil, fmt.Errorf("journal %s: reader at seq %d, last is %d: %w", j.dir, seq, last, ErrOutOfRange)
		}
	}
	return &Reader{j: j, gen: j.gen, seq: seq}, nil
}

// Seq returns the seq of the record the next call to Next returns.
func (r *Reader) Seq() uint64 { return r.seq }

// Next returns the next record; body is the caller's. It returns io.EOF
// when the record is not flushed yet (call again later), ErrTruncated
// (for good) when it was removed from the journal or the journal was
// Reset, ErrClosed after Close of the Reader or the Journal, and an error
// wrapping ErrCorrupt if the segment no longer holds what was written.
func (r *Reader) Next() (seq uint64, body []byte, err error) {
	if r.closed {
		return 0, nil, ErrClosed
	}
	limit, err := r.position()
	if err != nil {
		return 0, nil, err
	}
	body, err = r.record(r.seq, limit)
	if err != nil {
		return 0, nil, err
	}
	seq = r.seq
	r.seq++
	return seq, body, nil
}

// Close releases the Reader's file. It does not affect the Journal.
func (r *Reader) Close() error {
	r.closed = true
	r.buf = nil
	return r.closeFile()
}

func (r *Reader) closeFile() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	r.buf = r.buf[:0]
	if err != nil {
		return fmt.Errorf("journal %s: %w", r.path, err)
	}
	return nil
}

// stateErr reports why the Reader cannot go on, if it cannot. j.mu must be
// held.
func (r *Reader) stateErr() error {
	switch {
	case r.j.closed:
		return ErrClosed
	case r.gen != r.j.gen:
		return fmt.Errorf("journal %s: reset: %w", r.j.dir, ErrTruncated)
	}
	return nil
}

// position makes r.f and r.off point at record r.seq, opening its segment
// if needed, and returns how far the segment may be read.
func (r *Reader) position() (limit int64, err error) {
	j := r.j
	j.mu.Lock()
	if err := r.stateErr(); err != nil {
		j.mu.Unlock()
		return 0, err
	}
	n := len(j.segs)
	if n == 0 || r.seq > j.segs[n-1].flushedLast {
		j.mu.Unlock()
		return 0, io.EOF
	}
	if r.seq < j.segs[0].first {
		first := j.segs[0].first
		j.mu.Unlock()
		return 0, fmt.Errorf("journal %s: seq %d removed, first is %d: %w", j.dir, r.seq, first, ErrTruncated)
	}
	// The segment holding r.seq: the last one starting at or before it.
	s := j.segs[sort.Search(n, func(i int) bool { return j.segs[i].first > r.seq })-1]
	limit = s.size
	if r.f != nil && r.segFirst == s.first {
		j.mu.Unlock()
		return limit, nil
	}
	start := s.lookup(r.seq)
	first, path := s.first, filepath.Join(j.dir, s.name)
	j.mu.Unlock()

	if err := r.closeFile(); err != nil {
		return 0, err
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		// Removed since we looked: only whole segments from the front go.
		return 0, fmt.Errorf("journal %s: seq %d removed: %w", path, r.seq, ErrTruncated)
	}
	if err != nil {
		return 0, fmt.Errorf("journal %s: %w", path, err)
	}
	// A Reset between the lookup and the open may have created a new
	// segment under the same name: only the generation tells.
	j.mu.Lock()
	err = r.stateErr()
	j.mu.Unlock()
	if err != nil {
		f.Close()
		return 0, err
	}
	r.f, r.path, r.segFirst = f, path, first
	r.off, r.bufOff, r.buf = start.off, start.off, r.buf[:0]
	// Walk record headers from the index entry to r.seq (at most about
	// indexStride bytes).
	for seq := start.seq; seq < r.seq; seq++ {
		n, err := r.header(seq, limit)
		if err != nil {
			return 0, err
		}
		r.off += recOverhead + n
	}
	return limit, nil
}

// header reads and checks the header of record seq at r.off, returning its
// body length.
func (r *Reader) header(seq uint64, limit int64) (int64, error) {
	if r.off+recOverhead > limit {
		return 0, r.corrupt(seq, "record header beyond the written size")
	}
	h, err := r.read(r.off, recHeaderSize, limit)
	if err != nil {
		return 0, err
	}
	n, got := parseRecordHeader(h)
	copy(r.seqBytes[:], h[4:])
	switch {
	case n > MaxRecord || r.off+recOverhead+n > limit:
		return 0, r.corrupt(seq, fmt.Sprintf("length %d", n))
	case got != seq:
		return 0, r.corrupt(seq, fmt.Sprintf("holds seq %d", got))
	}
	return n, nil
}

// record reads and verifies record seq at r.off and moves past it.
func (r *Reader) record(seq uint64, limit int64) ([]byte, error) {
	n, err := r.header(seq, limit)
	if err != nil {
		return nil, err
	}
	body := make([]byte, n)
	var sum []byte
	if n+recTrailer <= readChunk {
		b, err := r.read(r.off+recHeaderSize, int(n)+recTrailer, limit)
		if err != nil {
			return nil, err
		}
		copy(body, b)
		sum = b[n:]
	} else {
		// A large record: straight into body, not through the buffer.
		tail := make([]byte, int(n)+recTrailer)
		if _, err := r.f.ReadAt(tail, r.off+recHeaderSize); err != nil {
			return nil, r.readErr(err)
		}
		copy(body, tail)
		sum = tail[n:]
	}
	if recordCRC(r.seqBytes[:], body) != binary.LittleEndian.Uint32(sum) {
		return nil, r.corrupt(seq, "bad CRC")
	}
	r.off += recOverhead + n
	return body, nil
}

// read returns n bytes of the segment at off, through the buffer. The
// caller has checked off+n <= limit, and limit is within what was written
// when it was read under the lock, so the bytes are final.
func (r *Reader) read(off int64, n int, limit int64) ([]byte, error) {
	if off >= r.bufOff && off+int64(n) <= r.bufOff+int64(len(r.buf)) {
		i := off - r.bufOff
		return r.buf[i : i+int64(n)], nil
	}
	want := max(int64(n), readChunk)
	want = min(want, limit-off)
	if int64(cap(r.buf)) < want {
		r.buf = make([]byte, want)
	}
	r.buf = r.buf[:want]
	r.bufOff = off
	if _, err := r.f.ReadAt(r.buf, off); err != nil {
		r.buf = r.buf[:0]
		return nil, r.readErr(err)
	}
	return r.buf[:n], nil
}

// readErr wraps an error reading bytes that were written: EOF there means
// the file is shorter than what was written, which is corruption.
func (r *Reader) readErr(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("journal %s: %w: file shorter than written", r.path, ErrCorrupt)
	}
	return fmt.Errorf("journal %s: %w", r.path, err)
}

func (r *Reader) corrupt(seq uint64, what string) error {
	return fmt.Errorf("journal %s: %w: seq %d at offset %d: %s", r.path, ErrCorrupt, seq, r.off, what)
}
