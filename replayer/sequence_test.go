package replayer

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// TestSequenceMatchesReference applies a recorded sequence using every op
// type to an empty replica and compares it with the master's tree: names,
// types, sizes, contents, modes, owners, mtimes to the nanosecond, symlink
// targets, link counts, hard links and xattrs.
func TestSequenceMatchesReference(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the sequence chowns and sets trusted.* xattrs")
	}
	replica := t.TempDir()
	m := newMaster(t, replica, Options{Chown: true, AllowSetuid: true})

	m.mkdir("d", 0o755, 1234, 5678)
	m.mkdir("d/sub", 0o700, 0, 0)
	m.mkdir("d/sticky", 0o1777, 0, 0)
	m.mkdir("d/sgid", 0o2750, 1234, 1234)

	// Writes follow the open file through a rename, and a hole stays.
	m.create("d/f", 1, unix.O_EXCL, 0o644, 1000, 1000)
	m.write(1, 0, []byte("hello world"))
	m.write(1, 6, []byte("WORLD"))
	m.rename("d/f", "d/sub/g", 0)
	m.write(1, 11, []byte("!!"))
	m.write(1, 1<<20, []byte("tail after a hole"))
	m.release(1)

	// setuid survives the chown that precedes it.
	m.create("e", 2, unix.O_EXCL, 0o4755, 1234, 1234)
	m.write(2, 0, []byte("#!/bin/true\n"))
	m.link("e", "d/e-link")
	m.release(2)

	// Writes to an unlinked open file land in its inode: visible through
	// another link, harmless without one.
	m.create("u", 3, unix.O_EXCL, 0o600, 0, 0)
	m.link("u", "u2")
	m.unlink("u")
	m.write(3, 0, []byte("written after unlink"))
	m.release(3)
	m.create("gone", 4, unix.O_EXCL, 0o600, 0, 0)
	m.unlink("gone")
	m.write(4, 0, []byte("nobody sees this"))
	m.release(4)

	// Create without a handle, O_TRUNC of an existing file.
	m.create("x", 0, unix.O_EXCL, 0o640, 0, 0)
	m.create("y", 0, unix.O_EXCL, 0o640, 0, 0)
	m.open("y", 5, 0)
	m.write(5, 0, []byte("old contents"))
	m.release(5)
	m.create("y", 6, unix.O_TRUNC, 0o640, 0, 0)
	m.write(6, 0, []byte("new"))
	m.release(6)

	// Renames: across directories (a directory, too), exchange of a file
	// and a directory, no-replace.
	m.mkdir("ex", 0o755, 0, 0)
	m.create("ex/child", 0, unix.O_EXCL, 0o644, 0, 0)
	m.rename("ex", "d/sub/exdir", 0)
	m.rename("d/sub/exdir", "x", wire.RenameExchange)
	m.rename("y", "z", wire.RenameNoReplace)

	// A no-replace rename onto an existing name fails on the slave as it
	// would have on the master, and changes nothing.
	err := m.r.Apply(&wire.Rename{OldPath: "z", NewPath: "e", Flags: wire.RenameNoReplace})
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("rename no-replace onto an existing name: %v, want EEXIST", err)
	}

	// Special files, symlinks, a hard link to a symlink.
	m.mknod("fifo", unix.S_IFIFO|0o640)
	m.mknod("sock", unix.S_IFSOCK|0o600)
	m.mknod("d/plain", unix.S_IFREG|0o604)
	m.symlink("d/sub/g", "lnk", 1234, 5678)
	m.symlink("/nonexistent/absolute", "d/abslnk", 0, 0)
	m.symlink("../e", "d/rel", 0, 0)
	m.link("lnk", "lnk2")

	// xattrs on a file, a directory, the root and a symlink.
	m.setxattr("z", "user.a", "1", 0)
	m.setxattr("z", "user.b", "two", wire.XattrCreate)
	m.setxattr("z", "user.a", "one", wire.XattrReplace)
	m.removexattr("z", "user.b")
	m.setxattr("d", "user.dir", "v", 0)
	m.setxattr("", "user.root", "r", 0)
	m.setxattr("lnk", "trusted.onlink", "t", 0)
	m.setxattr("fifo", "trusted.onfifo", "f", 0)

	// fallocate: allocate, punch a hole, keep size, zero a range.
	m.create("sparse", 7, unix.O_EXCL, 0o644, 0, 0)
	m.write(7, 0, bytes.Repeat([]byte("x"), 1<<20))
	m.fallocate(7, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 256<<10, 512<<10)
	m.fallocate(7, unix.FALLOC_FL_KEEP_SIZE, 2<<20, 64<<10)
	m.fallocate(7, 0, 1<<20, 64<<10)
	m.fallocate(7, unix.FALLOC_FL_ZERO_RANGE, 16<<10, 4<<10)
	m.fallocate(7, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, 32<<10, 4<<10)
	m.release(7)

	// Setattr by handle: truncate and chmod an open file.
	m.open("z", 8, unix.O_TRUNC)
	m.write(8, 0, []byte("0123456789"))
	m.setattr(wire.Setattr{Handle: 8, Valid: wire.SetSize, Size: 3})
	m.setattr(wire.Setattr{Handle: 8, Valid: wire.SetMode, Mode: 0o600})
	m.setattr(wire.Setattr{Handle: 8, Valid: wire.SetUid | wire.SetGid, Uid: 42, Gid: 43})
	m.release(8)

	// Setattr by path: truncate (grow and shrink), chmod, chown, utimens
	// with nanoseconds, chmod of a symlink (a no-op), the root.
	m.setattr(wire.Setattr{Path: "d/sub/g", Valid: wire.SetSize, Size: 5})
	m.setattr(wire.Setattr{Path: "d/plain", Valid: wire.SetSize, Size: 100000})
	m.setattr(wire.Setattr{Path: "d/sub/g", Valid: wire.SetMode, Mode: 0o2640})
	m.setattr(wire.Setattr{Path: "d/sub/g", Valid: wire.SetGid, Gid: 77})
	m.setattr(wire.Setattr{Path: "lnk", Valid: wire.SetMode, Mode: 0o600})
	m.setattr(wire.Setattr{Path: "lnk", Valid: wire.SetUid, Uid: 99})
	m.setattr(wire.Setattr{Path: "d/sub", Valid: wire.SetMode | wire.SetMtime, Mode: 0o750,
		Mtime: wire.Time{Sec: 1_000_000_000, Nsec: 1}})
	m.setattr(wire.Setattr{Path: "", Valid: wire.SetMode, Mode: 0o751})
	atime := wire.Time{Sec: 1_234_567_000, Nsec: 987_654_321}
	mtime := wire.Time{Sec: 1_234_567_890, Nsec: 123_456_789}
	m.setattr(wire.Setattr{Path: "z", Valid: wire.SetAtime | wire.SetMtime, Atime: atime, Mtime: mtime})
	m.setattr(wire.Setattr{Path: "lnk2", Valid: wire.SetMtime, Mtime: wire.Time{Sec: 5, Nsec: 999_999_999}})

	// Removal.
	m.rmdir("d/sticky")
	m.unlink("d/e-link")

	// Each op type that moves a parent's mtime last touches a directory of
	// its own, so a dir mtime the replayer failed to set shows.
	m.mkdir("L", 0o755, 0, 0)
	for _, d := range []string{"create", "mkdir", "mknod", "symlink", "link", "unlink", "rmdir", "from", "to", "xfrom", "xto"} {
		m.mkdir("L/"+d, 0o755, 0, 0)
	}
	m.create("L/create/f", 0, unix.O_EXCL, 0o644, 0, 0)
	m.mkdir("L/mkdir/d", 0o755, 0, 0)
	m.mknod("L/mknod/p", unix.S_IFIFO|0o644)
	m.symlink("target", "L/symlink/s", 0, 0)
	m.link("e", "L/link/e")
	m.mknod("L/unlink/f", unix.S_IFREG|0o644)
	m.unlink("L/unlink/f")
	m.mkdir("L/rmdir/d", 0o755, 0, 0)
	m.rmdir("L/rmdir/d")
	m.mknod("L/from/f", unix.S_IFREG|0o644)
	m.rename("L/from/f", "L/to/f", 0)
	m.mknod("L/xfrom/f", unix.S_IFREG|0o644)
	m.mkdir("L/xto/f", 0o755, 0, 0)
	m.rename("L/xfrom/f", "L/xto/f", wire.RenameExchange)
	m.mknod("L/opened", unix.S_IFREG|0o644)
	m.open("L/opened", 9, unix.O_TRUNC)
	m.release(9)
	m.send(&wire.Sync{})

	// Checked before the snapshot, which reads z and so may move its atime.
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(replica, "z"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Atim.Sec != atime.Sec || st.Atim.Nsec != int64(atime.Nsec) {
		t.Errorf("z atime %d.%09d, want %d.%09d", st.Atim.Sec, st.Atim.Nsec, atime.Sec, atime.Nsec)
	}
	if st.Mtim.Sec != mtime.Sec || st.Mtim.Nsec != int64(mtime.Nsec) {
		t.Errorf("z mtime %d.%09d, want %d.%09d", st.Mtim.Sec, st.Mtim.Nsec, mtime.Sec, mtime.Nsec)
	}

	// The punched hole stays a hole: 1 MiB written, 512 KiB punched, 64 KiB
	// allocated past the end, 64 KiB appended.
	if err := unix.Lstat(filepath.Join(replica, "sparse"), &st); err != nil {
		t.Fatal(err)
	}
	if allocated := st.Blocks * 512; allocated > (1<<20)-(512<<10)+2*(64<<10)+(64<<10) {
		t.Errorf("sparse: %d bytes allocated, the punched hole was filled", allocated)
	}
	if st.Size != (1<<20)+(64<<10) {
		t.Errorf("sparse: size %d, want %d", st.Size, (1<<20)+(64<<10))
	}

	requireSameTree(t, m.ref, replica)
	if n := m.r.NumHandles(); n != 0 {
		t.Errorf("%d handles open after every release", n)
	}
}

// TestDirMtimesExact checks that a file's and its parent's mtimes are the
// op's, to the nanosecond, whatever the slave's clock says.
func TestDirMtimesExact(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	ft := wire.Time{Sec: 1_600_000_000, Nsec: 111_111_111}
	dt := wire.Time{Sec: 1_500_000_000, Nsec: 222_222_222}
	sub := wire.Time{Sec: 1_400_000_000, Nsec: 333_333_333}
	ops := []wire.Op{
		&wire.Mkdir{Path: "a", Mode: 0o755, Mtime: sub, DirMtime: dt},
		&wire.Create{Path: "a/f", Handle: 1, Flags: wireOExcl, Mode: 0o644, Mtime: ft, DirMtime: sub},
		&wire.Write{Handle: 1, Off: 0, Data: []byte("abc"), Mtime: ft},
		&wire.Release{Handle: 1},
	}
	for _, op := range ops {
		if err := r.Apply(op); err != nil {
			t.Fatal(err)
		}
	}
	checkMtime(t, root, "", dt)
	checkMtime(t, root, "a", sub)
	checkMtime(t, root, "a/f", ft)

	// Omit leaves a time alone.
	if err := r.Apply(&wire.Unlink{Path: "a/f", DirMtime: wire.Time{Omit: true}}); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "a"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mtim.Sec == sub.Sec && st.Mtim.Nsec == int64(sub.Nsec) {
		t.Errorf("unlink with an omitted dir mtime: the old mtime is still there, so unlink did not move it?")
	}
}

func checkMtime(t *testing.T, root, p string, want wire.Time) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mtim.Sec != want.Sec || st.Mtim.Nsec != int64(want.Nsec) {
		t.Errorf("%q mtime %d.%09d, want %d.%09d", p, st.Mtim.Sec, st.Mtim.Nsec, want.Sec, want.Nsec)
	}
}
