package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"testing"
)

func TestVarintOverflow(t *testing.T) {
	// Eleven continuation bytes, and ten bytes whose last carries bit 64.
	for _, seq := range [][]byte{
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02},
	} {
		checkMalformed(t, "seq overflowing 64 bits", append(seq, byte(OpSync)), parseOpErr)
	}
	// A signed field (time seconds) overflowing.
	b := appendString(opStart(OpUnlink), "f")
	b = append(b, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0)
	checkMalformed(t, "seconds overflowing 64 bits", b, parseOpErr)
}

func TestVarintNonMinimal(t *testing.T) {
	// binary.Uvarint accepts these; the decoder must not, or the same op
	// has many encodings (and decode -> encode is not the identity).
	for _, seq := range [][]byte{
		{0x80, 0x00},             // 0
		{0x81, 0x00},             // 1
		{0xff, 0x80, 0x00},       // 127
		{0x80, 0x80, 0x80, 0x00}, // 0
	} {
		checkMalformed(t, "non-minimal seq", append(seq, byte(OpSync)), parseOpErr)
	}
	b := appendString(opStart(OpUnlink), "f")
	b = append(b, 1, 0x81, 0x00, 0) // seconds: zigzag 1 (= -1) padded
	checkMalformed(t, "non-minimal seconds", b, parseOpErr)
	b = append(opStart(OpUnlink), 0x81, 0x00, 'f') // path length 1, padded
	b = appendTime(b, tOmit)
	checkMalformed(t, "non-minimal path length", b, parseOpErr)

	// The largest values still decode: minimal 10-byte forms end in 0x01.
	for _, v := range []uint64{math.MaxUint64, 1 << 63, 1<<63 - 1, 128, 127, 0} {
		var d decoder
		d.b = binary.AppendUvarint(nil, v)
		if got := d.uvarint(); got != v || d.end() != nil {
			t.Errorf("uvarint(%d) = %d, %v", v, got, d.err)
		}
	}
	for _, v := range []int64{math.MinInt64, math.MaxInt64, -1, 0, 1, -64, 64} {
		var d decoder
		d.b = binary.AppendVarint(nil, v)
		if got := d.varint(); got != v || d.end() != nil {
			t.Errorf("varint(%d) = %d, %v", v, got, d.err)
		}
	}
}

func TestTimeBounds(t *testing.T) {
	unlink := func(tm []byte) []byte { return append(appendString(opStart(OpUnlink), "f"), tm...) }
	ok := unlink(appendTime(nil, Time{Sec: 0, Nsec: 999_999_999}))
	if err := parseOpErr(ok); err != nil {
		t.Errorf("nsec 999999999: %v", err)
	}
	for _, nsec := range []uint64{1e9, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64} {
		b := unlink(binary.AppendUvarint(binary.AppendVarint([]byte{1}, 0), nsec))
		checkMalformed(t, fmt.Sprint("nsec ", nsec), b, parseOpErr)
	}
	for _, tag := range []byte{2, 0x80, 0xff} {
		checkMalformed(t, "time tag", unlink([]byte{tag}), parseOpErr)
	}
}

// An omitted time carries no seconds: whatever Sec and Nsec held is not sent.
func TestOmitDropsValue(t *testing.T) {
	_, op, err := ParseOp(AppendOp(nil, 1, &Unlink{Path: "f", DirMtime: Time{Sec: 5, Nsec: 6, Omit: true}}))
	if err != nil {
		t.Fatal(err)
	}
	if got := op.(*Unlink).DirMtime; got != tOmit {
		t.Errorf("DirMtime = %+v, want %+v", got, tOmit)
	}
}
