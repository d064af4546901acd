package journal

import "errors"

var (
	// ErrGap is returned by Append when seq does not follow Last()+1 (or is
	// 0, which is never a record): the journal holds dense seqs only. The
	// caller then Resets.
	ErrGap = errors.New("journal: seq does not follow the last record")
	// ErrTruncated is returned by Reader and Reader.Next when the records
	// it needs have been removed: dropped for MaxBytes, truncated, or
	// Reset.
	ErrTruncated = errors.New("journal: records removed")
	// ErrOutOfRange is returned by Reader for a seq beyond Last()+1, or 0.
	ErrOutOfRange = errors.New("journal: seq out of range")
	// ErrTooLarge is returned by Append for a body longer than MaxRecord.
	ErrTooLarge = errors.New("journal: record too large")
	// ErrClosed is returned after Close (and by a closed Reader).
	ErrClosed = errors.New("journal: closed")
	// ErrForeign is returned by Open when a file named like a segment is
	// not one: it is left alone, and the journal refuses to open rather
	// than guess.
	ErrForeign = errors.New("journal: not a tdfs journal segment")
	// ErrVersion is returned by Open for a segment written by another
	// version of the format.
	ErrVersion = errors.New("journal: unsupported segment version")
	// ErrCorrupt is returned by Reader.Next when a record that was
	// verified (or written) earlier no longer checks: the disk changed
	// under the journal.
	ErrCorrupt = errors.New("journal: corrupt record")
)
