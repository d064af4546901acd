package wire

import "fmt"

// AppendOp appends the body of a FrameOp to b: seq, op type, op payload.
func AppendOp(b []byte, seq uint64, op Op) []byte {
	b = appendUvarint(b, seq)
	b = append(b, byte(op.Type()))
	return op.Append(b)
}

// ParseOp parses the body of a FrameOp. The returned op may alias body
// (Write.Data, Setxattr.Value): copy before reusing body.
func ParseOp(body []byte) (seq uint64, op Op, err error) {
	d := &decoder{b: body}
	seq = d.uvarint()
	t := OpType(d.byte())
	if d.err != nil {
		return 0, nil, d.err
	}
	switch t {
	case OpCreate:
		op, err = parseCreate(d)
	case OpMkdir:
		op, err = parseMkdir(d)
	case OpMknod:
		op, err = parseMknod(d)
	case OpSymlink:
		op, err = parseSymlink(d)
	case OpLink:
		op, err = parseLink(d)
	case OpUnlink:
		op, err = parseUnlink(d)
	case OpRmdir:
		op, err = parseRmdir(d)
	case OpRename:
		op, err = parseRename(d)
	case OpOpen:
		op, err = parseOpen(d)
	case OpRelease:
		op, err = parseRelease(d)
	case OpWrite:
		op, err = parseWrite(d)
	case OpSetattr:
		op, err = parseSetattr(d)
	case OpSetxattr:
		op, err = parseSetxattr(d)
	case OpRemovexattr:
		op, err = parseRemovexattr(d)
	case OpFallocate:
		op, err = parseFallocate(d)
	case OpSync:
		op, err = parseSync(d)
	case OpRunStart:
		op, err = parseRunStart(d)
	case OpCopyRange:
		op, err = parseCopyRange(d)
	case OpUnclean:
		op, err = parseUnclean(d)
	default:
		return 0, nil, fmt.Errorf("%w: unknown op type %d", ErrMalformed, t)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("parse %v: %w", t, err)
	}
	return seq, op, nil
}
