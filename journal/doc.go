// Package journal is the tdfs master's on-disk op journal: the numbered ops
// that some slave has not yet made durable, beyond what the master keeps in
// memory, so that a slave that was away can be replayed in seq order, even
// after the master restarted.
//
// It stores opaque records (an encoded op) under dense seqs. It does not
// know what a record means, which slave needs which seq, or when a record
// is no longer needed: the caller says so with TruncateThrough, and learns
// from Dropped and First which slaves can no longer be served from here.
//
// # Layout
//
// A journal is a directory of segment files named %020d.tdj after the seq
// of their first record, so that sorting by name sorts by seq. A segment
// starts with an 8-byte header ("TDFSJ1\n" and a version byte) followed by
// records:
//
//	length uint32  little-endian, length of body, <= MaxRecord
//	seq    uint64  little-endian
//	body   [length]byte
//	crc    uint32  little-endian, CRC-32C (Castagnoli) over seq and body
//
// Only files whose name matches the segment pattern are ever read or
// removed; anything else in the directory is left alone (and listed in the
// Recovery report). A file with a segment's name but not a segment's
// header is refused: Open fails rather than delete what it does not know.
//
// # Guarantees
//
// Records are buffered in memory and handed to the kernel with write(2)
// when the buffer fills, on Flush, and on Sync; nothing is fsynced per
// record. What has been flushed survives the death of the process (kill -9:
// the page cache keeps it); what Sync returned for survives a power loss. A
// power loss may lose any unsynced tail, or leave it torn or filled with
// zeros: Open checks every record (length bound, seq chain, CRC) with
// bounded memory, cuts a segment at its first bad record, drops every later
// segment that no longer chains, and reports what it did in Recovered. The
// journal never returns a record it did not verify, but it cannot know how
// many records were lost: the master compares Last with the seq it knows it
// reached (kept elsewhere) and treats a shortfall as a lost tail.
//
// A write error (ENOSPC, EIO) or fsync error is sticky: Append, Flush and
// Sync return it until Reset, because after a partial write or a failed
// fsync the journal's tail is no longer known to be what was appended. A
// partially written record is cut at the next Open.
//
// # Concurrency
//
// Append, Flush, Sync, TruncateThrough, Reset and Close must be called from
// one goroutine at a time (the caller serialises them). First, Last, Size,
// Dropped and Reader may be called from any goroutine, and any number of
// Readers may run concurrently with the writer, each in its own goroutine:
// a Reader sees what has been flushed, never a partially written record,
// and reports ErrTruncated (never wrong data) when the records it needs
// were removed under it.
package journal
