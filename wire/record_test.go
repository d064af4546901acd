package wire

import (
	"errors"
	"strings"
	"testing"
)

// The sample ops must cover the whole vocabulary, or the truncation and
// fuzz checks below silently skip an op.
func TestOpCasesCoverEveryOpType(t *testing.T) {
	seen := map[OpType]bool{}
	for _, tc := range allOpCases() {
		seen[tc.op.Type()] = true
	}
	for typ := OpCreate; typ <= OpUnclean; typ++ {
		if !seen[typ] {
			t.Errorf("no sample op of type %v", typ)
		}
		if strings.HasPrefix(typ.String(), "op(") {
			t.Errorf("op type %d has no name", typ)
		}
	}
	if len(seen) != 19 {
		t.Errorf("sample ops cover %d op types, want 19", len(seen))
	}
	if got := OpType(99).String(); got != "op(99)" {
		t.Errorf("OpType(99).String() = %q", got)
	}
}

// The op type numbers are the protocol: pin them so a renumbering fails here.
func TestOpTypeNumbersArePinned(t *testing.T) {
	want := map[OpType]uint8{
		OpCreate: 1, OpMkdir: 2, OpMknod: 3, OpSymlink: 4, OpLink: 5, OpUnlink: 6, OpRmdir: 7, OpRename: 8,
		OpOpen: 9, OpRelease: 10, OpWrite: 11, OpSetattr: 12, OpSetxattr: 13, OpRemovexattr: 14, OpFallocate: 15, OpSync: 16, OpRunStart: 17,
		OpCopyRange: 18, OpUnclean: 19,
	}
	for typ, n := range want {
		if uint8(typ) != n {
			t.Errorf("%v = %d, want %d", typ, uint8(typ), n)
		}
	}
	// And the wire layout of one op, byte for byte.
	got := AppendOp(nil, 300, &Unlink{Path: "ab", DirMtime: Time{Sec: -2, Nsec: 5}})
	wantBytes := []byte{0xac, 0x02, 6, 2, 'a', 'b', 1, 3, 5}
	if string(got) != string(wantBytes) {
		t.Errorf("AppendOp(300, unlink) = % x, want % x", got, wantBytes)
	}
}

func TestParseOpTruncated(t *testing.T) {
	for _, tc := range allOpCases() {
		t.Run(tc.name, func(t *testing.T) {
			checkTruncated(t, AppendOp(nil, tc.seq, tc.op), parseOpErr)
		})
	}
}

func TestParseOpTrailingBytes(t *testing.T) {
	for _, tc := range allOpCases() {
		body := AppendOp(nil, tc.seq, tc.op)
		checkMalformed(t, tc.name+" + 1 byte", append(body, 0), parseOpErr)
		checkMalformed(t, tc.name+" + 2 bytes", append(body, 0x80, 0), parseOpErr)
	}
}

func TestParseOpUnknownType(t *testing.T) {
	for _, typ := range []byte{0, 20, 100, 255} {
		err := parseOpErr([]byte{1, typ})
		checkMalformed(t, "op type "+OpType(typ).String(), []byte{1, typ}, parseOpErr)
		if err != nil && !strings.Contains(err.Error(), "unknown op type") {
			t.Errorf("op type %d: error %q does not say what is wrong", typ, err)
		}
	}
}

func TestParseOpErrorNamesTheOp(t *testing.T) {
	_, _, err := ParseOp(opBody(&Rename{OldPath: "../x", NewPath: "y"}))
	if err == nil || !strings.Contains(err.Error(), "rename") || !strings.Contains(err.Error(), "old path") {
		t.Errorf("err = %v, want it to name the op and the field", err)
	}
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("err = %v, want ErrMalformed", err)
	}
}
