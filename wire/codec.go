package wire

import (
	"encoding/binary"
	"fmt"
	"math"
)

// The small encoding vocabulary every op is written in.

var errNonMinimal = fmt.Errorf("%w: varint not in minimal form", ErrMalformed)

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t Time) []byte {
	if t.Omit {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, t.Sec)
	return binary.AppendUvarint(b, uint64(t.Nsec))
}

// decoder reads fields from a payload. The first error sticks; later reads
// return zero values, so a parse function reads all its fields and checks
// d.err once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

// uvarint reads an unsigned varint in its minimal form.
//
// binary.Uvarint also accepts padded forms (0x80 0x00 for 0); refusing them
// keeps exactly one encoding per value, so decode -> encode gives back the
// input (FuzzParseOp checks it) and a peer cannot smuggle in bytes the
// length checks do not see. binary.AppendUvarint always writes the minimal
// form.
func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n == 0 {
		d.fail(ErrTruncated)
		return 0
	}
	if n < 0 {
		d.fail(fmt.Errorf("%w: varint overflows 64 bits", ErrMalformed))
		return 0
	}
	if n > 1 && d.b[n-1] == 0 {
		d.fail(errNonMinimal)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// varint reads a zigzag-encoded signed varint (binary.AppendVarint); the
// zigzag mapping is a bijection, so minimality carries over from uvarint.
func (d *decoder) varint() int64 {
	ux := d.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail(ErrTruncated)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uint32(what string) uint32 {
	v := d.uvarint()
	if v > math.MaxUint32 {
		d.fail(fmt.Errorf("%w: %s %d out of range", ErrMalformed, what, v))
		return 0
	}
	return uint32(v)
}

// int63 reads an offset or length: a non-negative int64.
func (d *decoder) int63(what string) int64 {
	v := d.uvarint()
	if v > math.MaxInt64 {
		d.fail(fmt.Errorf("%w: %s %d out of range", ErrMalformed, what, v))
		return 0
	}
	return int64(v)
}

// bytes reads a length-prefixed field of at most max bytes. The result
// aliases the input.
func (d *decoder) bytes(what string, max int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) {
		d.fail(fmt.Errorf("%w: %s of %d bytes exceeds %d", ErrMalformed, what, n, max))
		return nil
	}
	if uint64(len(d.b)) < n {
		d.fail(ErrTruncated)
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) string(what string, max int) string {
	return string(d.bytes(what, max))
}

// path reads and validates a path; root says whether "" (the root) is allowed.
func (d *decoder) path(what string, root bool) string {
	p := d.string(what, MaxPathLen)
	if d.err != nil {
		return ""
	}
	if err := CheckPath(p, root); err != nil {
		d.fail(fmt.Errorf("%w: %s: %w", ErrMalformed, what, err))
		return ""
	}
	return p
}

func (d *decoder) time(what string) Time {
	switch d.byte() {
	case 0:
		return Time{Omit: true}
	case 1:
		t := Time{Sec: d.varint(), Nsec: d.uint32(what)}
		if d.err == nil && t.Nsec >= 1e9 {
			d.fail(fmt.Errorf("%w: %s nanoseconds %d out of range", ErrMalformed, what, t.Nsec))
		}
		return t
	default:
		if d.err == nil {
			d.fail(fmt.Errorf("%w: %s: bad time tag", ErrMalformed, what))
		}
		return Time{}
	}
}

// end checks that the payload was consumed exactly.
func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b)))
	}
	return d.err
}

func (d *decoder) xattrName() string {
	s := d.string("xattr name", MaxXattrNameLen)
	if d.err == nil && (s == "" || containsNUL(s)) {
		d.fail(fmt.Errorf("%w: xattr name %q", ErrMalformed, s))
	}
	return s
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}
