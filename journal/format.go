package journal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// On-disk format; see the package doc. Changing any of it means a new
// version byte: an old binary then refuses the new journal instead of
// cutting it as corrupt.
const (
	magic         = "TDFSJ1\n"
	version       = 1
	headerSize    = len(magic) + 1
	recHeaderSize = 4 + 8 // length, seq
	recTrailer    = 4     // crc
	// recOverhead is what a record costs on disk beyond its body.
	recOverhead = recHeaderSize + recTrailer

	// MaxRecord bounds a record's body, at Append and when reading: a
	// corrupt length must never make the journal allocate more. An encoded
	// op is at most about 1 MiB (wire.MaxFrameLen); the margin costs
	// nothing.
	MaxRecord = 16 << 20

	segSuffix  = ".tdj"
	segDigits  = 20 // enough for any uint64
	segNameLen = segDigits + len(segSuffix)
)

// castagnoli is CRC-32C, which has hardware support on amd64 and arm64.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// segHeader is the header every segment starts with.
var segHeader = append([]byte(magic), version)

// segName is the file name of the segment whose first record is seq.
func segName(first uint64) string {
	return fmt.Sprintf("%0*d%s", segDigits, first, segSuffix)
}

// parseSegName returns the first seq a segment file name stands for, and
// whether name is a segment name at all. Only such names are ever removed.
func parseSegName(name string) (uint64, bool) {
	if len(name) != segNameLen || !strings.HasSuffix(name, segSuffix) {
		return 0, false
	}
	digits := name[:segDigits]
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil { // more than MaxUint64: not a name we write
		return 0, false
	}
	return n, true
}

// headerKind classifies the first bytes of a file with a segment's name.
type headerKind int

const (
	headerOK      headerKind = iota
	headerTorn               // a prefix of the header, or zeros: a crash while creating it
	headerVersion            // our magic, another version
	headerForeign            // not ours
)

// checkHeader classifies b, the first min(headerSize, file size) bytes of a
// file. Zeros count as torn because some filesystems expose an unwritten
// tail as zeros after a power loss, and a header is never zero.
func checkHeader(b []byte) headerKind {
	if len(b) == headerSize && string(b) == string(segHeader) {
		return headerOK
	}
	if len(b) < headerSize && string(b) == string(segHeader[:len(b)]) {
		return headerTorn
	}
	zero := true
	for _, c := range b {
		if c != 0 {
			zero = false
			break
		}
	}
	if zero {
		return headerTorn
	}
	if len(b) == headerSize && string(b[:len(magic)]) == magic {
		return headerVersion
	}
	return headerForeign
}

// appendRecord appends the encoding of record seq to b.
func appendRecord(b []byte, seq uint64, body []byte) []byte {
	b = appendRecordHeader(b, seq, len(body))
	seqBytes := b[len(b)-8:]
	b = append(b, body...)
	return appendRecordTrailer(b, seqBytes, body)
}

// appendRecordHeader appends the header of a record of n bytes.
func appendRecordHeader(b []byte, seq uint64, n int) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	return binary.LittleEndian.AppendUint64(b, seq)
}

// appendRecordTrailer appends the CRC that follows body, given the seq as
// its header encodes it.
func appendRecordTrailer(b, seq, body []byte) []byte {
	return binary.LittleEndian.AppendUint32(b, recordCRC(seq, body))
}

// recordCRC is the checksum stored after a record, over its seq (as
// encoded in the record header) and its body: covering the seq catches a
// valid body under the wrong seq (a stale block).
func recordCRC(seq, body []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, seq), castagnoli, body)
}

// parseRecordHeader returns the body length and seq of a record header
// (recHeaderSize bytes).
func parseRecordHeader(h []byte) (n int64, seq uint64) {
	return int64(binary.LittleEndian.Uint32(h)), binary.LittleEndian.Uint64(h[4:])
}
