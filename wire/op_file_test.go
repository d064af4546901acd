package wire

import (
	"math"
	"testing"
)

func fileOpCases() []opCase {
	return []opCase{
		{"create", 1, &Create{Path: "dir/file.txt", Handle: 7, Flags: 0o1101, Mode: 0o644, Uid: 1000, Gid: 1000, Mtime: tNow, DirMtime: tNow}},
		{"create max", math.MaxUint64, &Create{
			Path: longPath(MaxPathLen), Handle: math.MaxUint64, Flags: math.MaxUint32, Mode: 0o7777,
			Uid: math.MaxUint32, Gid: math.MaxUint32, Mtime: tMax, DirMtime: tMin,
		}},
		{"create no handle, omitted times", 0, &Create{Path: "x", Mtime: tOmit, DirMtime: tOmit}},
		{"create negative time", 2, &Create{Path: "a/b/c", Handle: 1 << 40, Mode: 0o4755, Mtime: tNeg, DirMtime: tMax}},
		{"open", 3, &Open{Path: "f", Handle: 1, Flags: 0o1001, Mtime: tNow}},
		{"open max", 1 << 63, &Open{Path: longPath(MaxPathLen), Handle: math.MaxUint64, Flags: math.MaxUint32, Mtime: tMin}},
		{"open omit", 4, &Open{Path: "name with spaces and \xff bytes", Handle: 2, Mtime: tOmit}},
		{"release", 5, &Release{Handle: 9}},
		{"release zero", 0, &Release{}},
		{"release max", math.MaxUint64, &Release{Handle: math.MaxUint64}},
	}
}

func TestFileOpsRoundTrip(t *testing.T) {
	for _, tc := range fileOpCases() {
		t.Run(tc.name, func(t *testing.T) { checkOpRoundTrip(t, tc) })
	}
}

func TestFileOpsMalformed(t *testing.T) {
	// Create and Open name an existing or new file, never the root.
	checkMalformed(t, "create of the root", opBody(&Create{Path: "", Mtime: tNow, DirMtime: tNow}), parseOpErr)
	checkMalformed(t, "open of the root", opBody(&Open{Path: "", Mtime: tNow}), parseOpErr)
	checkMalformed(t, "create absolute", opBody(&Create{Path: "/etc/passwd"}), parseOpErr)
	checkMalformed(t, "open escaping", opBody(&Open{Path: "../etc/passwd"}), parseOpErr)

	// A uint32 field carrying 2^32.
	b := appendString(opStart(OpCreate), "f")
	b = appendUvarint(b, 1)                // handle
	b = appendUvarint(b, math.MaxUint32+1) // flags
	b = appendUvarint(b, 0o644)
	b = appendUvarint(b, 0)
	b = appendUvarint(b, 0)
	b = appendTime(b, tNow)
	b = appendTime(b, tNow)
	checkMalformed(t, "create flags of 2^32", b, parseOpErr)

	// Release has a single field; anything after it is garbage.
	checkMalformed(t, "release with trailing byte", append(opBody(&Release{Handle: 1}), 0), parseOpErr)
}
