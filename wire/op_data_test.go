package wire

import (
	"errors"
	"math"
	"testing"
)

func dataOpCases() []opCase {
	return append([]opCase{
		{"write", 30, &Write{Handle: 3, Off: 4096, Data: []byte("hello, world\n"), Mtime: tNow}},
		{"write max", math.MaxUint64, &Write{Handle: math.MaxUint64, Off: math.MaxInt64, Data: pattern(MaxWriteLen), Mtime: tMax}},
		{"write empty data", 31, &Write{Handle: 1, Off: 0, Data: nil, Mtime: tOmit}},
		{"write negative mtime", 32, &Write{Handle: 1, Off: 1, Data: []byte{0}, Mtime: tNeg}},
		{"fallocate", 33, &Fallocate{Handle: 4, Mode: 1, Off: 0, Len: 1 << 30, Mtime: tNow}},
		{"fallocate max", 34, &Fallocate{Handle: math.MaxUint64, Mode: math.MaxUint32, Off: math.MaxInt64, Len: math.MaxInt64, Mtime: tMin}},
		{"fallocate omit", 35, &Fallocate{Handle: 1, Mtime: tOmit}},
		{"sync", 36, &Sync{}},
		{"sync seq 0", 0, &Sync{}},
		{"sync max seq", math.MaxUint64, &Sync{}},
		{"run start", 1, &RunStart{Run: RunID{1, 2, 3, 0xff}}},
		{"run start zero", 5, &RunStart{}},
		{"unclean", 6, &Unclean{}},
	}, copyOpCases()...)
}

func TestDataOpsRoundTrip(t *testing.T) {
	for _, tc := range dataOpCases() {
		t.Run(tc.name, func(t *testing.T) { checkOpRoundTrip(t, tc) })
	}
}

// The decoded Data aliases the frame body (documented on ParseOp), so a
// Write of a megabyte costs no copy; the caller must copy before reuse.
func TestWriteDataAliasesBody(t *testing.T) {
	body := AppendOp(nil, 1, &Write{Handle: 1, Data: []byte("abc"), Mtime: tOmit})
	_, op, err := ParseOp(body)
	if err != nil {
		t.Fatal(err)
	}
	w := op.(*Write)
	for i := range body {
		body[i] = 'Z'
	}
	if string(w.Data) != "ZZZ" {
		t.Errorf("Data = %q after overwriting the body; want it to alias the body", w.Data)
	}
	if cap(w.Data) != len(w.Data) {
		t.Errorf("cap(Data) = %d, want %d: appending to Data must not overwrite the rest of the body", cap(w.Data), len(w.Data))
	}
}

func TestWriteBounds(t *testing.T) {
	write := func(n int, data []byte) []byte {
		b := appendUvarint(opStart(OpWrite), 1) // handle
		b = appendUvarint(b, 0)                 // offset
		b = appendUvarint(b, uint64(n))         // data length
		b = append(b, data...)
		return appendTime(b, tOmit)
	}
	checkMalformed(t, "data of MaxWriteLen+1", write(MaxWriteLen+1, make([]byte, MaxWriteLen+1)), parseOpErr)
	checkMalformed(t, "claimed 2^40 bytes of data", write(1<<40, nil), parseOpErr)
	// A claimed length within the bound but beyond the input is truncation.
	if err := parseOpErr(write(MaxWriteLen, []byte("short"))); !errors.Is(err, ErrTruncated) {
		t.Errorf("claimed MaxWriteLen of 5 bytes: err = %v, want ErrTruncated", err)
	}

	// Offsets and lengths are int64 on the slave: 2^63 does not fit.
	b := appendUvarint(opStart(OpWrite), 1)
	b = appendUvarint(b, 1<<63)
	b = appendBytes(b, nil)
	b = appendTime(b, tOmit)
	checkMalformed(t, "write offset 2^63", b, parseOpErr)

	for _, field := range []int{1, 2} { // offset, length
		b := appendUvarint(opStart(OpFallocate), 1)
		b = appendUvarint(b, 0)
		for i := 1; i <= 2; i++ {
			if i == field {
				b = appendUvarint(b, math.MaxUint64)
			} else {
				b = appendUvarint(b, 0)
			}
		}
		b = appendTime(b, tOmit)
		checkMalformed(t, "fallocate field of 2^64-1", b, parseOpErr)
	}
}

func TestLengthBoundBeforeAllocation(t *testing.T) {
	// A tiny body claiming huge lengths must be refused by the bound check,
	// never by a failed allocation or a read of the claimed size.
	huge := func(t OpType) []byte {
		b := opStart(t)
		if t == OpWrite {
			b = appendUvarint(appendUvarint(b, 1), 0)
		}
		return appendUvarint(b, 1<<40)
	}
	for _, typ := range []OpType{OpWrite, OpCreate, OpSetxattr, OpSymlink} {
		body := huge(typ)
		checkMalformed(t, typ.String()+" claiming 2^40 bytes", body, parseOpErr)
		if n := allocBytesPerRun(100, func() { _, _, _ = ParseOp(body) }); n > 4<<10 {
			t.Errorf("%v claiming 2^40 bytes: %d bytes allocated per parse, want a few hundred", typ, n)
		}
	}
}
