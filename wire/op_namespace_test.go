package wire

import (
	"math"
	"strings"
	"testing"
)

func namespaceOpCases() []opCase {
	name255 := strings.Repeat("n", MaxNameLen)
	return []opCase{
		{"mkdir", 10, &Mkdir{Path: "d", Mode: 0o755, Uid: 0, Gid: 0, Mtime: tNow, DirMtime: tNow}},
		{"mkdir max", math.MaxUint64, &Mkdir{Path: longPath(MaxPathLen), Mode: 0o1777, Uid: math.MaxUint32, Gid: math.MaxUint32, Mtime: tMin, DirMtime: tMax}},
		{"mkdir omit", 11, &Mkdir{Path: name255, Mode: 0o700, Mtime: tOmit, DirMtime: tNeg}},
		{"mknod fifo", 12, &Mknod{Path: "p/fifo", Mode: 0o10644, Uid: 5, Gid: 6, Mtime: tNow, DirMtime: tNow}},
		{"mknod max", 13, &Mknod{Path: longPath(MaxPathLen), Mode: math.MaxUint32, Rdev: math.MaxUint64, Uid: math.MaxUint32, Gid: math.MaxUint32, Mtime: tMax, DirMtime: tMin}},
		{"mknod omit", 14, &Mknod{Path: "s", Mode: 0o140755, Mtime: tOmit, DirMtime: tOmit}},
		{"symlink", 15, &Symlink{Path: "l", Target: "../outside/../../etc/passwd", Uid: 1, Gid: 2, Mtime: tNow, DirMtime: tNow}},
		// The target is opaque: absolute, dotted, with empty components and up to MaxPathLen.
		{"symlink max", 16, &Symlink{Path: longPath(MaxPathLen), Target: "/" + strings.Repeat("x/", MaxPathLen/2-1) + "/", Uid: math.MaxUint32, Gid: math.MaxUint32, Mtime: tMin, DirMtime: tMax}},
		{"symlink empty target", 17, &Symlink{Path: "l2", Target: "", Mtime: tOmit, DirMtime: tNeg}},
		{"link", 18, &Link{OldPath: "a/f", NewPath: "b/g", DirMtime: tNow}},
		{"link max", 19, &Link{OldPath: longPath(MaxPathLen), NewPath: longPath(MaxPathLen - 1), DirMtime: tMin}},
		{"link omit", 20, &Link{OldPath: "f", NewPath: name255, DirMtime: tOmit}},
		{"unlink", 21, &Unlink{Path: "a/f", DirMtime: tNow}},
		{"unlink max", 22, &Unlink{Path: longPath(MaxPathLen), DirMtime: tMax}},
		{"unlink omit", 0, &Unlink{Path: "f", DirMtime: tOmit}},
		{"rmdir", 23, &Rmdir{Path: "d", DirMtime: tNeg}},
		{"rmdir max", 24, &Rmdir{Path: longPath(MaxPathLen), DirMtime: tMin}},
		{"rename", 25, &Rename{OldPath: "a", NewPath: "b/c", Flags: 0, OldDirMtime: tNow, NewDirMtime: tNow}},
		{"rename noreplace", 26, &Rename{OldPath: "a", NewPath: "b", Flags: RenameNoReplace, OldDirMtime: tOmit, NewDirMtime: tNeg}},
		{"rename exchange max", math.MaxUint64, &Rename{OldPath: longPath(MaxPathLen), NewPath: longPath(MaxPathLen), Flags: math.MaxUint32, OldDirMtime: tMax, NewDirMtime: tMin}},
	}
}

func TestNamespaceOpsRoundTrip(t *testing.T) {
	for _, tc := range namespaceOpCases() {
		t.Run(tc.name, func(t *testing.T) { checkOpRoundTrip(t, tc) })
	}
}

func TestNamespaceOpsRefuseBadPaths(t *testing.T) {
	// None of these ops may name the root, and every path is validated
	// where it is decoded, so the replayer never sees one of these.
	for _, p := range []string{"", "/abs", "../up", "a/../b", "a/./b", "a//b", "a/", ".", "..", "a\x00b", longPath(MaxPathLen + 1)} {
		ops := []Op{
			&Mkdir{Path: p}, &Mknod{Path: p}, &Symlink{Path: p, Target: "t"},
			&Link{OldPath: p, NewPath: "n"}, &Link{OldPath: "o", NewPath: p},
			&Unlink{Path: p}, &Rmdir{Path: p},
			&Rename{OldPath: p, NewPath: "n"}, &Rename{OldPath: "o", NewPath: p},
		}
		for _, op := range ops {
			checkMalformed(t, brief(op), opBody(op), parseOpErr)
		}
	}
}

func TestSymlinkTargetBound(t *testing.T) {
	ok := &Symlink{Path: "l", Target: strings.Repeat("t", MaxPathLen), Mtime: tOmit, DirMtime: tOmit}
	checkOpRoundTrip(t, opCase{"target of MaxPathLen", 1, ok})
	long := &Symlink{Path: "l", Target: strings.Repeat("t", MaxPathLen+1), Mtime: tOmit, DirMtime: tOmit}
	checkMalformed(t, "target of MaxPathLen+1", opBody(long), parseOpErr)
}

func TestRenameFlagsOutOfRange(t *testing.T) {
	b := appendString(opStart(OpRename), "a")
	b = appendString(b, "b")
	b = appendUvarint(b, 1<<32)
	b = appendTime(b, tOmit)
	b = appendTime(b, tOmit)
	checkMalformed(t, "rename flags 2^32", b, parseOpErr)
}
