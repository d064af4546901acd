package wire

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// minCompress is the smallest body worth compressing: below it the zstd
// frame header eats the gain.
const minCompress = 256

// Compressor compresses frame bodies with zstd. It is safe for concurrent
// use (EncodeAll is).
type Compressor struct {
	enc *zstd.Encoder
}

// NewCompressor returns a compressor at a tdfs -z level: 1 is zstd's
// fastest, 2 default, 3 better, 4 and above best.
func NewCompressor(level int) (*Compressor, error) {
	if level < 1 {
		return nil, fmt.Errorf("compression level %d: want 1 or more", level)
	}
	l := zstd.EncoderLevel(min(level, int(zstd.SpeedBestCompression)))
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(l), zstd.WithEncoderConcurrency(1),
		// Frames are at most MaxFrameLen: a bigger window buys nothing.
		zstd.WithWindowSize(2<<20))
	if err != nil {
		return nil, err
	}
	return &Compressor{enc: enc}, nil
}

// compress returns the compressed body, and false when compressing does not
// save at least 1/32 of it.
func (c *Compressor) compress(body []byte) ([]byte, bool) {
	z := c.enc.EncodeAll(body, make([]byte, 0, len(body)))
	if len(z) >= len(body)-len(body)/32 {
		return nil, false
	}
	return z, true
}

// Decompressor decodes compressed frame bodies with a memory cap: a
// hostile peer cannot make it allocate more than MaxFrameLen per body. It
// is safe for concurrent use.
type Decompressor struct {
	dec *zstd.Decoder
}

// NewDecompressor returns a bounded decompressor.
func NewDecompressor() (*Decompressor, error) {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(MaxFrameLen),
		zstd.WithDecoderMaxWindow(4<<20),
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return nil, err
	}
	return &Decompressor{dec: dec}, nil
}

// decompressCap is the output buffer's capacity: MaxFrameLen plus one zstd
// block (128 KiB, plus the decoder's 16 bytes of over-allocation). The
// decoder checks the output size (WithDecoderMaxMemory) only after each
// block, so a bomb's last block lands beyond MaxFrameLen; with this
// headroom it lands in the buffer instead of making append reallocate it
// at 1.25 times the size (measured by TestZstdBomb).
const decompressCap = MaxFrameLen + 128<<10 + 16

func (d *Decompressor) decompress(dst, src []byte) ([]byte, error) {
	if cap(dst) < decompressCap {
		// WithDecodeAllCapLimit bounds the output by dst's capacity;
		// WithDecoderMaxMemory bounds it by MaxFrameLen.
		dst = make([]byte, 0, decompressCap)
	}
	out, err := d.dec.DecodeAll(src, dst[:0])
	if err != nil {
		return nil, fmt.Errorf("%w: zstd: %w", ErrMalformed, err)
	}
	if len(out) > MaxFrameLen { // belt and braces: the decoder refuses these itself
		return nil, fmt.Errorf("%w: zstd body of %d bytes exceeds %d", ErrMalformed, len(out), MaxFrameLen)
	}
	return out, nil
}
