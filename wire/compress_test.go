package wire

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func newCodec(t testing.TB, level int) (*Compressor, *Decompressor) {
	t.Helper()
	c, err := NewCompressor(level)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDecompressor()
	if err != nil {
		t.Fatal(err)
	}
	return c, d
}

func compressible(n int) []byte {
	return bytes.Repeat([]byte("tdfs replicates every write to its slaves. "), n/43+1)[:n]
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewCompressorLevels(t *testing.T) {
	for _, level := range []int{0, -1} {
		if _, err := NewCompressor(level); err == nil {
			t.Errorf("NewCompressor(%d) succeeded", level)
		}
	}
	body := AppendOp(nil, 1, &Write{Handle: 1, Data: compressible(200 << 10), Mtime: tNow})
	_, d := newCodec(t, 1)
	for _, level := range []int{1, 2, 3, 4, 99} {
		c, err := NewCompressor(level)
		if err != nil {
			t.Fatalf("NewCompressor(%d): %v", level, err)
		}
		f := AppendFrame(nil, FrameOp, body, c)
		if f[1] != flagZstd || len(f) >= len(body)/4 {
			t.Errorf("level %d: %d bytes with flags %#x from %d", level, len(f), f[1], len(body))
		}
		kind, got, err := NewFrameReader(bytes.NewReader(f), d).Next()
		if err != nil || kind != FrameOp || !bytes.Equal(got, body) {
			t.Errorf("level %d: read back %v, %d bytes, %v", level, kind, len(got), err)
		}
	}
}

func TestCompressedStream(t *testing.T) {
	c, d := newCodec(t, 2)
	want := []frame{
		{FrameOp, AppendOp(nil, 1, &Write{Handle: 1, Data: compressible(MaxWriteLen), Mtime: tNow})},
		{FrameOp, AppendOp(nil, 2, &Write{Handle: 1, Data: randomBytes(t, 64<<10), Mtime: tNow})},
		{FrameAck, (&Ack{Applied: 2, Durable: 1}).Append(nil)},
		{FrameOp, compressible(minCompress - 1)}, // too short to bother
		{FrameOp, compressible(minCompress)},
		{FrameBye, nil},
	}
	wantFlags := []byte{flagZstd, 0, 0, 0, flagZstd, 0}
	var stream []byte
	raw := 0
	for i, f := range want {
		start := len(stream)
		stream = AppendFrame(stream, f.kind, f.body, c)
		raw += len(AppendFrame(nil, f.kind, f.body, nil))
		if stream[start+1] != wantFlags[i] {
			t.Errorf("frame %d (%d bytes): flags %#x, want %#x", i, len(f.body), stream[start+1], wantFlags[i])
		}
	}
	if len(stream) >= raw-MaxWriteLen/2 {
		t.Errorf("compressed stream of %d bytes against %d raw", len(stream), raw)
	}
	got, err := readAll(NewFrameReader(bytes.NewReader(stream), d))
	if err != io.EOF {
		t.Fatalf("err = %v, want io.EOF", err)
	}
	checkFrames(t, got, want)

	// Truncating inside a compressed frame is truncation, as for raw ones.
	cut := len(AppendFrame(nil, want[0].kind, want[0].body, c)) - 1
	_, _, err = NewFrameReader(bytes.NewReader(stream[:cut]), d).Next()
	if !errors.Is(err, ErrTruncated) {
		t.Errorf("compressed frame cut short: err = %v, want ErrTruncated", err)
	}
}

func TestIncompressibleGoesRaw(t *testing.T) {
	c, _ := newCodec(t, 4)
	body := randomBytes(t, 256<<10)
	f := AppendFrame(nil, FrameOp, body, c)
	if f[1] != 0 {
		t.Fatalf("random body sent with flags %#x, want raw", f[1])
	}
	if want := AppendFrame(nil, FrameOp, body, nil); !bytes.Equal(f, want) {
		t.Errorf("raw frame with a compressor differs from one without")
	}
}

func TestCompressedFrameWithoutDecompressor(t *testing.T) {
	c, _ := newCodec(t, 1)
	f := AppendFrame(nil, FrameOp, compressible(4096), c)
	if f[1] != flagZstd {
		t.Fatalf("flags %#x, want compressed", f[1])
	}
	_, _, err := NewFrameReader(bytes.NewReader(f), nil).Next()
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("err = %v, want ErrMalformed", err)
	}
}

func TestCorruptCompressedFrame(t *testing.T) {
	c, d := newCodec(t, 1)
	f := AppendFrame(nil, FrameOp, compressible(4096), c)
	for _, corrupt := range []func([]byte){
		func(b []byte) { b[4] ^= 0xff }, // zstd magic
		func(b []byte) { b[len(b)-3] ^= 0x55 },
		func(b []byte) { b[len(b)/2] ^= 0xff },
	} {
		g := bytes.Clone(f)
		corrupt(g)
		kind, body, err := NewFrameReader(bytes.NewReader(g), d).Next()
		if err == nil && bytes.Equal(body, compressible(4096)) {
			continue // the flip hit something zstd does not check; not a failure
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("corrupt frame: %v, %d bytes, err = %v, want ErrMalformed", kind, len(body), err)
		}
	}
}

// A body of exactly MaxFrameLen decompresses; one byte more does not, even
// though its compressed frame is small.
func TestDecompressedSizeBound(t *testing.T) {
	c, d := newCodec(t, 1)
	for _, n := range []int{MaxFrameLen, MaxFrameLen + 1} {
		body := compressible(n)
		f := AppendFrame(nil, FrameOp, body, c)
		if f[1] != flagZstd || len(f) > n/10 {
			t.Fatalf("body of %d: frame of %d bytes, flags %#x", n, len(f), f[1])
		}
		_, got, err := NewFrameReader(bytes.NewReader(f), d).Next()
		switch {
		case n <= MaxFrameLen && (err != nil || !bytes.Equal(got, body)):
			t.Errorf("body of %d: %d bytes back, err = %v", n, len(got), err)
		case n > MaxFrameLen && !errors.Is(err, ErrMalformed):
			t.Errorf("body of %d: err = %v, want ErrMalformed", n, err)
		}
	}
}

// rleBomb hand-builds a zstd frame of RLE blocks, each 4 bytes that expand
// to 128 KiB: 64 blocks are 256 bytes on the wire and 8 MiB decoded. With
// fcs < 0 the frame does not declare its size; otherwise it declares fcs
// (a lie).
func rleBomb(blocks int, fcs int) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0xFD2FB528) // magic
	if fcs < 0 {
		b = append(b, 0x00) // descriptor: no content size, no checksum, no dictionary
	} else {
		b = append(b, 0x40) // descriptor: 2-byte content size
	}
	b = append(b, (17-10)<<3) // window descriptor: 128 KiB
	if fcs >= 0 {
		b = binary.LittleEndian.AppendUint16(b, uint16(fcs-256))
	}
	const blockSize = 128 << 10
	for i := range blocks {
		h := uint32(blockSize<<3 | 1<<1) // RLE
		if i == blocks-1 {
			h |= 1 // last block
		}
		b = append(b, byte(h), byte(h>>8), byte(h>>16), 'A')
	}
	return b
}

func TestZstdBomb(t *testing.T) {
	_, d := newCodec(t, 1)

	// Sanity: the hand-built frame is valid zstd and as big as claimed, so
	// the refusals below are about size, not about a broken frame.
	plain, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if out, err := plain.DecodeAll(rleBomb(64, -1), nil); err != nil || len(out) != 8<<20 {
		t.Fatalf("unbounded decode of the bomb: %d bytes, %v", len(out), err)
	}
	if out, err := d.decompress(nil, rleBomb(8, -1)); err != nil || len(out) != 1<<20 {
		t.Fatalf("bounded decode of 1 MiB of RLE blocks: %d bytes, %v", len(out), err)
	}

	// A real encoder's output, declaring its 8 MiB size up front.
	declared, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	defer declared.Close()
	bombs := map[string][]byte{
		"rle 8 MiB":              rleBomb(64, -1),
		"rle 1 GiB":              rleBomb(8192, -1),
		"rle lying about size":   rleBomb(64, 1000),
		"encoder, size declared": declared.EncodeAll(make([]byte, 8<<20), nil),
	}
	for name, z := range bombs {
		t.Run(name, func(t *testing.T) {
			if len(z) > MaxFrameLen {
				t.Fatalf("bomb of %d bytes does not fit a frame", len(z))
			}
			stream := append([]byte{byte(FrameOp), flagZstd}, appendBytes(nil, z)...)
			// Warm every pooled block decoder (there are GOMAXPROCS of
			// them, taken in turn), so their one-time buffers are not
			// counted against this frame.
			for range 2 * runtime.GOMAXPROCS(0) {
				_, _ = d.decompress(nil, z)
			}
			var err error
			used := allocBytesPerRun(3, func() {
				_, _, err = NewFrameReader(bytes.NewReader(stream), d).Next()
			})
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("err = %v, want ErrMalformed", err)
			}
			// The output buffer is MaxFrameLen plus one zstd block of
			// headroom, and the frame reader has a 64 KiB bufio buffer.
			// Before that headroom, the bomb's last block made append
			// reallocate the output: 2.4 MiB here.
			if limit := uint64(MaxFrameLen + 512<<10); used > limit {
				t.Errorf("refusing a %d-byte bomb allocated %d bytes, want at most %d", len(z), used, limit)
			}
		})
	}
}

// Compressor and Decompressor are documented as safe for concurrent use:
// one of each serves every slave connection.
func TestCodecConcurrentUse(t *testing.T) {
	c, d := newCodec(t, 2)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var stream []byte
			var want [][]byte
			for i := range 8 {
				body := AppendOp(nil, uint64(i), &Write{Handle: uint64(g), Data: compressible(8<<10 + g*100 + i), Mtime: tNow})
				want = append(want, body)
				stream = AppendFrame(stream, FrameOp, body, c)
			}
			fr := NewFrameReader(bytes.NewReader(stream), d)
			for i := range want {
				_, got, err := fr.Next()
				if err != nil || !bytes.Equal(got, want[i]) {
					errs <- errors.Join(errors.New("concurrent round trip differs"), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
