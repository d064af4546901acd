package wire

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// Shared fixtures: sample ops with boundary values, and the checks every
// op family runs on them.

// Times at the edges of what the encoding carries.
var (
	tMax  = Time{Sec: math.MaxInt64, Nsec: 999_999_999}
	tMin  = Time{Sec: math.MinInt64}
	tNeg  = Time{Sec: -1, Nsec: 1} // one nanosecond before the epoch's second
	tNow  = Time{Sec: 1_700_000_000, Nsec: 123_456_789}
	tOmit = Time{Omit: true}
)

// opCase is one op to round-trip, with the seq it travels under.
type opCase struct {
	name string
	seq  uint64
	op   Op
}

// longPath returns a valid path of exactly n bytes (n >= 1) made of
// components of at most MaxNameLen bytes, each of a different letter.
func longPath(n int) string {
	var sb strings.Builder
	for rem, i := n, 0; rem > 0; i++ {
		if sb.Len() > 0 {
			sb.WriteByte('/')
			rem--
		}
		c := min(rem, MaxNameLen)
		if rem-c == 1 { // a lone byte left could not be a '/' plus a component
			c--
		}
		sb.WriteString(strings.Repeat(string(rune('a'+i%26)), c))
		rem -= c
	}
	return sb.String()
}

// pattern returns n bytes that are neither constant nor random.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// allOpCases returns every family's cases: at least one per op type.
func allOpCases() []opCase {
	var all []opCase
	all = append(all, fileOpCases()...)
	all = append(all, namespaceOpCases()...)
	all = append(all, dataOpCases()...)
	all = append(all, attrOpCases()...)
	return all
}

// normalize maps the empty slices a decoder returns to nil: the encoding
// does not tell nil from empty, so neither may the comparison.
func normalize(op Op) Op {
	switch o := op.(type) {
	case *Write:
		c := *o
		if len(c.Data) == 0 {
			c.Data = nil
		}
		return &c
	case *Setxattr:
		c := *o
		if len(c.Value) == 0 {
			c.Value = nil
		}
		return &c
	}
	return op
}

// checkOpRoundTrip encodes tc behind a prefix, decodes it, and checks the
// decoded op equals the original and encodes to the same bytes.
func checkOpRoundTrip(t *testing.T, tc opCase) {
	t.Helper()
	prefix := []byte("prefix")
	b := AppendOp(append([]byte(nil), prefix...), tc.seq, tc.op)
	if !bytes.HasPrefix(b, prefix) {
		t.Fatalf("AppendOp clobbered the bytes it appends to")
	}
	body := b[len(prefix):]
	seq, op, err := ParseOp(body)
	if err != nil {
		t.Fatalf("ParseOp(AppendOp(%s)): %v", brief(tc.op), err)
	}
	if seq != tc.seq {
		t.Errorf("seq = %d, want %d", seq, tc.seq)
	}
	if op.Type() != tc.op.Type() {
		t.Fatalf("type = %v, want %v", op.Type(), tc.op.Type())
	}
	if got, want := normalize(op), normalize(tc.op); !reflect.DeepEqual(got, want) {
		t.Errorf("decoded op differs\n got %s\nwant %s", brief(got), brief(want))
	}
	if again := AppendOp(nil, seq, op); !bytes.Equal(again, body) {
		t.Errorf("re-encoding gives %d different bytes, want the %d decoded", len(again), len(body))
	}
}

// brief formats an op's fields (not its String) for a failure message,
// without megabytes of data.
func brief(op Op) string {
	const max = 300
	s := fields(op)
	if len(s) > max {
		s = fmt.Sprintf("%s...(%d bytes)", s[:max], len(s))
	}
	return s
}

// checkTruncated feeds every strict prefix of body to parse and expects
// ErrTruncated, and not ErrMalformed, from each. Bodies longer than
// exhaustiveLimit are sampled: every prefix near either end, and a stride
// through the middle.
func checkTruncated(t *testing.T, body []byte, parse func([]byte) error) {
	t.Helper()
	const exhaustiveLimit, edge, stride = 128 << 10, 512, 4093
	for i := 0; i < len(body); i++ {
		if len(body) > exhaustiveLimit && i > edge && i < len(body)-edge && i%stride != 0 {
			continue
		}
		err := parse(body[:i:i])
		if !errors.Is(err, ErrTruncated) || errors.Is(err, ErrMalformed) {
			t.Fatalf("prefix of %d of %d bytes: err = %v, want ErrTruncated", i, len(body), err)
		}
	}
}

// parseOpErr adapts ParseOp to checkTruncated and checkMalformed.
func parseOpErr(b []byte) error {
	_, _, err := ParseOp(b)
	return err
}

// checkMalformed expects parse to fail with an error wrapping ErrMalformed.
func checkMalformed(t *testing.T, what string, b []byte, parse func([]byte) error) {
	t.Helper()
	err := parse(b)
	if !errors.Is(err, ErrMalformed) || errors.Is(err, ErrTruncated) {
		t.Errorf("%s: err = %v, want ErrMalformed", what, err)
	}
}

// allocBytesPerRun reports the bytes f allocates on the heap per call,
// averaged over runs; like testing.AllocsPerRun but in bytes, which is what
// the length bounds are about.
func allocBytesPerRun(runs int, f func()) uint64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f() // warm up, like AllocsPerRun
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

// opBody encodes op under seq 1, for hand-made malformed variants.
func opBody(op Op) []byte { return AppendOp(nil, 1, op) }

// opStart starts a FrameOp body by hand: seq 1 and the op type.
func opStart(t OpType) []byte { return []byte{1, byte(t)} }

// fields formats an op as its type and fields: %+v of an op prints its
// String.
func fields(op Op) string {
	if v := reflect.ValueOf(op); v.Kind() == reflect.Pointer && !v.IsNil() {
		return fmt.Sprintf("%T%+v", op, v.Elem().Interface())
	}
	return fmt.Sprintf("%T%+v", op, op)
}
