package mirrorfs

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// lastSetattr runs fn and returns the one Setattr it emitted.
func (e *env) lastSetattr(fn func() error) *wire.Setattr {
	e.t.Helper()
	mark := e.sink.mark()
	if err := fn(); err != nil {
		e.t.Fatal(err)
	}
	return one[*wire.Setattr](e.t, e.sink.since(mark))
}

func TestTruncate(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("f", []byte("0123456789"))
	sa := e.lastSetattr(func() error { return os.Truncate(e.m("f"), 4) })
	want := wire.Setattr{Path: "f", Valid: wire.SetSize, Mode: 0o644, Size: 4, Atime: wire.Time{Omit: true}, Mtime: e.mtime("f")}
	if *sa != want {
		t.Errorf("truncate op %+v, want %+v", *sa, want)
	}

	f, err := os.OpenFile(e.m("f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := ofType[*wire.Open](e.sink.all())[0].Handle
	sa = e.lastSetattr(func() error { return f.Truncate(1 << 20) })
	want = wire.Setattr{Handle: h, Valid: wire.SetSize, Mode: 0o644, Size: 1 << 20, Atime: wire.Time{Omit: true}, Mtime: e.mtime("f")}
	if *sa != want {
		t.Errorf("ftruncate op %+v, want %+v", *sa, want)
	}
}

func TestChmodChown(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("f", nil)
	sa := e.lastSetattr(func() error { return syscall.Chmod(e.m("f"), 0o4751) })
	if sa.Valid != wire.SetMode || sa.Mode != 0o4751 || sa.Path != "f" || sa.Mtime != e.mtime("f") {
		t.Errorf("chmod op %+v, want mode 04751", *sa)
	}
	if os.Getuid() != 0 {
		t.Skip("chown needs root")
	}
	sa = e.lastSetattr(func() error { return os.Lchown(e.m("f"), 1234, 5678) })
	// The kernel adds the mode without set-user-ID to the same SETATTR.
	if sa.Valid&^wire.SetMode != wire.SetUid|wire.SetGid || sa.Uid != 1234 || sa.Gid != 5678 || sa.Path != "f" {
		t.Errorf("chown op %+v, want 1234:5678", *sa)
	}
	// chown clears set-user-ID; the op carries the mode the file has now.
	var st syscall.Stat_t
	if err := syscall.Lstat(e.b("f"), &st); err != nil || sa.Mode != st.Mode&0o7777 || st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("backing after chown: %d:%d mode %#o; op mode %#o", st.Uid, st.Gid, st.Mode&0o7777, sa.Mode)
	}
	sa = e.lastSetattr(func() error { return os.Lchown(e.m("f"), -1, 42) })
	if sa.Valid&^wire.SetMode != wire.SetGid || sa.Gid != 42 || sa.Uid != 1234 {
		t.Errorf("chgrp op %+v, want gid 42 only", *sa)
	}
}

func TestSetattrApplyOrder(t *testing.T) {
	// One SETATTR that changes owner and set-id mode at once must end with
	// that mode: chown after chmod would clear the bits.
	dir := t.TempDir()
	p := dir + "/f"
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	in := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{
		Valid: fuse.FATTR_MODE | fuse.FATTR_UID | fuse.FATTR_GID,
		Mode:  0o6755, Owner: fuse.Owner{Uid: 1234, Gid: 5678},
	}}
	if os.Getuid() != 0 {
		t.Skip("chown needs root")
	}
	dirfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirfd)
	st, err := applySetattr(pathTarget{a: at{fd: dirfd, name: "f", rel: "f"}, typ: syscall.S_IFREG}, in)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o6755 || st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("after setattr: %d:%d mode %#o, want 1234:5678 06755", st.Uid, st.Gid, st.Mode&0o7777)
	}
}

func TestUtimensNanoseconds(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("f", nil)
	ts := []unix.Timespec{{Sec: 1000, Nsec: 123456789}, {Sec: 2000, Nsec: 987654321}}
	sa := e.lastSetattr(func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, e.m("f"), ts, 0) })
	want := wire.Setattr{
		Path: "f", Valid: wire.SetAtime | wire.SetMtime, Mode: 0o644,
		Atime: wire.Time{Sec: 1000, Nsec: 123456789}, Mtime: wire.Time{Sec: 2000, Nsec: 987654321},
	}
	if *sa != want {
		t.Errorf("utimens op %+v, want %+v", *sa, want)
	}
	if got := e.mtime("f"); got != want.Mtime {
		t.Errorf("backing mtime %+v", got)
	}

	// Only mtime; atime left alone.
	ts = []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Sec: 3000, Nsec: 5}}
	sa = e.lastSetattr(func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, e.m("f"), ts, 0) })
	if sa.Valid != wire.SetMtime || sa.Mtime != (wire.Time{Sec: 3000, Nsec: 5}) || !sa.Atime.Omit {
		t.Errorf("mtime-only utimens op %+v", *sa)
	}

	// "now" is the kernel's now, carried as the resulting time.
	sa = e.lastSetattr(func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, e.m("f"), nil, 0) })
	if sa.Valid != wire.SetAtime|wire.SetMtime || sa.Mtime != e.mtime("f") || sa.Mtime.Sec < 1e9 {
		t.Errorf("utimens now op %+v, backing mtime %+v", *sa, e.mtime("f"))
	}

	// A symlink's own times (posixtest SetattrSymlink).
	if err := os.Symlink("nowhere", e.m("l")); err != nil {
		t.Fatal(err)
	}
	ts = []unix.Timespec{{Sec: 42, Nsec: 1}, {Sec: 43, Nsec: 2}}
	sa = e.lastSetattr(func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, e.m("l"), ts, unix.AT_SYMLINK_NOFOLLOW) })
	if sa.Path != "l" || sa.Mtime != (wire.Time{Sec: 43, Nsec: 2}) || e.mtime("l") != sa.Mtime {
		t.Errorf("lutimes op %+v, backing %+v", *sa, e.mtime("l"))
	}
}

func TestSetattrFailureEmitsNothing(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("f", []byte("x"))
	mark := e.sink.mark()
	// Beyond ext4's largest file but within FUSE's limit: the backing
	// filesystem refuses it.
	if err := os.Truncate(e.m("f"), 1<<50); !errors.Is(err, syscall.EFBIG) && !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("huge truncate: %v, want EFBIG", err)
	}
	if got := e.sink.since(mark); len(got) != 0 {
		t.Errorf("failed truncate emitted %v", types(got))
	}
}

func TestWireValid(t *testing.T) {
	all := uint32(fuse.FATTR_MODE | fuse.FATTR_UID | fuse.FATTR_GID | fuse.FATTR_SIZE | fuse.FATTR_ATIME | fuse.FATTR_MTIME |
		fuse.FATTR_FH | fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME_NOW | fuse.FATTR_LOCKOWNER | fuse.FATTR_CTIME)
	want := wire.SetMode | wire.SetUid | wire.SetGid | wire.SetSize | wire.SetAtime | wire.SetMtime
	if got := wireValid(all); got != want {
		t.Errorf("wireValid(all) = %#x, want %#x", got, want)
	}
	if got := wireValid(fuse.FATTR_FH | fuse.FATTR_LOCKOWNER | fuse.FATTR_CTIME); got != 0 {
		t.Errorf("wireValid(non-attributes) = %#x, want 0", got)
	}
}
