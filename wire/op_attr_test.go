package wire

import (
	"math"
	"strings"
	"testing"
)

func attrOpCases() []opCase {
	name255 := "user." + strings.Repeat("x", MaxXattrNameLen-len("user."))
	return []opCase{
		{"setattr chmod", 40, &Setattr{Path: "f", Valid: SetMode, Mode: 0o4755, Mtime: tNow}},
		{"setattr root", 41, &Setattr{Path: "", Valid: SetUid | SetGid, Uid: 0, Gid: 0, Atime: tOmit, Mtime: tNow}},
		{"setattr by handle", 42, &Setattr{Handle: 5, Valid: SetSize, Size: 1 << 40, Atime: tOmit, Mtime: tNeg}},
		{"setattr max", math.MaxUint64, &Setattr{
			Handle: math.MaxUint64, Path: longPath(MaxPathLen), Valid: math.MaxUint32, Mode: math.MaxUint32,
			Uid: math.MaxUint32, Gid: math.MaxUint32, Size: math.MaxUint64, Atime: tMin, Mtime: tMax,
		}},
		{"setattr utimens", 43, &Setattr{Path: "a/b", Valid: SetAtime | SetMtime, Atime: tNeg, Mtime: tOmit}},
		{"setxattr", 44, &Setxattr{Path: "f", Name: "user.k", Value: []byte("v"), Flags: XattrCreate}},
		{"setxattr root", 45, &Setxattr{Path: "", Name: "trusted.x", Value: []byte{0, 1, 0}, Flags: XattrReplace}},
		{"setxattr empty value", 46, &Setxattr{Path: "f", Name: "user.empty", Value: nil}},
		{"setxattr max", math.MaxUint64, &Setxattr{Path: longPath(MaxPathLen), Name: name255, Value: pattern(MaxXattrValueLen), Flags: math.MaxUint32}},
		{"removexattr", 47, &Removexattr{Path: "f", Name: "user.k"}},
		{"removexattr root", 48, &Removexattr{Path: "", Name: "security.selinux"}},
		{"removexattr max", 49, &Removexattr{Path: longPath(MaxPathLen), Name: name255}},
	}
}

func TestAttrOpsRoundTrip(t *testing.T) {
	for _, tc := range attrOpCases() {
		t.Run(tc.name, func(t *testing.T) { checkOpRoundTrip(t, tc) })
	}
}

func TestAttrOpsMalformed(t *testing.T) {
	for _, p := range []string{"/abs", "../x", "a//b", "a/", "a\x00b", longPath(MaxPathLen + 1)} {
		for _, op := range []Op{&Setattr{Path: p}, &Setxattr{Path: p, Name: "user.a"}, &Removexattr{Path: p, Name: "user.a"}} {
			checkMalformed(t, brief(op), opBody(op), parseOpErr)
		}
	}
	for _, name := range []string{"", "user.a\x00b", strings.Repeat("n", MaxXattrNameLen+1)} {
		checkMalformed(t, "setxattr name "+brief(&Removexattr{Name: name}), opBody(&Setxattr{Path: "f", Name: name}), parseOpErr)
		checkMalformed(t, "removexattr name "+brief(&Removexattr{Name: name}), opBody(&Removexattr{Path: "f", Name: name}), parseOpErr)
	}
	checkMalformed(t, "xattr value of 64 KiB + 1",
		opBody(&Setxattr{Path: "f", Name: "user.a", Value: make([]byte, MaxXattrValueLen+1)}), parseOpErr)

	b := appendString(opStart(OpSetxattr), "f")
	b = appendString(b, "user.a")
	b = appendUvarint(b, 1<<40) // value length, and nothing behind it
	checkMalformed(t, "xattr value claiming 2^40 bytes", b, parseOpErr)
	if n := allocBytesPerRun(100, func() { _ = parseOpErr(b) }); n > 4<<10 {
		t.Errorf("xattr value claiming 2^40 bytes: %d bytes allocated per parse", n)
	}
}
