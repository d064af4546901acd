package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// FrameKind says what a frame body holds.
type FrameKind uint8

// Frame kinds. Never renumber.
const (
	FrameHello       FrameKind = 1  // master -> slave, first on the control stream: Hello
	FrameHelloAck    FrameKind = 2  // slave -> master: HelloAck
	FrameOp          FrameKind = 3  // master -> slave: one numbered op (AppendOp)
	FrameAck         FrameKind = 4  // slave -> master: Ack
	FrameError       FrameKind = 5  // either way, last frame before closing: Error
	FrameBye         FrameKind = 6  // master -> slave: no more ops; answer with a final Ack (empty body)
	FrameResync      FrameKind = 7  // master -> slave: one positioned resync item (AppendResyncItem)
	FrameResyncReply FrameKind = 8  // slave -> master: one resync reply (AppendResyncReply)
	FrameLaneHello   FrameKind = 9  // master -> slave, first on a lane's stream: LaneHello
	FrameLaneAck     FrameKind = 10 // slave -> master: the lane is bound to its session (empty body)
	FrameStall       FrameKind = 11 // slave -> master: it cannot apply an op for want of a resource: Stall

	// frameKindLast is the highest kind a FrameReader accepts.
	frameKindLast = FrameStall
)

func (k FrameKind) String() string {
	switch k {
	case FrameHello:
		return "hello"
	case FrameHelloAck:
		return "hello-ack"
	case FrameOp:
		return "op"
	case FrameAck:
		return "ack"
	case FrameError:
		return "error"
	case FrameBye:
		return "bye"
	case FrameResync:
		return "resync"
	case FrameResyncReply:
		return "resync-reply"
	case FrameLaneHello:
		return "lane-hello"
	case FrameLaneAck:
		return "lane-ack"
	case FrameStall:
		return "stall"
	}
	return fmt.Sprintf("frame(%d)", uint8(k))
}

const flagZstd = 1 << 0

// AppendFrame appends a frame carrying body to b. With a non-nil
// Compressor, the body is sent zstd-compressed when that makes it smaller
// (incompressible data goes raw).
func AppendFrame(b []byte, kind FrameKind, body []byte, c *Compressor) []byte {
	if c != nil && len(body) >= minCompress {
		if z, ok := c.compress(body); ok {
			b = append(b, byte(kind), flagZstd)
			return appendBytes(b, z)
		}
	}
	b = append(b, byte(kind), 0)
	return appendBytes(b, body)
}

// FrameRoom is the room FrameInPlace needs before a body for the longest
// frame header (kind, flags, uvarint length).
const FrameRoom = 2 + binary.MaxVarintLen64

// FrameInPlace returns the frame AppendFrame would append for the body
// buf[FrameRoom:], without copying the body when it goes uncompressed: the
// header is written into the room before it, and the frame is a suffix of
// buf. A compressed frame is new memory; buf is not touched then.
func FrameInPlace(buf []byte, kind FrameKind, c *Compressor) []byte {
	body := buf[FrameRoom:]
	if c != nil && len(body) >= minCompress {
		if z, ok := c.compress(body); ok {
			return appendBytes(append(make([]byte, 0, FrameRoom+len(z)), byte(kind), flagZstd), z)
		}
	}
	var room [FrameRoom]byte
	h := binary.AppendUvarint(append(room[:0], byte(kind), 0), uint64(len(body)))
	start := FrameRoom - len(h)
	copy(buf[start:], h)
	return buf[start:]
}

// FrameReader reads frames from a stream. It is not safe for concurrent use.
type FrameReader struct {
	r   *bufio.Reader
	d   *Decompressor
	buf []byte
	out []byte
}

// NewFrameReader returns a reader of frames from r; compressed bodies are
// decoded with d (which may be shared), and a compressed frame without a
// decompressor is an error.
func NewFrameReader(r io.Reader, d *Decompressor) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, 64<<10), d: d}
}

// Next reads the next frame. The body is valid until the next call. At a
// clean end of stream (between frames) it returns io.EOF; inside a frame,
// ErrTruncated.
func (fr *FrameReader) Next() (FrameKind, []byte, error) {
	kind, flags, n, err := readHeader(fr.r)
	if err != nil {
		return 0, nil, err
	}
	if cap(fr.buf) < n {
		fr.buf = make([]byte, n)
	}
	fr.buf = fr.buf[:n]
	if _, err := io.ReadFull(fr.r, fr.buf); err != nil {
		return 0, nil, eofToTruncated(err)
	}
	if flags&flagZstd == 0 {
		return kind, fr.buf, nil
	}
	if fr.d == nil {
		return 0, nil, fmt.Errorf("%w: compressed frame but no decompressor", ErrMalformed)
	}
	fr.out, err = fr.d.decompress(fr.out[:0], fr.buf)
	if err != nil {
		return 0, nil, err
	}
	return kind, fr.out, nil
}

// ReadFrame reads one frame from r into a buffer of its own, the caller's
// to keep, reading nothing beyond the frame: for a stream that carries a
// single frame (a data stream), without FrameReader's read-ahead buffer
// and the copy out of it. Errors are Next's.
func ReadFrame(r io.Reader, d *Decompressor) (FrameKind, []byte, error) {
	kind, flags, n, err := readHeader(&byteReader{r: r})
	if err != nil {
		return 0, nil, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, eofToTruncated(err)
	}
	if flags&flagZstd == 0 {
		return kind, body, nil
	}
	if d == nil {
		return 0, nil, fmt.Errorf("%w: compressed frame but no decompressor", ErrMalformed)
	}
	out, err := d.decompress(nil, body)
	if err != nil {
		return 0, nil, err
	}
	return kind, out, nil
}

// byteReader reads a header one byte at a time, so nothing past it is
// consumed.
type byteReader struct {
	r io.Reader
	b [1]byte
}

func (br *byteReader) Read(p []byte) (int, error) { return br.r.Read(p) }

func (br *byteReader) ReadByte() (byte, error) {
	if _, err := io.ReadFull(br.r, br.b[:]); err != nil {
		return 0, err
	}
	return br.b[0], nil
}

// readHeader reads a frame's kind, flags and body length: io.EOF at a
// clean end of stream, before the first byte.
func readHeader(r interface {
	io.Reader
	io.ByteReader
}) (kind FrameKind, flags byte, n int, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:1]); err != nil {
		return 0, 0, 0, err // io.EOF between frames
	}
	if _, err := io.ReadFull(r, hdr[1:]); err != nil {
		return 0, 0, 0, eofToTruncated(err)
	}
	kind, flags = FrameKind(hdr[0]), hdr[1]
	if kind < FrameHello || kind > frameKindLast {
		return 0, 0, 0, fmt.Errorf("%w: unknown frame kind %d", ErrMalformed, hdr[0])
	}
	if flags&^flagZstd != 0 {
		return 0, 0, 0, fmt.Errorf("%w: unknown frame flags %#x", ErrMalformed, flags)
	}
	u, err := readUvarint(r)
	if err != nil {
		return 0, 0, 0, err
	}
	if u > MaxFrameLen {
		return 0, 0, 0, fmt.Errorf("%w: %v frame of %d bytes exceeds %d", ErrMalformed, kind, u, MaxFrameLen)
	}
	return kind, flags, int(u), nil
}

// readUvarint reads a frame length: a minimal-form uvarint, as the decoder
// requires of every varint (see decoder.uvarint). Unlike
// binary.ReadUvarint it leaves the stream's own errors (a reset QUIC
// stream) unwrapped instead of calling them malformed input, and turns an
// end of stream into ErrTruncated: it is always inside a frame.
func readUvarint(r io.ByteReader) (uint64, error) {
	var v uint64
	for i := range binary.MaxVarintLen64 {
		c, err := r.ReadByte()
		if err != nil {
			return 0, eofToTruncated(err)
		}
		if i == binary.MaxVarintLen64-1 && c > 1 {
			break
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if i > 0 && c == 0 {
				return 0, fmt.Errorf("frame length: %w", errNonMinimal)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: frame length overflows 64 bits", ErrMalformed)
}

func eofToTruncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrTruncated
	}
	return err
}
