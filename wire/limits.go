package wire

import "errors"

// Bounds on what a peer may send. Every length read from the wire is checked
// against one of these before memory is allocated.
const (
	MaxPathLen       = 4096     // PATH_MAX
	MaxNameLen       = 255      // NAME_MAX, per path component
	MaxXattrNameLen  = 255      // XATTR_NAME_MAX
	MaxXattrValueLen = 64 << 10 // XATTR_SIZE_MAX
	MaxWriteLen      = 1 << 20  // the master mounts with MaxWrite = 1 MiB
	// MaxCopyLen bounds the bytes one CopyRange copies, so that applying
	// one op takes bounded time on the slave; the master splits longer
	// copies (a FUSE COPY_FILE_RANGE asks for up to 4 GiB).
	MaxCopyLen = 1 << 30
	// MaxFrameLen bounds a frame body, compressed or not: the largest op is
	// a Write of MaxWriteLen plus a few dozen bytes of header.
	MaxFrameLen = MaxWriteLen + 64<<10
	maxMsgLen   = 4096 // error messages in FrameError
)

// ErrTruncated is returned when input ends inside a frame or an op.
var ErrTruncated = errors.New("wire: truncated input")

// ErrMalformed is wrapped by every other decoding error: a bound exceeded,
// an invalid path, an unknown op type or frame kind.
var ErrMalformed = errors.New("wire: malformed input")
