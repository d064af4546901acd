package wire

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

// controlCase is one control body with its parser, for the round-trip,
// truncation and fuzz checks.
type controlCase struct {
	name  string
	kind  FrameKind
	value any // the value Append was called on (dereferenced)
	body  []byte
}

var run = RunID{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0xff}

func controlCases() []controlCase {
	var cs []controlCase
	add := func(name string, kind FrameKind, v interface{ Append([]byte) []byte }) {
		cs = append(cs, controlCase{name, kind, reflect.ValueOf(v).Elem().Interface(), v.Append(nil)})
	}
	add("hello", FrameHello, &Hello{Version: Version, Run: run, Mode: ModeFsync, First: 1})
	add("hello zero", FrameHello, &Hello{})
	lineage := make([]Epoch, MaxLineage)
	for i := range lineage {
		lineage[i] = Epoch(run)
		lineage[i][0] = byte(i)
	}
	add("hello max", FrameHello, &Hello{Version: math.MaxUint32, Epoch: Epoch(run), Lineage: lineage, Run: run,
		Mode: ModeSync, First: math.MaxUint64, Head: math.MaxUint64})
	add("hello-ack", FrameHelloAck, &HelloAck{Epoch: Epoch(run), Run: run, Applied: 100, Durable: 90, MaxPending: 64 << 20})
	add("hello-ack fresh", FrameHelloAck, &HelloAck{})
	add("hello-ack max", FrameHelloAck, &HelloAck{Epoch: Epoch(run), Run: run, Applied: math.MaxUint64, Durable: math.MaxUint64,
		MaxPending: math.MaxUint64, Resyncing: true})
	add("hello lanes", FrameHello, &Hello{Version: Version, Run: run, Mode: ModeAsync, First: 1, Head: 9, Lanes: 4})
	add("hello max lanes", FrameHello, &Hello{Version: Version, Lanes: MaxLanes})
	add("hello-ack lanes", FrameHelloAck, &HelloAck{Epoch: Epoch(run), Run: run, Applied: 3, Durable: 2, MaxPending: 1 << 30,
		Lanes: 4, LaneToken: LaneToken(run)})
	add("hello-ack max lanes", FrameHelloAck, &HelloAck{Resyncing: true, Lanes: MaxLanes, LaneToken: LaneToken(run)})
	add("hello-ack policy", FrameHelloAck, &HelloAck{Policy: Policy{Flags: PolicySetid | PolicyDevices, MaxFileSize: 16 << 40}})
	add("hello-ack permissive", FrameHelloAck, &HelloAck{Policy: PermissivePolicy})
	add("lane-hello", FrameLaneHello, &LaneHello{Version: Version, Token: LaneToken(run), Lane: 1})
	add("lane-hello max", FrameLaneHello, &LaneHello{Version: math.MaxUint32, Token: LaneToken(run), Lane: MaxLanes - 1})
	add("ack", FrameAck, &Ack{Applied: 7, Durable: 3})
	add("ack zero", FrameAck, &Ack{})
	add("ack max", FrameAck, &Ack{Applied: math.MaxUint64, Durable: math.MaxUint64, Items: math.MaxUint64})
	add("ack items", FrameAck, &Ack{Applied: 7, Durable: 7, Items: 300})
	add("ack items only", FrameAck, &Ack{Items: 1})
	add("error", FrameError, &Error{Code: CodeApply, Seq: 12, Msg: "apply rename \"a\": file exists"})
	add("error empty", FrameError, &Error{})
	add("error max", FrameError, &Error{Code: math.MaxUint32, Seq: math.MaxUint64, Msg: strings.Repeat("m", maxMsgLen)})
	add("stall", FrameStall, &Stall{Seq: 12, Msg: "disk full: apply write handle 3: no space left on device"})
	add("stall empty", FrameStall, &Stall{})
	add("stall max", FrameStall, &Stall{Seq: math.MaxUint64, Item: math.MaxUint64, Msg: strings.Repeat("s", maxMsgLen)})
	add("stall item", FrameStall, &Stall{Seq: 40, Item: 3, Msg: "disk full: resync data file 2 at 0"})
	return cs
}

// parseControl parses body as kind and returns the value (dereferenced).
func parseControl(kind FrameKind, body []byte) (any, error) {
	switch kind {
	case FrameHello:
		return ParseHello(body)
	case FrameHelloAck:
		return ParseHelloAck(body)
	case FrameAck:
		return ParseAck(body)
	case FrameLaneHello:
		return ParseLaneHello(body)
	case FrameStall:
		return ParseStall(body)
	case FrameError:
		e, err := ParseError(body)
		if e == nil {
			return nil, err
		}
		return *e, err
	}
	return nil, errors.New("not a control frame")
}

// appendControl encodes a value parseControl returned.
func appendControl(v any) []byte {
	switch v := v.(type) {
	case Hello:
		return v.Append(nil)
	case HelloAck:
		return v.Append(nil)
	case Ack:
		return v.Append(nil)
	case LaneHello:
		return v.Append(nil)
	case Error:
		return v.Append(nil)
	case Stall:
		return v.Append(nil)
	}
	return nil
}

func TestControlRoundTrip(t *testing.T) {
	for _, tc := range controlCases() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseControl(tc.kind, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.value) {
				t.Errorf("got %+v, want %+v", got, tc.value)
			}
			if again := appendControl(got); !bytes.Equal(again, tc.body) {
				t.Errorf("re-encoding gives % x, want % x", again, tc.body)
			}
		})
	}
}

func TestControlTruncated(t *testing.T) {
	for _, tc := range controlCases() {
		t.Run(tc.name, func(t *testing.T) {
			// A Hello cut right before its optional lanes field is a
			// Hello without lanes: the frame length, not the body,
			// tells the two apart.
			var short int
			if h, ok := tc.value.(Hello); ok && h.Lanes > 1 {
				h.Lanes = 0
				short = len(h.Append(nil))
			}
			checkTruncated(t, tc.body, func(b []byte) error {
				_, err := parseControl(tc.kind, b)
				if err == nil && short > 0 && len(b) == short {
					return ErrTruncated
				}
				return err
			})
		})
	}
}

func TestControlMalformed(t *testing.T) {
	for _, tc := range controlCases() {
		checkMalformed(t, tc.name+" + 1 byte", append(tc.body, 0), func(b []byte) error { _, err := parseControl(tc.kind, b); return err })
	}
	hello := func(b []byte) error { _, err := ParseHello(b); return err }
	ack := func(b []byte) error { _, err := ParseAck(b); return err }
	perr := func(b []byte) error { _, err := ParseError(b); return err }

	// version, epoch, no lineage, run; then mode, first, head.
	b := appendUvarint(nil, Version)
	b = append(b, run[:]...)
	b = append(b, 0)
	b = append(b, run[:]...)
	checkMalformed(t, "hello with sync mode 3", append(append(b, 3), 0, 0), hello)
	v32 := append(append(append(appendUvarint(nil, 1<<32), run[:]...), 0), run[:]...)
	checkMalformed(t, "hello with version 2^32", append(v32, 0, 0, 0), hello)
	checkMalformed(t, "hello with non-minimal first", append(append(b, 0), 0x80, 0x00, 0), hello)
	long := append(appendUvarint(nil, Version), run[:]...)
	checkMalformed(t, "hello with a lineage of 17", appendUvarint(long, MaxLineage+1), hello)
	checkMalformed(t, "hello with a lineage of 2^40", appendUvarint(long, 1<<40), hello)
	helloAck := func(b []byte) error { _, err := ParseHelloAck(b); return err }
	checkMalformed(t, "hello-ack with durable > applied", (&HelloAck{Applied: 1, Durable: 2}).Append(nil), helloAck)
	ha := (&HelloAck{}).Append(nil)
	ha[len(ha)-1] = 4
	checkMalformed(t, "hello-ack with unknown flag 4", ha, helloAck)
	pol := append(appendUvarint(append(append(make([]byte, 0, 64), run[:]...), run[:]...), 0), 0, 0)
	checkMalformed(t, "hello-ack with unknown policy flag 8", append(appendUvarint(append(pol, 8), 0), 0), helloAck)
	for _, n := range []uint64{0, 1, MaxLanes + 1, 1 << 40} {
		ha = (&HelloAck{}).Append(nil)
		ha[len(ha)-1] = ackFlagLanes
		ha = append(appendUvarint(ha, n), run[:]...)
		checkMalformed(t, fmt.Sprintf("hello-ack granting %d lanes", n), ha, helloAck)
		h := (&Hello{Version: Version}).Append(nil)
		checkMalformed(t, fmt.Sprintf("hello asking for %d lanes", n), appendUvarint(h, n), hello)
	}
	laneHello := func(b []byte) error { _, err := ParseLaneHello(b); return err }
	for _, n := range []uint64{0, MaxLanes, 1 << 40} {
		lh := append(appendUvarint(nil, Version), run[:]...)
		checkMalformed(t, fmt.Sprintf("lane-hello for lane %d", n), appendUvarint(lh, n), laneHello)
	}

	checkMalformed(t, "ack with durable > applied", (&Ack{Applied: 1, Durable: 2}).Append(nil), ack)
	checkMalformed(t, "ack with durable > applied (max)", (&Ack{Applied: 0, Durable: math.MaxUint64}).Append(nil), ack)

	long = appendUvarint(appendUvarint(nil, uint64(CodeProtocol)), 0)
	checkMalformed(t, "error message of 4097 bytes", appendString(long, strings.Repeat("m", maxMsgLen+1)), perr)
	checkMalformed(t, "error message claiming 2^40 bytes", appendUvarint(long, 1<<40), perr)
	checkMalformed(t, "error code 2^32", appendString(appendUvarint(appendUvarint(nil, 1<<32), 0), ""), perr)
}

func TestErrorMessageCut(t *testing.T) {
	e := &Error{Code: CodeLimit, Msg: strings.Repeat("x", 3*maxMsgLen)}
	got, err := ParseError(e.Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Msg) != maxMsgLen || got.Code != CodeLimit {
		t.Errorf("got code %v, message of %d bytes; want %v, %d", got.Code, len(got.Msg), CodeLimit, maxMsgLen)
	}
}

func TestErrorIsAnError(t *testing.T) {
	var err error = &Error{Code: CodeApply, Seq: 5, Msg: "boom"}
	if s := err.Error(); !strings.Contains(s, "apply failed") || !strings.Contains(s, "seq 5") || !strings.Contains(s, "boom") {
		t.Errorf("Error() = %q", s)
	}
	if s := (&Error{Code: CodeShutdown, Msg: "bye"}).Error(); strings.Contains(s, "seq") {
		t.Errorf("Error() = %q mentions a seq of 0", s)
	}
	var target *Error
	if !errors.As(fmtWrap(err), &target) || target.Seq != 5 {
		t.Errorf("errors.As through a wrap failed")
	}
}

func fmtWrap(err error) error { return errors.Join(errors.New("context"), err) }

func TestControlStrings(t *testing.T) {
	for c := CodeOK; c <= CodeLimit; c++ {
		if strings.HasPrefix(c.String(), "code(") {
			t.Errorf("error code %d has no name", c)
		}
	}
	for m := ModeAsync; m <= ModeSync; m++ {
		if strings.HasPrefix(m.String(), "mode(") {
			t.Errorf("sync mode %d has no name", m)
		}
	}
	if ErrorCode(77).String() != "code(77)" || SyncMode(9).String() != "mode(9)" {
		t.Errorf("unknown values are not shown by number")
	}
}

func TestPolicyMeet(t *testing.T) {
	a := Policy{Flags: PolicySetid | PolicyPrivXattrs, MaxFileSize: 100}
	b := Policy{Flags: PolicyDevices | PolicyPrivXattrs, MaxFileSize: 50}
	m := a.Meet(b)
	if m.Flags != PolicyPrivXattrs || m.MaxFileSize != 50 {
		t.Fatalf("meet = %+v", m)
	}
	if PermissivePolicy.Meet(a) != a {
		t.Fatalf("permissive meet a = %+v, want %+v", PermissivePolicy.Meet(a), a)
	}
	if !a.Allows(PolicySetid) || a.Allows(PolicySetid|PolicyDevices) || !a.Allows(0) {
		t.Fatal("Allows")
	}
	if s := m.String(); s != "no-setid,no-devices,trusted-xattrs max-file-size=50" {
		t.Fatalf("String = %q", s)
	}
}
