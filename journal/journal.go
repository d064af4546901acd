package journal

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// Defaults for Options.
const (
	DefaultSegmentSize = 64 << 20
	DefaultBufferSize  = 256 << 10
)

// Options configure a Journal.
type Options struct {
	// MaxBytes bounds the bytes of all segments, buffer included: Append
	// beyond it removes the oldest segments, whole, and Dropped reports the
	// highest seq removed. The segment being written is never removed, so
	// the journal can exceed MaxBytes by up to one segment when MaxBytes <
	// SegmentSize. 0: no bound.
	MaxBytes int64
	// SegmentSize is the target size of one segment file: once a segment
	// holds that many bytes the next Append starts a new one. Default
	// DefaultSegmentSize.
	SegmentSize int64
	// BufferSize is how many bytes Append buffers before writing them.
	// Default DefaultBufferSize.
	BufferSize int
}

func (o Options) withDefaults() Options {
	if o.SegmentSize <= 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.BufferSize <= 0 {
		o.BufferSize = DefaultBufferSize
	}
	if o.MaxBytes < 0 {
		o.MaxBytes = 0
	}
	return o
}

// Journal is an on-disk journal of records with dense seqs. See the package
// doc for what it guarantees and who may call what concurrently.
type Journal struct {
	dir string
	opt Options
	rec Recovery

	// Writer side: only the goroutine calling Append, Flush, Sync,
	// TruncateThrough, Reset and Close uses these.
	f        *os.File // newest segment, open for appending; nil: the next Append creates one
	buf      []byte   // bytes for f not written yet
	werr     error    // sticky write or fsync error, until Reset
	dirDirty bool     // segments created or removed since the last directory fsync

	// mu guards what follows, which Readers and the getters read. Only the
	// writer changes it, so the writer reads it without mu.
	mu       sync.Mutex
	segs     []*segment // oldest first, chained: each starts at the previous one's last+1
	total    int64      // sum of segs' size
	buffered int64      // len(buf)
	dropped  uint64     // highest seq removed for MaxBytes since Open or Reset
	gen      uint64     // bumped by Reset and Close: open Readers then fail
	closed   bool
}

// Open opens the journal in dir, creating dir (mode 0700) if needed, and
// recovers what is there: every record is checked (length bound, seq chain,
// CRC-32C); a segment is cut at its first bad record (a torn or corrupt
// tail); segments that do not chain with the ones before (a gap in seqs)
// are removed from the first gap on; segments left with no record are
// removed. Everything it changed is reported by Recovered. A file with a
// segment's name that is not a segment makes Open fail (ErrForeign,
// ErrVersion) before anything is changed; other files are left alone.
func Open(dir string, opt Options) (*Journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal %s: %w", dir, err)
	}
	j := &Journal{dir: dir, opt: opt.withDefaults()}
	if err := j.recover(); err != nil {
		return nil, err
	}
	// Keep appending to the newest segment unless it is full.
	if n := len(j.segs); n > 0 && j.segs[n-1].size < j.opt.SegmentSize {
		path := j.path(j.segs[n-1])
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return nil, fmt.Errorf("journal %s: %w", path, err)
		}
		j.f = f
	}
	return j, nil
}

// Recovered reports what Open found and what it repaired.
func (j *Journal) Recovered() Recovery { return j.rec }

// Dir returns the journal's directory.
func (j *Journal) Dir() string { return j.dir }

func (j *Journal) path(s *segment) string { return filepath.Join(j.dir, s.name) }

// newest returns the segment being written; nil when there is none.
func (j *Journal) newest() *segment {
	if len(j.segs) == 0 {
		return nil
	}
	return j.segs[len(j.segs)-1]
}

// boundsLocked returns First and Last. j.mu must be held (or the caller
// be the writer).
func (j *Journal) boundsLocked() (first, last uint64) {
	n := len(j.segs)
	// Only the newest segment can be empty (just created); if it is the
	// only one, the journal holds nothing.
	if n == 0 || (n == 1 && j.segs[0].empty()) {
		return 0, 0
	}
	return j.segs[0].first, j.segs[n-1].last
}

// First returns the lowest seq the journal holds; 0 when empty.
func (j *Journal) First() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	first, _ := j.boundsLocked()
	return first
}

// Last returns the highest seq appended, buffered or not; 0 when empty.
// The journal holds every record from First to Last.
func (j *Journal) Last() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	_, last := j.boundsLocked()
	return last
}

// Size returns the bytes of all segments on disk plus those buffered.
func (j *Journal) Size() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.total + j.buffered
}

// Dropped reports the highest seq removed from the front because of
// MaxBytes since Open or the last Reset (0 if none), so the caller can tell
// which slaves can no longer be served from the journal.
func (j *Journal) Dropped() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.dropped
}

// Append appends record seq with body, an opaque encoded op, which it
// copies. seq must be Last()+1, or any value but 0 when the journal is
// empty (after Reset too); otherwise Append returns ErrGap and the caller
// Resets. The record is buffered: it is written when the buffer fills, or
// at the next Flush or Sync, and only then seen by Readers. After a write
// error Append returns that error until Reset.
func (j *Journal) Append(seq uint64, body []byte) error {
	if j.werr != nil {
		return j.werr
	}
	if j.closed {
		return ErrClosed
	}
	if len(body) > MaxRecord {
		return fmt.Errorf("journal %s: append seq %d: %w (%d bytes, max %d)", j.dir, seq, ErrTooLarge, len(body), MaxRecord)
	}
	s := j.newest()
	switch {
	case seq == 0:
		return fmt.Errorf("journal %s: append seq 0: %w", j.dir, ErrGap)
	case s != nil && seq != s.last+1:
		// s.last+1 is Last()+1, and also the first seq of a newest segment
		// that is still empty, which was named after it.
		return fmt.Errorf("journal %s: append seq %d after %d: %w", j.dir, seq, s.last, ErrGap)
	}
	if s != nil && j.f != nil && !s.empty() && s.size+int64(len(j.buf)) >= j.opt.SegmentSize {
		if err := j.seal(); err != nil {
			return err
		}
	}
	if j.f == nil {
		if err := j.create(seq); err != nil {
			return err
		}
	}
	need := int64(recOverhead + len(body))
	if err := j.enforceMax(need); err != nil {
		return err
	}
	s = j.newest()
	off := s.size + int64(len(j.buf))
	large := len(body) >= j.opt.BufferSize/2
	var trailer []byte
	if large {
		// Written from the caller's memory, not copied into the buffer:
		// the buffer (header included), then body and CRC, all at once.
		j.buf = appendRecordHeader(j.buf, seq, len(body))
		trailer = appendRecordTrailer(nil, j.buf[len(j.buf)-8:], body)
	} else {
		j.buf = appendRecord(j.buf, seq, body)
	}
	j.mu.Lock()
	s.last = seq
	s.index = appendIndex(s.index, seq, off)
	j.buffered = int64(len(j.buf))
	j.mu.Unlock()
	if large {
		return j.flush(body, trailer)
	}
	if len(j.buf) >= j.opt.BufferSize {
		return j.Flush()
	}
	return nil
}

// create starts a new segment whose first record will be seq. Its header
// goes into the buffer, so that header and first records reach the kernel
// in one write.
func (j *Journal) create(seq uint64) error {
	s := &segment{name: segName(seq), first: seq, last: seq - 1, flushedLast: seq - 1, dirty: true}
	path := j.path(s)
	// O_EXCL: a segment's name is never reused while it exists; a file
	// already there is something this journal did not account for.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("journal %s: %w", path, err)
	}
	j.f = f
	j.dirDirty = true
	if j.buf == nil {
		// Flush runs once it holds BufferSize bytes: room for that and
		// a typical last record, so that it rarely grows.
		j.buf = make([]byte, 0, j.opt.BufferSize+j.opt.BufferSize/4)
	}
	j.buf = append(j.buf[:0], segHeader...)
	j.mu.Lock()
	j.segs = append(j.segs, s)
	j.buffered = int64(len(j.buf))
	j.mu.Unlock()
	return nil
}

// Close flushes and closes the journal's files, without fsync: call Sync
// first for a clean shutdown. Open Readers get ErrClosed. Closing twice
// returns nil.
func (j *Journal) Close() error {
	if j.closed {
		return nil
	}
	err := j.Flush()
	if j.f != nil {
		if cerr := j.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("journal %s: close: %w", j.path(j.newest()), cerr)
		}
		j.f = nil
	}
	j.mu.Lock()
	j.closed = true
	j.gen++
	j.mu.Unlock()
	return err
}
