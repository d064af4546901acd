package journal

import "sort"

// indexStride is how far apart, in bytes, a segment's index entries are:
// a Reader starting in the middle of a segment reads at most this much of
// record headers to find its seq, and the index costs a few entries per
// segment.
const indexStride = 1 << 20

// indexEntry locates one record in a segment file.
type indexEntry struct {
	seq uint64
	off int64
}

// segment is one segment file. Fields are guarded by Journal.mu, and only
// the writer goroutine changes them.
type segment struct {
	name  string // base name, segName(first)
	first uint64 // seq of its first record, from the name
	// last is the seq of its last record appended, buffered or not;
	// first-1 while it has none.
	last uint64
	// size is the bytes handed to the kernel (header included): what
	// Readers may read. Records beyond it are still in the buffer.
	size int64
	// flushedLast is the last record within size; first-1 when none.
	flushedLast uint64
	// index: the first record, then one every indexStride bytes or so,
	// ascending. Entries beyond size exist for buffered records, but a
	// Reader only looks up flushed seqs.
	index []indexEntry
	// dirty: written (or recovered) since it was last fsynced.
	dirty bool
}

// empty reports whether the segment holds no record.
func (s *segment) empty() bool { return s.last < s.first }

// appendIndex records in idx that record seq starts at off, if it is the
// first or far enough from the previous entry.
func appendIndex(idx []indexEntry, seq uint64, off int64) []indexEntry {
	if n := len(idx); n == 0 || off-idx[n-1].off >= indexStride {
		idx = append(idx, indexEntry{seq: seq, off: off})
	}
	return idx
}

// lookup returns the index entry to start from to reach seq: the last one
// at or before it. seq must be >= s.first.
func (s *segment) lookup(seq uint64) indexEntry {
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].seq > seq })
	if i == 0 {
		return indexEntry{seq: s.first, off: int64(headerSize)}
	}
	return s.index[i-1]
}
