// Package wire is the tdfs op vocabulary and its binary encoding, shared by
// the master (mirrorfs numbers and emits ops) and the slave (replayer applies
// them).
//
// It knows nothing of FUSE or QUIC: it imports the standard library and zstd
// only, so both sides can use it without pulling in the other's
// dependencies (compare quic-go's quicvarint).
//
// # Encoding
//
// Everything is explicit byte order (unsigned LEB128 varints, zigzag for
// signed values), so an amd64 master feeds an arm64 slave. Varints must be
// in their minimal form (binary.AppendUvarint writes nothing else): each
// message has exactly one encoding.
//
// A stream is a sequence of frames:
//
//	kind   byte      FrameKind
//	flags  byte      bit 0: body is zstd-compressed
//	length uvarint   length of the body as sent, <= MaxFrameLen
//	body   [length]byte
//
// The body of a FrameOp is: seq uvarint | op type byte | op payload. Op
// payloads are fixed sequences of fields, listed in each op's Append method;
// op type numbers are never renumbered.
//
// Control bodies (control.go) are fixed sequences too, with two optional
// tails for lanes (extra connections of one session, see quictransport):
// Hello ends with a lanes uvarint only when it asks for more than one
// connection (so a master without lanes sends the bytes older slaves
// expect, and an older slave refuses one with lanes as malformed); a
// HelloAck with flag bit 1 set ends with the lanes granted and a 16-byte
// LaneToken. A lane opens with FrameLaneHello (version, token, lane
// number) and the slave answers FrameLaneAck (empty) or FrameError with
// CodeLane. A slave that cannot apply an op for want of a resource (its
// disk full) sends FrameStall (the op's seq and why) and keeps the
// connection, retrying; an older master refuses the frame as unexpected.
//
// The first op of a master run is a RunStart; an Unclean follows it when
// the previous run ended without a clean stop, telling slaves that the
// new run's ops may act on changes they never received (they apply
// tolerantly until compared).
//
// Data the slave already holds is not sent again: a Write carries its
// bytes, but a CopyRange (copy_file_range on the master's mount) names a
// source file, offsets and a length, and the slave copies from its own
// copy of the source, which prefix consistency makes identical to the
// master's as of that op.
//
// # What both sides share besides the encoding
//
// The contract of a resync pass between the master's tree and the
// transport (PassSink, PassOptions, PassProgress, PassResult: pass.go), the
// content hashes both sides compute to compare files (hash.go), and the
// errors a slave's applier and both transports map to error codes
// (ErrRefused, ErrLimit, ErrNeedsResync, ResourceError: errors.go) are
// defined here once.
//
// # Validation
//
// Decoding bounds every length before allocating (MaxPathLen, MaxNameLen,
// MaxXattrValueLen, MaxWriteLen, MaxFrameLen) and validates paths: relative,
// clean, no "." or ".." components, no NUL, no empty components. Offsets
// and lengths are 63-bit; a CopyRange copies at most MaxCopyLen bytes and
// neither of its ranges may end beyond 2^63-1. A decoded
// op is therefore safe to hand to the replayer, which still confines every
// path beneath its root (a symlink inside the tree may point anywhere).
//
// Truncated input yields ErrTruncated; anything else malformed yields an
// error wrapping ErrMalformed.
package wire
