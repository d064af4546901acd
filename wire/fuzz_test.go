package wire

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
)

// Fuzz targets (make fuzz runs each for a while; FuzzParseResyncItem and
// FuzzParseResyncReply likewise):
//
//	go test -run XXX -fuzz FuzzParseOp -fuzztime 20s ./wire/
//
// Crashers land in testdata/fuzz/<Target>/ and stay there as regressions.

// fuzzSeedLimit keeps the seed corpus to small inputs, which still hold
// every op type: the fuzzer minimizes each input that finds new coverage,
// and with 16 KiB seeds that stalled it at 0 execs/s for the whole run.
const fuzzSeedLimit = 1 << 10

// checkDecodeError fails unless err is one of the two documented errors.
func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) {
		t.Fatalf("error %v is neither ErrTruncated nor ErrMalformed", err)
	}
}

// FuzzParseOp: decoding never panics, fails only with the documented
// errors, and what decodes re-encodes to exactly the input: there is one
// encoding per op (varints are minimal, every byte is consumed).
func FuzzParseOp(f *testing.F) {
	for _, tc := range allOpCases() {
		if b := AppendOp(nil, tc.seq, tc.op); len(b) <= fuzzSeedLimit {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		seq, op, err := ParseOp(body)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		if again := AppendOp(nil, seq, op); !bytes.Equal(again, body) {
			t.Fatalf("%s re-encodes to\n% x\nfrom\n% x", brief(op), again, body)
		}
	})
}

// FuzzControl: the same for Hello, HelloAck, Ack, Error, LaneHello and Stall
// bodies. The first byte picks the parser.
func FuzzControl(f *testing.F) {
	kinds := []FrameKind{FrameHello, FrameHelloAck, FrameAck, FrameError, FrameLaneHello, FrameStall}
	for _, tc := range controlCases() {
		if len(tc.body) <= fuzzSeedLimit {
			i := slices.Index(kinds, tc.kind)
			f.Add(append([]byte{byte(i)}, tc.body...))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		kind := kinds[int(in[0])%len(kinds)]
		v, err := parseControl(kind, in[1:])
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		if again := appendControl(v); !bytes.Equal(again, in[1:]) {
			t.Fatalf("%v %+v re-encodes to\n% x\nfrom\n% x", kind, v, again, in[1:])
		}
	})
}

// FuzzParseResyncItem: the same for FrameResync bodies: position, kind,
// item.
func FuzzParseResyncItem(f *testing.F) {
	for _, tc := range resyncItemCases() {
		if b := AppendResyncItem(nil, tc.after, tc.it); len(b) <= fuzzSeedLimit {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		after, it, err := ParseResyncItem(body)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		if again := AppendResyncItem(nil, after, it); !bytes.Equal(again, body) {
			t.Fatalf("%s re-encodes to\n% x\nfrom\n% x", briefResync(it), again, body)
		}
	})
}

// FuzzParseResyncReply: the same for FrameResyncReply bodies.
func FuzzParseResyncReply(f *testing.F) {
	for _, tc := range resyncReplyCases() {
		if b := AppendResyncReply(nil, tc.r); len(b) <= fuzzSeedLimit {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseResyncReply(body)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		if again := AppendResyncReply(nil, r); !bytes.Equal(again, body) {
			t.Fatalf("%s re-encodes to\n% x\nfrom\n% x", briefResync(r), again, body)
		}
	})
}

// The decompressor is costly to build; one serves every fuzz input, as one
// serves every connection in tdfs.
var fuzzDec = sync.OnceValues(NewDecompressor)

// FuzzFrameReader: an arbitrary stream never panics, ends in io.EOF or a
// documented error after a bounded number of frames, and as long as the
// frames are raw, re-encoding them gives back the stream read so far.
func FuzzFrameReader(f *testing.F) {
	c, err := NewCompressor(1)
	if err != nil {
		f.Fatal(err)
	}
	var all []byte
	for _, fr := range sampleFrames() {
		if len(fr.body) <= fuzzSeedLimit {
			one := AppendFrame(nil, fr.kind, fr.body, nil)
			f.Add(one)
			all = append(all, one...)
		}
	}
	f.Add(all)
	f.Add(AppendFrame(nil, FrameOp, compressible(4096), c))
	f.Add(AppendFrame(AppendFrame(nil, FrameAck, (&Ack{Applied: 1}).Append(nil), nil), FrameOp, compressible(1000), c))
	f.Add(append([]byte{byte(FrameOp), flagZstd}, appendBytes(nil, rleBomb(12, -1))...))

	dec, err := fuzzDec()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		fr := NewFrameReader(bytes.NewReader(stream), dec)
		// ReadFrame, called again and again on one reader, must read the
		// same frames (it reads nothing past each one) and fail alike.
		one := bytes.NewReader(stream)
		var again []byte
		raw := true
		// Every frame takes at least 3 bytes, so this bound is never
		// reached unless Next stops consuming input.
		for i := 0; i <= len(stream)/3; i++ {
			kind, body, err := fr.Next()
			kind1, body1, err1 := ReadFrame(one, dec)
			if (err == nil) != (err1 == nil) || err != nil && errorClass(err) != errorClass(err1) ||
				err == nil && (kind != kind1 || !bytes.Equal(body, body1)) {
				t.Fatalf("frame %d: Next gave %v, %d bytes, %v; ReadFrame %v, %d bytes, %v", i, kind, len(body), err, kind1, len(body1), err1)
			}
			if err == io.EOF {
				if raw && !bytes.Equal(again, stream) {
					t.Fatalf("clean end after re-encoding %d of %d bytes", len(again), len(stream))
				}
				return
			}
			if err != nil {
				checkDecodeError(t, err)
				return
			}
			if len(body) > MaxFrameLen {
				t.Fatalf("%v body of %d bytes", kind, len(body))
			}
			if kind < FrameHello || kind > frameKindLast {
				t.Fatalf("frame kind %d accepted", kind)
			}
			if raw && stream[len(again)+1]&flagZstd != 0 {
				raw = false
			}
			if raw {
				again = AppendFrame(again, kind, body, nil)
				if !bytes.HasPrefix(stream, again) {
					t.Fatalf("frame %d (%v, %d bytes) re-encodes differently", i, kind, len(body))
				}
			}
		}
		t.Fatalf("more than %d frames from %d bytes", len(stream)/3, len(stream))
	})
}

// errorClass names what kind of failure err is, for comparing two readers.
func errorClass(err error) string {
	switch {
	case errors.Is(err, io.EOF):
		return "eof"
	case errors.Is(err, ErrTruncated):
		return "truncated"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	}
	return "other: " + err.Error()
}
