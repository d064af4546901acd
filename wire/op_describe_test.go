package wire

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// describeCase is an op and what it must say it names.
type describeCase struct {
	op    Op
	str   string
	paths []string
	via   uint64 // 0: acts through no handle
	opens uint64 // 0: opens no handle
}

func describeCases() []describeCase {
	return []describeCase{
		{op: &Create{Path: "a/b", Handle: 3}, str: `create "a/b"`, paths: []string{"a/b"}, opens: 3},
		{op: &Create{Path: "c"}, str: `create "c"`, paths: []string{"c"}},
		{op: &Mkdir{Path: "d"}, str: `mkdir "d"`, paths: []string{"d"}},
		{op: &Mknod{Path: "f", Mode: 0o10644}, str: `mknod "f"`, paths: []string{"f"}},
		{op: &Symlink{Path: "l", Target: "../t"}, str: `symlink "l"`, paths: []string{"l"}},
		{op: &Link{OldPath: "a", NewPath: "b"}, str: `link "a" -> "b"`, paths: []string{"a", "b"}},
		{op: &Unlink{Path: "u"}, str: `unlink "u"`, paths: []string{"u"}},
		{op: &Rmdir{Path: "r"}, str: `rmdir "r"`, paths: []string{"r"}},
		{op: &Rename{OldPath: "x", NewPath: "y/z"}, str: `rename "x" -> "y/z"`, paths: []string{"x", "y/z"}},
		{op: &Open{Path: "o", Handle: 7}, str: `open "o"`, paths: []string{"o"}, opens: 7},
		{op: &Release{Handle: 7}, str: "release handle 7", via: 7},
		{op: &Write{Handle: 8, Data: []byte("x")}, str: "write handle 8", via: 8},
		{op: &Setattr{Handle: 9, Path: "ignored"}, str: "setattr handle 9", via: 9},
		{op: &Setattr{Path: "s"}, str: `setattr "s"`, paths: []string{"s"}},
		{op: &Setxattr{Path: "p", Name: "user.a"}, str: `setxattr "p" "user.a"`, paths: []string{"p"}},
		{op: &Removexattr{Path: "q", Name: "user.b"}, str: `removexattr "q" "user.b"`, paths: []string{"q"}},
		{op: &Fallocate{Handle: 4}, str: "fallocate handle 4", via: 4},
		{op: &Sync{}, str: "sync"},
		{op: &RunStart{Run: RunID{1}}, str: "run-start"},
		{op: &CopyRange{SrcHandle: 2, Handle: 3}, str: "copy-range handle 2 -> handle 3", via: 3},
		{op: &CopyRange{SrcPath: "src", Handle: 3}, str: `copy-range "src" -> handle 3`, paths: []string{"src"}, via: 3},
		{op: &Unclean{}, str: "unclean-start"},
	}
}

// opTypes returns every op type the protocol defines.
func opTypes() []OpType {
	var ts []OpType
	for t := OpType(1); !strings.HasPrefix(t.String(), "op("); t++ {
		ts = append(ts, t)
	}
	return ts
}

// TestOpsDescribeThemselves checks what every op type says it names, and
// that no op type is left out: a new one fails here until it has its
// String (and Paths, ViaHandle, OpensHandle where they apply) and a case
// above.
func TestOpsDescribeThemselves(t *testing.T) {
	cases := describeCases()
	covered := make(map[OpType]bool)
	for _, tc := range cases {
		covered[tc.op.Type()] = true
		checkDescribe(t, tc)
	}
	for _, typ := range opTypes() {
		if !covered[typ] {
			t.Errorf("op type %v has no describe case", typ)
		}
	}
	// Every op of the round-trip fixtures, whatever its fields, has a String.
	for _, tc := range allOpCases() {
		if _, ok := tc.op.(fmt.Stringer); !ok {
			t.Errorf("%s: %T has no String method", tc.name, tc.op)
		}
	}
}

func checkDescribe(t *testing.T, tc describeCase) {
	t.Helper()
	s, ok := tc.op.(fmt.Stringer)
	if !ok {
		t.Errorf("%T has no String method", tc.op)
		return
	}
	if got := s.String(); got != tc.str {
		t.Errorf("%T.String() = %q, want %q", tc.op, got, tc.str)
	}
	var paths []string
	if p, ok := tc.op.(PathOp); ok {
		paths = p.Paths()
	}
	if !slices.Equal(paths, tc.paths) || (paths == nil) != (tc.paths == nil) {
		t.Errorf("%s: paths %q, want %q", tc.str, paths, tc.paths)
	}
	if got := handleVia(tc.op); got != tc.via {
		t.Errorf("%s: acts through handle %d, want %d", tc.str, got, tc.via)
	}
	if got := handleOpened(tc.op); got != tc.opens {
		t.Errorf("%s: opens handle %d, want %d", tc.str, got, tc.opens)
	}
}

// handleVia returns ViaHandle's handle, 0 for none.
func handleVia(op Op) uint64 {
	if h, ok := op.(HandleOp); ok {
		if v, ok := h.ViaHandle(); ok {
			return v
		}
	}
	return 0
}

// handleOpened returns OpensHandle's handle, 0 for none.
func handleOpened(op Op) uint64 {
	if h, ok := op.(OpenerOp); ok {
		if v, ok := h.OpensHandle(); ok {
			return v
		}
	}
	return 0
}

// An op of every type without a handle says so, rather than naming
// handle 0.
func TestNoHandleIsNotHandleZero(t *testing.T) {
	for _, op := range []Op{&Release{}, &Write{}, &Fallocate{}, &CopyRange{SrcPath: "s"}, &Setattr{Path: "p"}} {
		if h, ok := op.(HandleOp).ViaHandle(); ok {
			t.Errorf("%v: ViaHandle() = %d, true; want false for handle 0", op, h)
		}
	}
	for _, op := range []Op{&Create{Path: "c"}, &Open{Path: "o"}} {
		if h, ok := op.(OpenerOp).OpensHandle(); ok {
			t.Errorf("%v: OpensHandle() = %d, true; want false for handle 0", op, h)
		}
	}
}
