package replayer

import (
	"errors"
	"path"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// master plays the master in tests: it applies each op to a reference
// directory (the backing dir) with plain system calls, reads back the
// times the way mirrorfs does, sends the op through the wire codec and
// applies it to the replica. At the end both trees must be identical.
type master struct {
	t   *testing.T
	ref string
	r   *Replayer
	fds map[uint64]int // the master's open handles
	seq uint64
	// stamps counts the made-up mtimes handed out.
	stamps int64
}

func newMaster(t *testing.T, replica string, o Options) *master {
	t.Helper()
	m := &master{t: t, ref: t.TempDir(), r: newTestReplayer(t, replica, o), fds: make(map[uint64]int)}
	t.Cleanup(func() {
		for _, fd := range m.fds {
			unix.Close(fd)
		}
	})
	return m
}

// newTestReplayer returns a replayer on root, closed at cleanup.
func newTestReplayer(t *testing.T, root string, o Options) *Replayer {
	t.Helper()
	r, err := New(root, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return r
}

func timeAt(sec, nsec int64) time.Time { return time.Unix(sec, nsec) }

func (m *master) abs(p string) string { return filepath.Join(m.ref, filepath.FromSlash(p)) }

func (m *master) must(what string, err error) {
	m.t.Helper()
	if err != nil {
		m.t.Fatalf("master %s: %v", what, err)
	}
}

func wireTime(ts unix.Timespec) wire.Time {
	return wire.Time{Sec: int64(ts.Sec), Nsec: uint32(ts.Nsec)}
}

// The master's mtimes are stamped with made-up values after each op: the
// kernel's file times come from a coarse clock, so an op applied to both
// trees within the same tick would give equal times even if the replayer
// forgot to set them. A made-up time cannot happen by chance.
func (m *master) fakeTime() unix.Timespec {
	m.stamps++
	return unix.Timespec{Sec: 1_000_000_000 + m.stamps*1000, Nsec: (m.stamps * 7_777_777) % 1e9}
}

// mtime stamps p (not following a final symlink) with a made-up mtime
// and returns it.
func (m *master) mtime(p string) wire.Time {
	m.t.Helper()
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, m.fakeTime()}
	m.must("utimens "+p, unix.UtimesNanoAt(unix.AT_FDCWD, m.abs(p), ts, unix.AT_SYMLINK_NOFOLLOW))
	return m.readMtime(p)
}

// readMtime is p's mtime on the master, not following a final symlink.
func (m *master) readMtime(p string) wire.Time {
	m.t.Helper()
	var st unix.Stat_t
	m.must("lstat "+p, unix.Lstat(m.abs(p), &st))
	return wireTime(st.Mtim)
}

// dirMtime is the mtime of p's parent.
func (m *master) dirMtime(p string) wire.Time {
	m.t.Helper()
	d := path.Dir(p)
	if d == "." {
		d = ""
	}
	return m.mtime(d)
}

// fdMtime stamps the open file with a made-up mtime and returns it.
func (m *master) fdMtime(fd int) wire.Time {
	m.t.Helper()
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, m.fakeTime()}
	m.must("futimens", unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH))
	var st unix.Stat_t
	m.must("fstat", unix.Fstat(fd, &st))
	return wireTime(st.Mtim)
}

// send encodes op, decodes it as the slave's transport would and applies
// it to the replica.
func (m *master) send(op wire.Op) {
	m.t.Helper()
	m.seq++
	_, dec, err := wire.ParseOp(wire.AppendOp(nil, m.seq, op))
	if err != nil {
		m.t.Fatalf("wire round trip of %s: %v", describe(op), err)
	}
	if err := m.r.Apply(dec); err != nil {
		m.t.Fatalf("seq %d: %v", m.seq, err)
	}
}

func (m *master) create(p string, h uint64, flags int, mode uint32, uid, gid int) {
	m.t.Helper()
	fd, err := unix.Open(m.abs(p), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC|flags, mode)
	m.must("create "+p, err)
	m.must("fchown", unix.Fchown(fd, uid, gid))
	m.must("fchmod", unix.Fchmod(fd, mode))
	op := &wire.Create{Path: p, Handle: h, Flags: uint32(flags | unix.O_CREAT | unix.O_WRONLY), Mode: mode,
		Uid: uint32(uid), Gid: uint32(gid), Mtime: m.fdMtime(fd), DirMtime: m.dirMtime(p)}
	if h != 0 {
		m.fds[h] = fd
	} else {
		unix.Close(fd)
	}
	m.send(op)
}

func (m *master) open(p string, h uint64, flags int) {
	m.t.Helper()
	fd, err := unix.Open(m.abs(p), unix.O_WRONLY|unix.O_CLOEXEC|flags, 0)
	m.must("open "+p, err)
	m.fds[h] = fd
	m.send(&wire.Open{Path: p, Handle: h, Flags: uint32(unix.O_WRONLY | flags), Mtime: m.fdMtime(fd)})
}

func (m *master) write(h uint64, off int64, data []byte) {
	m.t.Helper()
	fd := m.fds[h]
	m.must("pwrite", pwriteAll(fd, data, off))
	m.send(&wire.Write{Handle: h, Off: off, Data: data, Mtime: m.fdMtime(fd)})
}

func (m *master) fallocate(h uint64, mode uint32, off, n int64) {
	m.t.Helper()
	fd := m.fds[h]
	m.must("fallocate", unix.Fallocate(fd, mode, off, n))
	m.send(&wire.Fallocate{Handle: h, Mode: mode, Off: off, Len: n, Mtime: m.fdMtime(fd)})
}

func (m *master) release(h uint64) {
	m.t.Helper()
	m.must("close", unix.Close(m.fds[h]))
	delete(m.fds, h)
	m.send(&wire.Release{Handle: h})
}

func (m *master) mkdir(p string, mode uint32, uid, gid int) {
	m.t.Helper()
	m.must("mkdir "+p, unix.Mkdir(m.abs(p), mode))
	m.must("chown", unix.Lchown(m.abs(p), uid, gid))
	m.must("chmod", unix.Chmod(m.abs(p), mode))
	m.send(&wire.Mkdir{Path: p, Mode: mode, Uid: uint32(uid), Gid: uint32(gid), Mtime: m.mtime(p), DirMtime: m.dirMtime(p)})
}

func (m *master) mknod(p string, mode uint32) {
	m.t.Helper()
	m.must("mknod "+p, unix.Mknod(m.abs(p), mode, 0))
	m.must("chmod", unix.Chmod(m.abs(p), mode&0o7777))
	m.send(&wire.Mknod{Path: p, Mode: mode, Mtime: m.mtime(p), DirMtime: m.dirMtime(p)})
}

func (m *master) symlink(target, p string, uid, gid int) {
	m.t.Helper()
	m.must("symlink "+p, unix.Symlink(target, m.abs(p)))
	m.must("lchown", unix.Lchown(m.abs(p), uid, gid))
	m.send(&wire.Symlink{Path: p, Target: target, Uid: uint32(uid), Gid: uint32(gid), Mtime: m.mtime(p), DirMtime: m.dirMtime(p)})
}

func (m *master) link(oldp, newp string) {
	m.t.Helper()
	m.must("link "+newp, unix.Linkat(unix.AT_FDCWD, m.abs(oldp), unix.AT_FDCWD, m.abs(newp), 0))
	m.send(&wire.Link{OldPath: oldp, NewPath: newp, DirMtime: m.dirMtime(newp)})
}

func (m *master) unlink(p string) {
	m.t.Helper()
	m.must("unlink "+p, unix.Unlink(m.abs(p)))
	m.send(&wire.Unlink{Path: p, DirMtime: m.dirMtime(p)})
}

func (m *master) rmdir(p string) {
	m.t.Helper()
	m.must("rmdir "+p, unix.Rmdir(m.abs(p)))
	m.send(&wire.Rmdir{Path: p, DirMtime: m.dirMtime(p)})
}

func (m *master) rename(oldp, newp string, flags uint32) {
	m.t.Helper()
	m.must("rename "+oldp, unix.Renameat2(unix.AT_FDCWD, m.abs(oldp), unix.AT_FDCWD, m.abs(newp), uint(flags)))
	m.send(&wire.Rename{OldPath: oldp, NewPath: newp, Flags: flags, OldDirMtime: m.dirMtime(oldp), NewDirMtime: m.dirMtime(newp)})
}

// setattr applies o to the master by path (or handle), fills in the
// resulting mtime and sends it.
func (m *master) setattr(o wire.Setattr) {
	m.t.Helper()
	tgt := target{fd: unix.AT_FDCWD, name: m.abs(o.Path)}
	if o.Handle != 0 {
		tgt = fdTarget(m.fds[o.Handle])
	}
	if o.Valid&(wire.SetUid|wire.SetGid) != 0 {
		uid, gid := -1, -1
		if o.Valid&wire.SetUid != 0 {
			uid = int(o.Uid)
		}
		if o.Valid&wire.SetGid != 0 {
			gid = int(o.Gid)
		}
		m.must("chown", unix.Fchownat(tgt.fd, tgt.name, uid, gid, tgt.flags()))
	}
	if o.Valid&wire.SetMode != 0 {
		if err := unix.Fchmodat(tgt.fd, tgt.name, o.Mode, tgt.flags()); !errors.Is(err, unix.EOPNOTSUPP) {
			m.must("chmod", err)
		}
	}
	if o.Valid&wire.SetSize != 0 {
		if o.Handle != 0 {
			m.must("ftruncate", unix.Ftruncate(tgt.fd, int64(o.Size)))
		} else {
			m.must("truncate", unix.Truncate(tgt.name, int64(o.Size)))
		}
	}
	if o.Valid&(wire.SetAtime|wire.SetMtime) != 0 {
		a, mt := unix.Timespec{Nsec: unix.UTIME_OMIT}, unix.Timespec{Nsec: unix.UTIME_OMIT}
		if o.Valid&wire.SetAtime != 0 {
			a = unix.Timespec{Sec: o.Atime.Sec, Nsec: int64(o.Atime.Nsec)}
		}
		if o.Valid&wire.SetMtime != 0 {
			mt = unix.Timespec{Sec: o.Mtime.Sec, Nsec: int64(o.Mtime.Nsec)}
		}
		m.must("utimens", unix.UtimesNanoAt(tgt.fd, tgt.name, []unix.Timespec{a, mt}, tgt.flags()))
	}
	switch {
	case o.Valid&wire.SetMtime != 0 && o.Handle != 0:
		var st unix.Stat_t
		m.must("fstat", unix.Fstat(tgt.fd, &st))
		o.Mtime = wireTime(st.Mtim)
	case o.Valid&wire.SetMtime != 0:
		o.Mtime = m.readMtime(o.Path)
	case o.Handle != 0:
		o.Mtime = m.fdMtime(tgt.fd)
	default:
		o.Mtime = m.mtime(o.Path)
	}
	m.send(&o)
}

func (m *master) setxattr(p, name, value string, flags uint32) {
	m.t.Helper()
	m.must("setxattr "+p, unix.Lsetxattr(m.abs(p), name, []byte(value), int(flags)))
	m.send(&wire.Setxattr{Path: p, Name: name, Value: []byte(value), Flags: flags})
}

func (m *master) removexattr(p, name string) {
	m.t.Helper()
	m.must("removexattr "+p, unix.Lremovexattr(m.abs(p), name))
	m.send(&wire.Removexattr{Path: p, Name: name})
}
