package wire

import (
	"math"
	"strings"
	"testing"
)

func copyOpCases() []opCase {
	return []opCase{
		{"copy range by path", 40, &CopyRange{SrcPath: "a/src", SrcOff: 4096, Handle: 7, Off: 0, Len: 64 << 20, Mtime: tNow}},
		{"copy range by handle", 41, &CopyRange{SrcHandle: 3, SrcOff: 0, Handle: 3, Off: 1 << 40, Len: 1, Mtime: tNeg}},
		{"copy range max", math.MaxUint64, &CopyRange{SrcHandle: math.MaxUint64, SrcOff: math.MaxInt64 - MaxCopyLen, Handle: math.MaxUint64, Off: math.MaxInt64 - MaxCopyLen, Len: MaxCopyLen, Mtime: tMax}},
		{"copy range long path", 42, &CopyRange{SrcPath: longPath(MaxPathLen), SrcOff: math.MaxInt64, Handle: 1, Off: math.MaxInt64, Len: 0, Mtime: tMin}},
		{"copy range empty", 43, &CopyRange{SrcPath: "x", Handle: 1, Mtime: tOmit}},
	}
}

func TestCopyRangeRoundTrip(t *testing.T) {
	for _, tc := range copyOpCases() {
		t.Run(tc.name, func(t *testing.T) { checkOpRoundTrip(t, tc) })
	}
}

// copyBody encodes a CopyRange by hand, so that fields the encoder would
// never produce can be tried.
func copyBody(srcHandle uint64, srcPath string, srcOff, handle, off, n uint64) []byte {
	b := appendUvarint(opStart(OpCopyRange), srcHandle)
	b = appendString(b, srcPath)
	b = appendUvarint(b, srcOff)
	b = appendUvarint(b, handle)
	b = appendUvarint(b, off)
	b = appendUvarint(b, n)
	return appendTime(b, tOmit)
}

func TestCopyRangeBounds(t *testing.T) {
	if err := parseOpErr(copyBody(0, "f", 0, 1, 0, MaxCopyLen)); err != nil {
		t.Fatalf("a copy of MaxCopyLen: %v", err)
	}
	for _, tc := range []struct {
		name string
		body []byte
		want string // in the error
	}{
		{"length MaxCopyLen+1", copyBody(0, "f", 0, 1, 0, MaxCopyLen+1), "exceeds"},
		{"length 2^63", copyBody(0, "f", 0, 1, 0, 1<<63), "out of range"},
		{"source offset 2^63", copyBody(0, "f", 1<<63, 1, 0, 1), "out of range"},
		{"offset 2^64-1", copyBody(0, "f", 0, 1, math.MaxUint64, 1), "out of range"},
		{"source range past 2^63-1", copyBody(0, "f", math.MaxInt64, 1, 0, 1), "overflows"},
		{"destination range past 2^63-1", copyBody(0, "f", 0, 1, math.MaxInt64-9, 10), "overflows"},
		{"no source", copyBody(0, "", 0, 1, 0, 1), "exactly one"},
		{"handle and path", copyBody(2, "f", 0, 1, 0, 1), "exactly one"},
		{"source path with ..", copyBody(0, "a/../b", 0, 1, 0, 1), "source path"},
		{"absolute source path", copyBody(0, "/etc/passwd", 0, 1, 0, 1), "source path"},
		{"source path with NUL", copyBody(0, "a\x00b", 0, 1, 0, 1), "source path"},
		{"source path too long", copyBody(0, longPath(MaxPathLen+1), 0, 1, 0, 1), "source path"},
	} {
		checkMalformed(t, tc.name, tc.body, parseOpErr)
		if err := parseOpErr(tc.body); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "copy-range") {
			t.Errorf("%s: err = %v, want it to name the op and say %q", tc.name, err, tc.want)
		}
	}
}
