package wire

import (
	"fmt"
)

// Version is the protocol version. ALPN carries it too ("tdfs/3"), so peers
// speaking different versions fail the TLS handshake with a clear error.
const Version = 3

// RunID names one run of a master: a random value minted each time
// tdfs-master starts. A run's first op is a RunStart naming it.
type RunID [16]byte

// Epoch is a master's generation id: minted when tdfs-master first starts
// on a backing dir (an empty --journal), so also when a slave is promoted.
// Sequence numbers count within an epoch, across restarts of its master.
type Epoch [16]byte

// MaxLineage bounds the ancestors a Hello carries.
const MaxLineage = 16

// SyncMode is the master's --sync mode, announced in Hello so the slave
// knows how eagerly to make ops durable.
type SyncMode uint8

// Sync modes (docs/design.md, Durability modes).
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
	Epoch   Epoch
	// Lineage lists the epochs this one succeeded by promotion, newest
	// first (at most MaxLineage): a slave that followed one of them may
	// follow this master; a master whose epoch a slave finds in its own
	// lineage is an old one, and is refused (fencing).
	Lineage []Epoch
	Run     RunID
	Mode    SyncMode
	// First is the lowest seq the master can still send; Head the last
	// seq it numbered when it sent the Hello.
	First uint64
	Head  uint64
	// Lanes is how many QUIC connections the master would like to use for
	// this session, the primary one included (its --lanes, at most
	// MaxLanes); 0 or 1: the primary only. It is an optional trailing
	// field, present only when above 1, so a master with one lane sends
	// the very bytes an older slave expects, and an older slave refuses a
	// master asking for lanes with a clear "malformed hello" instead of
	// misreading it.
	Lanes uint32
}

// MaxLanes bounds the connections of one session (Hello.Lanes,
// HelloAck.Lanes): the primary one and up to MaxLanes-1 lanes.
const MaxLanes = 16

// LaneTokenLen is the length of the token that binds a lane to its session.
const LaneTokenLen = 16

// LaneToken is the random per-session secret a slave gives the master in
// its HelloAck; a lane connection presents it in its LaneHello.
type LaneToken [LaneTokenLen]byte

// Append encodes: version, epoch, lineage (count + epochs), run, mode,
// first, head, and lanes only when above 1.
func (h *Hello) Append(b []byte) []byte {
	b = appendUvarint(b, uint64(h.Version))
	b = append(b, h.Epoch[:]...)
	b = appendUvarint(b, uint64(len(h.Lineage)))
	for _, e := range h.Lineage {
		b = append(b, e[:]...)
	}
	b = append(b, h.Run[:]...)
	b = append(b, byte(h.Mode))
	b = appendUvarint(b, h.First)
	b = appendUvarint(b, h.Head)
	if h.Lanes > 1 {
		b = appendUvarint(b, uint64(h.Lanes))
	}
	return b
}

// ParseHello parses the body of a FrameHello.
func ParseHello(body []byte) (Hello, error) {
	d := &decoder{b: body}
	var h Hello
	h.Version = d.uint32("version")
	h.Epoch = Epoch(d.run())
	n := d.uvarint()
	if d.err == nil && n > MaxLineage {
		d.fail(fmt.Errorf("%w: %d epochs in the lineage, at most %d", ErrMalformed, n, MaxLineage))
	}
	for i := uint64(0); d.err == nil && i < n; i++ {
		h.Lineage = append(h.Lineage, Epoch(d.run()))
	}
	h.Run = d.run()
	h.Mode = SyncMode(d.byte())
	h.First = d.uvarint()
	h.Head = d.uvarint()
	if d.err == nil && h.Mode > ModeSync {
		d.fail(fmt.Errorf("%w: unknown sync mode %d", ErrMalformed, h.Mode))
	}
	if d.err == nil && len(d.b) > 0 {
		// The optional lanes field: present only when above 1, so that
		// every Hello has one encoding.
		n := d.uvarint()
		if d.err == nil && (n < 2 || n > MaxLanes) {
			d.fail(fmt.Errorf("%w: hello asks for %d lanes, want 2 to %d (or the field left out)", ErrMalformed, n, MaxLanes))
		}
		h.Lanes = uint32(n)
	}
	return h, d.end()
}

// HelloAck is the slave's answer to Hello: where it stands.
type HelloAck struct {
	// Epoch is the master epoch the slave follows (after this Hello: it
	// adopts a successor's), zero if none.
	Epoch Epoch
	// Run is the run of the last RunStart op the slave applied: with
	// Applied it tells the master whether the slave holds ops the master
	// lost in a crash.
	Run     RunID
	Applied uint64
	Durable uint64
	// MaxPending is how many bytes of ops the slave will buffer ahead of
	// what it has applied; the master keeps its in-flight bytes below it.
	MaxPending uint64
	// Resyncing says the slave's tree is of unknown state (new, a resync
	// interrupted, a crash of its host): it needs a resync pass.
	Resyncing bool
	// Lanes is how many connections the slave accepts for this session,
	// the primary one included (2..MaxLanes, at most the Hello's Lanes),
	// and LaneToken the secret each lane presents in its LaneHello. A
	// slave grants lanes only to a Hello that asks for them, so an older
	// master never sees the field (flag bit 1); 0: no lanes.
	Lanes     uint32
	LaneToken LaneToken
	// Policy is what the slave holds beyond ordinary entries: the
	// master's mount refuses what the strictest of its slaves would.
	Policy Policy
}

const (
	ackFlagResyncing = 1 << 0
	ackFlagLanes     = 1 << 1 // lanes and lane token follow the flags
)

// Append encodes: epoch, run, applied, durable, max pending, policy, flags
// byte (bit 0: resyncing, bit 1: lanes granted), then with bit 1 set:
// lanes, lane token.
func (h *HelloAck) Append(b []byte) []byte {
	b = append(b, h.Epoch[:]...)
	b = append(b, h.Run[:]...)
	b = appendUvarint(b, h.Applied)
	b = appendUvarint(b, h.Durable)
	b = appendUvarint(b, h.MaxPending)
	b = appendPolicy(b, &h.Policy)
	var flags byte
	if h.Resyncing {
		flags |= ackFlagResyncing
	}
	if h.Lanes > 1 {
		flags |= ackFlagLanes
	}
	b = append(b, flags)
	if h.Lanes > 1 {
		b = appendUvarint(b, uint64(h.Lanes))
		b = append(b, h.LaneToken[:]...)
	}
	return b
}

// ParseHelloAck parses the body of a FrameHelloAck.
func ParseHelloAck(body []byte) (HelloAck, error) {
	d := &decoder{b: body}
	var h HelloAck
	h.Epoch = Epoch(d.run())
	h.Run = d.run()
	h.Applied = d.uvarint()
	h.Durable = d.uvarint()
	h.MaxPending = d.uvarint()
	h.Policy = d.policy()
	flags := d.byte()
	h.Resyncing = flags&ackFlagResyncing != 0
	if d.err == nil && flags&^(ackFlagResyncing|ackFlagLanes) != 0 {
		d.fail(fmt.Errorf("%w: hello-ack flags %#x", ErrMalformed, flags))
	}
	if d.err == nil && flags&ackFlagLanes != 0 {
		n := d.uvarint()
		if d.err == nil && (n < 2 || n > MaxLanes) {
			d.fail(fmt.Errorf("%w: hello-ack grants %d lanes, want 2 to %d", ErrMalformed, n, MaxLanes))
		}
		h.Lanes = uint32(n)
		h.LaneToken = LaneToken(d.run())
	}
	if d.err == nil && h.Durable > h.Applied {
		d.fail(fmt.Errorf("%w: durable %d beyond applied %d", ErrMalformed, h.Durable, h.Applied))
	}
	return h, d.end()
}

// LaneHello is the first frame on the bidirectional stream a master opens
// on a lane: an extra QUIC connection of a session, which carries only
// data streams. The slave binds it to the session whose HelloAck gave
// Token, if its certificate is the one of that session's connection; it
// answers an empty FrameLaneAck, or FrameError with CodeLane.
type LaneHello struct {
	Version uint32
	Token   LaneToken
	// Lane numbers the lane within its session: 1 to HelloAck.Lanes-1
	// (the primary connection is lane 0).
	Lane uint32
}

// Append encodes: version, token, lane.
func (l *LaneHello) Append(b []byte) []byte {
	b = appendUvarint(b, uint64(l.Version))
	b = append(b, l.Token[:]...)
	return appendUvarint(b, uint64(l.Lane))
}

// ParseLaneHello parses the body of a FrameLaneHello.
func ParseLaneHello(body []byte) (LaneHello, error) {
	d := &decoder{b: body}
	var l LaneHello
	l.Version = d.uint32("version")
	l.Token = LaneToken(d.run())
	n := d.uvarint()
	if d.err == nil && (n < 1 || n >= MaxLanes) {
		d.fail(fmt.Errorf("%w: lane %d, want 1 to %d", ErrMalformed, n, MaxLanes-1))
	}
	l.Lane = uint32(n)
	return l, d.end()
}

// Ack reports the highest seq the slave applied and the highest it made
// durable (Durable <= Applied), and how many resync items it has applied.
type Ack struct {
	Applied uint64
	Durable uint64
	// Items counts the resync items (FrameResync) the slave has applied
	// on this connection, cumulatively: items carry no number of their
	// own, so this count is how the master learns which of the items it
	// sent the slave has done.
	Items uint64
}

// Append encodes: applied, durable, items.
func (a *Ack) Append(b []byte) []byte {
	b = appendUvarint(b, a.Applied)
	b = appendUvarint(b, a.Durable)
	return appendUvarint(b, a.Items)
}

// ParseAck parses the body of a FrameAck.
func ParseAck(body []byte) (Ack, error) {
	d := &decoder{b: body}
	a := Ack{Applied: d.uvarint(), Durable: d.uvarint(), Items: d.uvarint()}
	if d.err == nil && a.Durable > a.Applied {
		d.fail(fmt.Errorf("%w: durable %d beyond applied %d", ErrMalformed, a.Durable, a.Applied))
	}
	return a, d.end()
}

// Stall tells the master that the slave cannot apply op Seq for want of a
// resource (its disk full, its filesystem read-only or failing): it keeps
// that op and every op received after it, retries with backoff, and
// acknowledges again once it applied it. The connection stays up, so
// nothing is sent twice. Msg says why, the cause first ("disk full: ...").
// A slave sends one when a stall begins and when its reason changes. A
// stall on a resync item (its data) has Item set: the item's number on
// this connection (Ack.Items counts the items applied, so an ack with
// Items >= Item says it is over); Seq is then the op it is positioned
// after.
type Stall struct {
	Seq  uint64
	Item uint64
	Msg  string
}

// Append encodes: seq, item, message (cut to 4096 bytes).
func (s *Stall) Append(b []byte) []byte {
	b = appendUvarint(b, s.Seq)
	b = appendUvarint(b, s.Item)
	return appendMsg(b, s.Msg)
}

// appendMsg appends a message cut to maxMsgLen bytes.
func appendMsg(b []byte, msg string) []byte {
	if len(msg) > maxMsgLen {
		msg = msg[:maxMsgLen]
	}
	return appendString(b, msg)
}

// ParseStall parses the body of a FrameStall.
func ParseStall(body []byte) (Stall, error) {
	d := &decoder{b: body}
	s := Stall{Seq: d.uvarint(), Item: d.uvarint(), Msg: d.string("stall message", maxMsgLen)}
	return s, d.end()
}

// ErrorCode says why a peer gives up on a connection.
type ErrorCode uint32

// Error codes carried in FrameError (and as QUIC application error codes).
const (
	CodeOK          ErrorCode = 0 // clean close
	CodeProtocol    ErrorCode = 1 // malformed frame or unexpected frame kind
	CodeApply       ErrorCode = 2 // the slave could not apply op Seq
	CodeNeedsResync ErrorCode = 3 // the master cannot send what the slave is missing
	CodeRefused     ErrorCode = 4 // not authorized: an op or resync item the slave refuses (device, set-id bit, xattr namespace, size, path)
	CodeShutdown    ErrorCode = 5 // the peer is shutting down
	CodeLimit       ErrorCode = 6 // a resource bound was exceeded
	CodeFenced      ErrorCode = 7 // the slave follows another master, or a newer epoch of this one
	CodeLane        ErrorCode = 8 // a lane connection was refused (unknown token, another certificate, too many) or lost
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
	case CodeFenced:
		return "fenced"
	case CodeLane:
		return "lane refused or lost"
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
	return appendMsg(b, e.Msg)
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
