package replayer

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// reapplyCase is an op that a dying slave may have applied in part.
type reapplyCase struct {
	name   string
	prefix []wire.Op // applied before, on every tree
	op     wire.Op
	// partial does, by hand, some first steps of op (what a process
	// killed in the middle of applying it leaves); nil: none.
	partial func(b treeBuilder)
	after   []wire.Op // applied after op, on every tree (e.g. writes through its handle)
}

var (
	tA = wire.Time{Sec: 1_100_000_000, Nsec: 111}
	tB = wire.Time{Sec: 1_200_000_000, Nsec: 222}
	tC = wire.Time{Sec: 1_300_000_000, Nsec: 333}
)

func reapplyCases() []reapplyCase {
	mkdirD := &wire.Mkdir{Path: "d", Mode: 0o755, Mtime: tA, DirMtime: tA}
	fileF := func(h uint64) []wire.Op {
		return []wire.Op{
			mkdirD,
			&wire.Create{Path: "d/f", Handle: h, Flags: wire.OpenExcl, Mode: 0o644, Mtime: tA, DirMtime: tA},
			&wire.Write{Handle: h, Data: []byte("old contents"), Mtime: tA},
			&wire.Release{Handle: h},
		}
	}
	return []reapplyCase{
		{
			name:   "create excl",
			prefix: []wire.Op{mkdirD},
			op:     &wire.Create{Path: "d/f", Handle: 1, Flags: wire.OpenExcl, Mode: 0o4640, Uid: 1, Gid: 2, Mtime: tB, DirMtime: tC},
			// The file exists, its attributes are not set yet.
			partial: func(b treeBuilder) { b.file("d/f", nil, 0o600) },
			after:   []wire.Op{&wire.Write{Handle: 1, Off: 3, Data: []byte("w"), Mtime: tC}},
		},
		{
			name:    "create trunc over contents",
			prefix:  fileF(9),
			op:      &wire.Create{Path: "d/f", Handle: 2, Flags: wire.OpenTrunc, Mode: 0o644, Mtime: tB, DirMtime: tC},
			partial: func(b treeBuilder) { b.must("truncate", os.Truncate(b.abs("d/f"), 0)) },
			after:   []wire.Op{&wire.Write{Handle: 2, Data: []byte("new"), Mtime: tC}},
		},
		{
			name:    "mkdir",
			op:      &wire.Mkdir{Path: "m", Mode: 0o1750, Uid: 3, Gid: 4, Mtime: tB, DirMtime: tC},
			partial: func(b treeBuilder) { b.dir("m", 0o700) },
		},
		{
			name:    "mknod fifo",
			op:      &wire.Mknod{Path: "p", Mode: unix.S_IFIFO | 0o640, Uid: 5, Gid: 6, Mtime: tB, DirMtime: tC},
			partial: func(b treeBuilder) { b.mknod("p", unix.S_IFIFO|0o600) },
		},
		{
			name:    "symlink",
			op:      &wire.Symlink{Path: "l", Target: "../somewhere", Uid: 7, Gid: 8, Mtime: tB, DirMtime: tC},
			partial: func(b treeBuilder) { b.symlink("../somewhere", "l") },
		},
		{
			name:    "link",
			prefix:  fileF(9),
			op:      &wire.Link{OldPath: "d/f", NewPath: "g", DirMtime: tC},
			partial: func(b treeBuilder) { b.link("d/f", "g") },
		},
		{
			name:    "unlink",
			prefix:  fileF(9),
			op:      &wire.Unlink{Path: "d/f", DirMtime: tC},
			partial: func(b treeBuilder) { b.must("unlink", os.Remove(b.abs("d/f"))) },
		},
		{
			name:    "rmdir",
			prefix:  []wire.Op{mkdirD},
			op:      &wire.Rmdir{Path: "d", DirMtime: tC},
			partial: func(b treeBuilder) { b.must("rmdir", os.Remove(b.abs("d"))) },
		},
		{
			name:    "rename",
			prefix:  fileF(9),
			op:      &wire.Rename{OldPath: "d/f", NewPath: "r", OldDirMtime: tB, NewDirMtime: tC},
			partial: func(b treeBuilder) { b.must("rename", os.Rename(b.abs("d/f"), b.abs("r"))) },
		},
		{
			name: "rename over a file",
			prefix: append(fileF(9),
				&wire.Create{Path: "victim", Handle: 8, Mode: 0o600, Mtime: tA, DirMtime: tA},
				&wire.Write{Handle: 8, Data: []byte("victim"), Mtime: tA},
				&wire.Release{Handle: 8}),
			op:      &wire.Rename{OldPath: "d/f", NewPath: "victim", OldDirMtime: tB, NewDirMtime: tC},
			partial: func(b treeBuilder) { b.must("rename", os.Rename(b.abs("d/f"), b.abs("victim"))) },
		},
		{
			name:   "rename noreplace",
			prefix: fileF(9),
			op:     &wire.Rename{OldPath: "d/f", NewPath: "d/g", Flags: wire.RenameNoReplace, OldDirMtime: tB, NewDirMtime: tB},
			partial: func(b treeBuilder) {
				b.must("rename", unix.Renameat2(unix.AT_FDCWD, b.abs("d/f"), unix.AT_FDCWD, b.abs("d/g"), unix.RENAME_NOREPLACE))
			},
		},
		{
			name:    "open trunc",
			prefix:  fileF(9),
			op:      &wire.Open{Path: "d/f", Handle: 3, Flags: wire.OpenTrunc, Mtime: tB},
			partial: func(b treeBuilder) { b.must("truncate", os.Truncate(b.abs("d/f"), 0)) },
			after:   []wire.Op{&wire.Write{Handle: 3, Data: []byte("reopened"), Mtime: tC}},
		},
		{
			name:   "release",
			prefix: []wire.Op{mkdirD, &wire.Create{Path: "d/f", Handle: 4, Mode: 0o644, Mtime: tA, DirMtime: tA}},
			op:     &wire.Release{Handle: 4},
		},
		{
			name:    "write",
			prefix:  []wire.Op{mkdirD, &wire.Create{Path: "d/f", Handle: 5, Mode: 0o644, Mtime: tA, DirMtime: tA}},
			op:      &wire.Write{Handle: 5, Off: 2, Data: []byte("0123456789"), Mtime: tB},
			partial: func(b treeBuilder) { b.must("write", os.WriteFile(b.abs("d/f"), []byte("\x00\x0001234"), 0o644)) },
		},
		{
			name:   "setattr",
			prefix: fileF(9),
			op: &wire.Setattr{Path: "d/f", Valid: wire.SetMode | wire.SetUid | wire.SetGid | wire.SetSize | wire.SetMtime,
				Mode: 0o2755, Uid: 9, Gid: 10, Size: 3, Mtime: tB},
			partial: func(b treeBuilder) { b.chown("d/f", 9, 10) },
		},
		{
			name:    "setxattr",
			prefix:  fileF(9),
			op:      &wire.Setxattr{Path: "d/f", Name: "user.k", Value: []byte("v"), Flags: wire.XattrCreate},
			partial: func(b treeBuilder) { b.xattr("d/f", "user.k", "v") },
		},
		{
			name:    "removexattr",
			prefix:  append(fileF(9), &wire.Setxattr{Path: "d/f", Name: "user.k", Value: []byte("v")}),
			op:      &wire.Removexattr{Path: "d/f", Name: "user.k"},
			partial: func(b treeBuilder) { b.must("removexattr", unix.Removexattr(b.abs("d/f"), "user.k")) },
		},
		{
			name: "punch hole",
			prefix: []wire.Op{mkdirD, &wire.Create{Path: "d/f", Handle: 6, Mode: 0o644, Mtime: tA, DirMtime: tA},
				&wire.Write{Handle: 6, Data: make([]byte, 3*4096), Mtime: tA}},
			op: &wire.Fallocate{Handle: 6, Mode: unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, Off: 4096, Len: 4096, Mtime: tB},
		},
	}
}

// Reapply of an op applied in full, in part or not at all leaves the tree
// of applying it once.
func TestReapplyEqualsApplyOnce(t *testing.T) {
	requireRoot(t)
	for _, tc := range reapplyCases() {
		t.Run(tc.name, func(t *testing.T) {
			run := func(prepare func(r *Replayer, b treeBuilder), useReapply bool) string {
				root := t.TempDir()
				r := newTestReplayer(t, root, Options{Chown: true, AllowSetuid: true})
				applyAll(t, r, tc.prefix...)
				prepare(r, treeBuilder{t, root})
				apply := r.Apply
				if useReapply {
					apply = r.Reapply
				}
				if err := apply(tc.op); err != nil {
					t.Fatalf("%s: %v", describe(tc.op), err)
				}
				applyAll(t, r, tc.after...)
				return root
			}
			once := run(func(*Replayer, treeBuilder) {}, false)
			nothing := run(func(*Replayer, treeBuilder) {}, true)
			requireSameTree(t, once, nothing)
			full := run(func(r *Replayer, _ treeBuilder) {
				if err := r.Apply(tc.op); err != nil {
					t.Fatal(err)
				}
			}, true)
			requireSameTree(t, once, full)
			if tc.partial != nil {
				part := run(func(_ *Replayer, b treeBuilder) { tc.partial(b) }, true)
				requireSameTree(t, once, part)
			}
		})
	}
}

// An exchange leaves both names either way: Reapply refuses to guess,
// and changes nothing.
func TestReapplyExchangeUncertain(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	applyAll(t, r,
		&wire.Create{Path: "a", Mode: 0o644, Mtime: tA, DirMtime: tA},
		&wire.Create{Path: "b", Mode: 0o600, Mtime: tA, DirMtime: tA})
	before := snapshot(t, root)
	err := r.Reapply(&wire.Rename{OldPath: "a", NewPath: "b", Flags: wire.RenameExchange, OldDirMtime: tB, NewDirMtime: tB})
	if !errors.Is(err, ErrUncertain) {
		t.Errorf("reapply exchange: %v, want ErrUncertain", err)
	}
	if d := diffTrees(before, snapshot(t, root)); len(d) != 0 {
		t.Errorf("tree changed: %v", d)
	}
	// Apply still exchanges.
	if err := r.Apply(&wire.Rename{OldPath: "a", NewPath: "b", Flags: wire.RenameExchange, OldDirMtime: tB, NewDirMtime: tB}); err != nil {
		t.Fatal(err)
	}
}

// Reapply of a rename whose source and target are both gone is still an
// error: the tree is not one the op could have left.
func TestReapplyRenameOfNothingFails(t *testing.T) {
	r := newTestReplayer(t, t.TempDir(), Options{})
	err := r.Reapply(&wire.Rename{OldPath: "a", NewPath: "b", OldDirMtime: tB, NewDirMtime: tB})
	if !errors.Is(err, unix.ENOENT) {
		t.Errorf("reapply rename of nothing: %v, want ENOENT", err)
	}
	if _, err := os.Lstat(filepath.Join(r.root, "b")); err == nil {
		t.Error("b appeared")
	}
}
