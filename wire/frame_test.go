package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

type frame struct {
	kind FrameKind
	body []byte
}

// sampleFrames is one frame of each kind, with the op frames' bodies
// covering every op type.
func sampleFrames() []frame {
	var fs []frame
	for _, tc := range controlCases() {
		fs = append(fs, frame{tc.kind, tc.body})
	}
	for _, tc := range allOpCases() {
		if len(fs) > 40 { // enough for streams; the big ones come separately
			break
		}
		fs = append(fs, frame{FrameOp, AppendOp(nil, tc.seq, tc.op)})
	}
	fs = append(fs,
		frame{FrameResync, AppendResyncItem(nil, 5, &ResyncBegin{Pass: 1, Rebase: true})},
		frame{FrameResync, AppendResyncItem(nil, 6, &ResyncDir{Pass: 1, Final: true, Entries: []Entry{{Name: "f", Kind: KindFile, FileID: 1}}})},
		frame{FrameResyncReply, AppendResyncReply(nil, &ResyncDirDone{Pass: 1, Diffs: []Difference{{Path: "f", What: "missing"}}})},
	)
	return append(fs, frame{FrameBye, nil}, frame{FrameLaneAck, nil},
		frame{FrameStall, (&Stall{Seq: 3, Msg: "disk full"}).Append(nil)})
}

func appendFrames(b []byte, fs []frame, c *Compressor) []byte {
	for _, f := range fs {
		b = AppendFrame(b, f.kind, f.body, c)
	}
	return b
}

// readAll reads frames until an error, copying bodies (they are valid
// only until the next call).
func readAll(fr *FrameReader) ([]frame, error) {
	var fs []frame
	for range 10_000 {
		kind, body, err := fr.Next()
		if err != nil {
			return fs, err
		}
		fs = append(fs, frame{kind, bytes.Clone(body)})
	}
	return fs, errors.New("more than 10000 frames")
}

func checkFrames(t *testing.T, got, want []frame) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].kind != want[i].kind || !bytes.Equal(got[i].body, want[i].body) {
			t.Fatalf("frame %d: got %v of %d bytes, want %v of %d bytes", i, got[i].kind, len(got[i].body), want[i].kind, len(want[i].body))
		}
	}
}

func TestFrameRoundTrip(t *testing.T) {
	want := sampleFrames()
	want = append(want, frame{FrameOp, AppendOp(nil, 1, &Write{Handle: 1, Data: pattern(MaxWriteLen), Mtime: tNow})})
	want = append(want, frame{FrameHello, nil}) // empty bodies are fine at this layer
	stream := appendFrames(nil, want, nil)

	for name, r := range map[string]io.Reader{
		"whole":    bytes.NewReader(stream),
		"one byte": iotest.OneByteReader(bytes.NewReader(stream)),
		"half":     iotest.HalfReader(bytes.NewReader(stream)),
		"data+EOF": iotest.DataErrReader(bytes.NewReader(stream)),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := readAll(NewFrameReader(r, nil))
			if err != io.EOF {
				t.Fatalf("after the last frame: err = %v, want io.EOF", err)
			}
			checkFrames(t, got, want)
		})
	}
}

func TestFrameLayout(t *testing.T) {
	got := AppendFrame([]byte{9}, FrameAck, []byte{1, 2}, nil)
	if want := []byte{9, byte(FrameAck), 0, 2, 1, 2}; !bytes.Equal(got, want) {
		t.Errorf("AppendFrame = % x, want % x", got, want)
	}
	kinds := map[FrameKind]uint8{FrameHello: 1, FrameHelloAck: 2, FrameOp: 3, FrameAck: 4, FrameError: 5, FrameBye: 6,
		FrameResync: 7, FrameResyncReply: 8, FrameLaneHello: 9, FrameLaneAck: 10, FrameStall: 11}
	if len(kinds) != int(frameKindLast) {
		t.Errorf("%d frame kinds checked, want all %d", len(kinds), frameKindLast)
	}
	for k, n := range kinds {
		if uint8(k) != n || strings.HasPrefix(k.String(), "frame(") {
			t.Errorf("frame kind %v = %d, want %d", k, uint8(k), n)
		}
	}
	if FrameKind(0).String() != "frame(0)" {
		t.Errorf("FrameKind(0).String() = %q", FrameKind(0).String())
	}
}

// Every prefix of a stream either ends between frames (all frames before
// it read, then io.EOF) or inside one (ErrTruncated after the whole frames).
func TestFrameReaderTruncated(t *testing.T) {
	// Small frames only: each prefix costs a reader with a 64 KiB buffer,
	// and the big bodies add length, not cases.
	var want []frame
	for _, f := range sampleFrames() {
		if len(f.body) <= 512 {
			want = append(want, f)
		}
	}
	kinds := map[FrameKind]bool{}
	for _, f := range want {
		kinds[f.kind] = true
	}
	if len(kinds) != int(frameKindLast) || len(want) < 20 {
		t.Fatalf("stream of %d frames holds %d kinds, want all %d", len(want), len(kinds), frameKindLast)
	}
	stream := appendFrames(nil, want, nil)
	ends := []int{0} // ends[k]: the stream offset after k frames
	for _, f := range want {
		ends = append(ends, ends[len(ends)-1]+len(AppendFrame(nil, f.kind, f.body, nil)))
	}
	whole := 0 // frames wholly inside the prefix
	for i := 0; i < len(stream); i++ {
		for ends[whole+1] <= i {
			whole++
		}
		got, err := readAll(NewFrameReader(bytes.NewReader(stream[:i]), nil))
		if ends[whole] == i {
			if err != io.EOF {
				t.Fatalf("prefix of %d bytes ends after frame %d: err = %v, want io.EOF", i, whole, err)
			}
		} else if !errors.Is(err, ErrTruncated) || errors.Is(err, ErrMalformed) {
			t.Fatalf("prefix of %d bytes: err = %v after %d frames, want ErrTruncated", i, err, len(got))
		}
		checkFrames(t, got, want[:whole])
	}
}

// errReader returns its data, then err instead of io.EOF.
type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// A stream error (a reset QUIC stream) is passed on as is, wherever it
// strikes: it is neither truncation nor malformed input.
func TestFrameReaderPassesStreamErrors(t *testing.T) {
	errReset := errors.New("stream reset by peer")
	stream := AppendFrame(nil, FrameOp, make([]byte, 300), nil)
	for _, n := range []int{0, 1, 2, 3, 4, 100} { // before the kind, flags, length (2 bytes), body
		_, _, err := NewFrameReader(&errReader{stream[:n], errReset}, nil).Next()
		if !errors.Is(err, errReset) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrTruncated) {
			t.Errorf("stream error after %d bytes: err = %v, want the stream's error", n, err)
		}
	}
}

func TestFrameReaderMalformed(t *testing.T) {
	next := func(b []byte) error {
		_, _, err := NewFrameReader(bytes.NewReader(b), nil).Next()
		return err
	}
	for _, k := range []byte{0, byte(frameKindLast) + 1, 0x80, 0xff} {
		checkMalformed(t, "kind "+FrameKind(k).String(), []byte{k, 0, 0}, next)
	}
	for _, fl := range []byte{2, 3, 0x80, 0xff} {
		checkMalformed(t, "flags", []byte{byte(FrameOp), fl, 0}, next)
	}
	checkMalformed(t, "length MaxFrameLen+1", appendUvarint([]byte{byte(FrameOp), 0}, MaxFrameLen+1), next)
	checkMalformed(t, "length 2^40", appendUvarint([]byte{byte(FrameOp), 0}, 1<<40), next)
	checkMalformed(t, "length 2^64-1", appendUvarint([]byte{byte(FrameOp), 0}, 1<<64-1), next)
	checkMalformed(t, "length overflowing", append([]byte{byte(FrameOp), 0}, bytes.Repeat([]byte{0xff}, 11)...), next)
	checkMalformed(t, "length overflowing in byte 10",
		[]byte{byte(FrameOp), 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02}, next)
	checkMalformed(t, "length non-minimal", []byte{byte(FrameBye), 0, 0x80, 0x00}, next)
	checkMalformed(t, "length non-minimal (1)", []byte{byte(FrameAck), 0, 0x81, 0x00, 7}, next)

	// The largest allowed frame is read.
	big := AppendFrame(nil, FrameOp, make([]byte, MaxFrameLen), nil)
	if err := next(big); err != nil {
		t.Errorf("frame of MaxFrameLen: %v", err)
	}
	// A length within bounds but beyond the stream is truncation.
	if err := next(appendUvarint([]byte{byte(FrameOp), 0}, MaxFrameLen)); !errors.Is(err, ErrTruncated) {
		t.Errorf("frame claiming MaxFrameLen with no body: err = %v, want ErrTruncated", err)
	}
}

// repeatReader yields b over and over: a stream of identical bad headers.
type repeatReader struct {
	b   []byte
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.b[r.off:])
		n += c
		r.off = (r.off + c) % len(r.b)
	}
	return n, nil
}

// A header claiming a terabyte is refused before anything of that size is
// allocated or read.
func TestFrameLengthBoundBeforeAllocation(t *testing.T) {
	for _, claim := range []uint64{1 << 40, MaxFrameLen + 1, 1<<64 - 1} {
		hdr := appendUvarint([]byte{byte(FrameOp), 0}, claim)
		fr := NewFrameReader(&repeatReader{b: hdr}, nil)
		var err error
		if n := allocBytesPerRun(200, func() { _, _, err = fr.Next() }); n > 1<<10 {
			t.Errorf("header claiming %d bytes: %d bytes allocated per Next, want a few hundred", claim, n)
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("header claiming %d bytes: err = %v, want ErrMalformed", claim, err)
		}
	}
}

// Reading frames in steady state reuses the reader's buffer.
func TestFrameReaderReusesBuffer(t *testing.T) {
	f := AppendFrame(nil, FrameOp, pattern(64<<10), nil)
	fr := NewFrameReader(&repeatReader{b: f}, nil)
	if n := allocBytesPerRun(50, func() {
		if _, _, err := fr.Next(); err != nil {
			t.Fatal(err)
		}
	}); n > 1<<10 {
		t.Errorf("%d bytes allocated per frame of 64 KiB, want the buffer reused", n)
	}
}

// FrameInPlace must produce exactly AppendFrame's bytes, alias the body
// when it goes raw, and leave the body alone in every case.
func TestFrameInPlace(t *testing.T) {
	zc, err := NewCompressor(1)
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 300<<10)
	rand.NewChaCha8([32]byte{1}).Read(random)
	bodies := map[string][]byte{
		"empty":          {},
		"small":          []byte("a small body"),
		"one-byte-len":   bytes.Repeat([]byte{'x'}, 127),
		"two-byte-len":   bytes.Repeat([]byte{'x'}, 128),
		"compressible":   bytes.Repeat([]byte("tdfs "), 100<<10),
		"incompressible": random,
	}
	for name, body := range bodies {
		for _, c := range []*Compressor{nil, zc} {
			t.Run(fmt.Sprintf("%s/z=%v", name, c != nil), func(t *testing.T) {
				buf := append(bytes.Repeat([]byte{0xEE}, FrameRoom), body...)
				want := AppendFrame(nil, FrameOp, body, c)
				got := FrameInPlace(buf, FrameOp, c)
				if !bytes.Equal(got, want) {
					t.Fatalf("frame differs from AppendFrame's (%d vs %d bytes)", len(got), len(want))
				}
				if !bytes.Equal(buf[FrameRoom:], body) {
					t.Fatal("the body changed")
				}
				raw := got[1]&flagZstd == 0
				if aliases := &got[len(got)-1] == &buf[len(buf)-1]; len(body) > 0 && raw != aliases {
					t.Fatalf("raw frame %v, aliases the buffer %v", raw, aliases)
				}
				d, err := NewDecompressor()
				if err != nil {
					t.Fatal(err)
				}
				kind, back, err := NewFrameReader(bytes.NewReader(got), d).Next()
				if err != nil || kind != FrameOp || !bytes.Equal(back, body) {
					t.Fatalf("read back: kind %v, %d bytes, err %v", kind, len(back), err)
				}
			})
		}
	}
}
