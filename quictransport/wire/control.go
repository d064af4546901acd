package wire

import (
	"fmt"
)

// Version is the protocol version. ALPN carries it too ("tdfs/1"), so peers
// speaking different versions fail the TLS handshake with a clear error.
const Version = 1

// RunID names one run of a master: a random value minted when tdfs-master
// starts. Sequence numbers are meaningful only within a run.
type RunID [16]byte

// SyncMode is the master's --sync mode, announced in Hello so the slave
// knows how eagerly to make ops durable.
type SyncMode uint8

// Sync modes (DESIGN.md, durability modes).
const (
	ModeAsync SyncMode = 0
	ModeFsync SyncMode = 1
	ModeSync  SyncMode = 2
)

func (m SyncMode) String() string {
	switch m {
	case ModeAsync:
		return "async"
	case ModeFsync:
		return "fsync"
	case ModeSync:
		return "sync"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Hello is the first frame the master sends on the control stream.
type Hello struct {
	Version uint32
	Run     RunID
	Mode    SyncMode
	// First is the lowest seq the master can still send.
	First uint64
	// PrevRun and PrevHead name the master's previous run on this backing
	// dir and its last seq, when that run ended cleanly (zero otherwise):
	// a slave durable at exactly that point holds the tree this run starts
	// from, and may follow it from seq 1.
	PrevRun  RunID
	PrevHead uint64
	// Fresh says the backing dir was empty when this run began: a slave
	// with no state and an empty tree matches it.
	Fresh bool
	// Vouched says the operator vouches that every slave's tree equals the
	// backing dir as this run begins (tdfs-master --assume-in-sync, after
	// seeding the slaves by hand): a slave whose only doubt is that it has
	// no state follows the run from seq 1.
	Vouched bool
}

// Append encodes: version, run, mode, first, prev run, prev head, and a
// flags byte (bit 0 fresh, bit 1 vouched).
func (h *Hello) Append(b []byte) []byte {
	b = appendUvarint(b, uint64(h.Version))
	b = append(b, h.Run[:]...)
	b = append(b, byte(h.Mode))
	b = appendUvarint(b, h.First)
	b = append(b, h.PrevRun[:]...)
	b = appendUvarint(b, h.PrevHead)
	var flags byte
	if h.Fresh {
		flags |= helloFresh
	}
	if h.Vouched {
		flags |= helloVouched
	}
	return append(b, flags)
}

const (
	helloFresh   = 1 << 0
	helloVouched = 1 << 1
)

// ParseHello parses the body of a FrameHello.
func ParseHello(body []byte) (Hello, error) {
	d := &decoder{b: body}
	var h Hello
	h.Version = d.uint32("version")
	h.Run = d.run()
	h.Mode = SyncMode(d.byte())
	h.First = d.uvarint()
	h.PrevRun = d.run()
	h.PrevHead = d.uvarint()
	flags := d.byte()
	h.Fresh, h.Vouched = flags&helloFresh != 0, flags&helloVouched != 0
	if d.err == nil && h.Mode > ModeSync {
		d.fail(fmt.Errorf("%w: unknown sync mode %d", ErrMalformed, h.Mode))
	}
	if d.err == nil && flags&^(helloFresh|helloVouched) != 0 {
		d.fail(fmt.Errorf("%w: hello flags %#x", ErrMalformed, flags))
	}
	return h, d.end()
}

// HelloAck is the slave's answer to Hello: where it stands.
type HelloAck struct {
	// Run is the master run the slave's Applied and Durable refer to; the
	// zero RunID if it has none.
	Run     RunID
	Applied uint64
	Durable uint64
	// MaxPending is how many bytes of ops the slave will buffer ahead of
	// what it has applied; the master keeps its in-flight bytes below it.
	MaxPending uint64
}

// Append encodes: run, applied, durable, max pending.
func (h *HelloAck) Append(b []byte) []byte {
	b = append(b, h.Run[:]...)
	b = appendUvarint(b, h.Applied)
	b = appendUvarint(b, h.Durable)
	return appendUvarint(b, h.MaxPending)
}

// ParseHelloAck parses the body of a FrameHelloAck.
func ParseHelloAck(body []byte) (HelloAck, error) {
	d := &decoder{b: body}
	var h HelloAck
	h.Run = d.run()
	h.Applied = d.uvarint()
	h.Durable = d.uvarint()
	h.MaxPending = d.uvarint()
	return h, d.end()
}

// Ack reports the highest seq the slave applied and the highest it made
// durable (Durable <= Applied).
type Ack struct {
	Applied uint64
	Durable uint64
}

// Append encodes: applied, durable.
func (a *Ack) Append(b []byte) []byte {
	b = appendUvarint(b, a.Applied)
	return appendUvarint(b, a.Durable)
}

// ParseAck parses the body of a FrameAck.
func ParseAck(body []byte) (Ack, error) {
	d := &decoder{b: body}
	a := Ack{Applied: d.uvarint(), Durable: d.uvarint()}
	if d.err == nil && a.Durable > a.Applied {
		d.fail(fmt.Errorf("%w: durable %d beyond applied %d", ErrMalformed, a.Durable, a.Applied))
	}
	return a, d.end()
}

// ErrorCode says why a peer gives up on a connection.
type ErrorCode uint32

// Error codes carried in FrameError (and as QUIC application error codes).
const (
	CodeOK          ErrorCode = 0 // clean close
	CodeProtocol    ErrorCode = 1 // malformed frame or unexpected frame kind
	CodeApply       ErrorCode = 2 // the slave could not apply op Seq
	CodeNeedsResync ErrorCode = 3 // the master cannot send what the slave is missing
	CodeRefused     ErrorCode = 4 // not authorized, or another master is connected
	CodeShutdown    ErrorCode = 5 // the peer is shutting down
	CodeLimit       ErrorCode = 6 // a resource bound was exceeded
)

func (c ErrorCode) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodeProtocol:
		return "protocol error"
	case CodeApply:
		return "apply failed"
	case CodeNeedsResync:
		return "needs resync"
	case CodeRefused:
		return "refused"
	case CodeShutdown:
		return "shutting down"
	case CodeLimit:
		return "limit exceeded"
	}
	return fmt.Sprintf("code(%d)", uint32(c))
}

// Error is the last frame a peer sends before it closes the connection.
type Error struct {
	Code ErrorCode
	Seq  uint64 // the op concerned, or 0
	Msg  string
}

func (e *Error) Error() string {
	if e.Seq != 0 {
		return fmt.Sprintf("%v at seq %d: %s", e.Code, e.Seq, e.Msg)
	}
	return fmt.Sprintf("%v: %s", e.Code, e.Msg)
}

// Append encodes: code, seq, message (cut to 4096 bytes).
func (e *Error) Append(b []byte) []byte {
	b = appendUvarint(b, uint64(e.Code))
	b = appendUvarint(b, e.Seq)
	msg := e.Msg
	if len(msg) > maxMsgLen {
		msg = msg[:maxMsgLen]
	}
	return appendString(b, msg)
}

// ParseError parses the body of a FrameError.
func ParseError(body []byte) (*Error, error) {
	d := &decoder{b: body}
	e := &Error{Code: ErrorCode(d.uint32("error code")), Seq: d.uvarint(), Msg: d.string("error message", maxMsgLen)}
	return e, d.end()
}

func (d *decoder) run() RunID {
	var r RunID
	if d.err != nil {
		return r
	}
	if len(d.b) < len(r) {
		d.fail(ErrTruncated)
		return r
	}
	copy(r[:], d.b)
	d.b = d.b[len(r):]
	return r
}
