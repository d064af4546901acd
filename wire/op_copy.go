package wire

import (
	"fmt"
	"math"
)

// CopyRange: a copy between files the slave already holds.

// Append encodes: source handle, source path, source offset, handle,
// offset, length, mtime.
func (o *CopyRange) Append(b []byte) []byte {
	b = appendUvarint(b, o.SrcHandle)
	b = appendString(b, o.SrcPath)
	b = appendUvarint(b, uint64(o.SrcOff))
	b = appendUvarint(b, o.Handle)
	b = appendUvarint(b, uint64(o.Off))
	b = appendUvarint(b, uint64(o.Len))
	return appendTime(b, o.Mtime)
}

// parseCopyRange checks, besides each field, that exactly one source is
// named and that neither range ends beyond 2^63-1, where the slave's
// offsets (loff_t) end.
func parseCopyRange(d *decoder) (*CopyRange, error) {
	o := &CopyRange{
		SrcHandle: d.uvarint(),
		SrcPath:   d.path("copy source path", true),
		SrcOff:    d.int63("copy source offset"),
		Handle:    d.uvarint(),
		Off:       d.int63("copy offset"),
		Len:       d.int63("copy length"),
	}
	o.Mtime = d.time("mtime")
	if d.err != nil {
		return nil, d.err
	}
	switch {
	case (o.SrcHandle == 0) == (o.SrcPath == ""):
		d.fail(fmt.Errorf("%w: copy source: handle %d and path %q (want exactly one)", ErrMalformed, o.SrcHandle, o.SrcPath))
	case o.Len > MaxCopyLen:
		d.fail(fmt.Errorf("%w: copy of %d bytes exceeds %d", ErrMalformed, o.Len, MaxCopyLen))
	case o.SrcOff > math.MaxInt64-o.Len, o.Off > math.MaxInt64-o.Len:
		d.fail(fmt.Errorf("%w: copy of %d bytes from %d to %d overflows 63-bit offsets", ErrMalformed, o.Len, o.SrcOff, o.Off))
	}
	return o, d.end()
}
