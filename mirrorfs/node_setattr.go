package mirrorfs

import (
	"context"
	"fmt"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Setattr applies chmod, chown, truncate and utimens and emits
// wire.Setattr. It replaces LoopbackNode.Setattr, which ignores the errno
// of reading the attributes back and applies chmod before chown (chown
// then clears the set-id bits just set).
//
// The op names the handle when the kernel passed a handle with write
// access (ftruncate), else the path. A node no longer in the tree
// (fchmod on an unlinked open file) is changed through one of its open
// descriptors and emits nothing: the file is not in any slave's tree.
func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return fs.ToErrno(n.setattr(fh, in, out))
}

func (n *node) setattr(fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) error {
	if in.Valid&^(fuse.FATTR_CTIME|fuse.FATTR_KILL_SUIDGID|fuse.FATTR_FH|fuse.FATTR_LOCKOWNER) == 0 {
		return n.chownNoIDs(fh, in, out)
	}
	f, _ := fh.(*file)
	rel, inTree := relPath(n.inode())
	if err := n.checkSetattr(rel, in); err != nil {
		return err
	}
	st, f, err := n.setattrBacking(f, rel, inTree, in)
	if err != nil {
		return err
	}
	out.FromStat(&st)
	n.afterSetattr(in.Valid, st.Mode)

	op := setattrOp(in, &st)
	if op == nil {
		return nil
	}
	switch {
	case f != nil && f.handle != 0:
		op.Handle = f.handle
	case inTree:
		op.Path = rel
	default:
		if st.Nlink > 0 {
			// Still in the tree under a name we do not know, and no
			// handle on the slaves: this change cannot be replicated.
			n.m.log.Warn("setattr on a file reachable only through a hard link tdfs has not seen: not replicated; "+
				"the slaves may differ in this file's attributes", "ino", st.Ino)
		}
		return nil
	}
	n.m.emit(op)
	return nil
}

// checkSetattr refuses what a slave would refuse: a mode its policy
// leaves out, a size past its bound.
func (n *node) checkSetattr(rel string, in *fuse.SetAttrIn) error {
	if in.Valid&fuse.FATTR_MODE != 0 {
		if err := n.m.checkMode("chmod", rel, n.inode().StableAttr().Mode&syscall.S_IFMT, in.Mode); err != nil {
			return err
		}
	}
	if in.Valid&fuse.FATTR_SIZE != 0 {
		if err := n.m.checkEnd("truncate", n, in.Size, 0); err != nil {
			return err
		}
	}
	return nil
}

// setattrBacking applies in to the backing file: through f when the kernel
// passed a handle, else at rel when n is in the tree, else through any
// handle open on n. It returns the attributes after, and the handle to
// name in the op (nil: the path, or nothing when n is gone from the tree).
func (n *node) setattrBacking(f *file, rel string, inTree bool, in *fuse.SetAttrIn) (syscall.Stat_t, *file, error) {
	var st syscall.Stat_t
	var err error
	switch {
	case f != nil:
		if err := n.killOnTruncate(fdTarget(f.fd), in); err != nil {
			return st, f, fmt.Errorf("setattr %q: %w", rel, err)
		}
		st, err = applySetattr(fdTarget(f.fd), in)
	case inTree:
		if err := checkPath(rel); err != nil {
			return st, f, err
		}
		var a at
		if a, err = n.m.resolve(rel); err != nil {
			return st, f, fmt.Errorf("setattr %q: %w", rel, err)
		}
		defer a.close()
		t := pathTarget{a: a, typ: n.inode().StableAttr().Mode}
		if err := n.killOnTruncate(t, in); err != nil {
			return st, f, fmt.Errorf("setattr %q: %w", rel, err)
		}
		st, err = applySetattr(t, in)
	default:
		// No name in the tree as go-fuse knows it (unlinked while open);
		// the file may still live under a hard link never looked up. A
		// handle the slaves know lets them follow (op.Handle).
		err = n.withFile(func(of *file) error {
			var ferr error
			st, ferr = applySetattr(fdTarget(of.fd), in)
			if st.Nlink > 0 {
				f = of // otherwise the file is gone from the tree: nothing to send
			}
			return ferr
		})
	}
	if err != nil {
		return st, f, fmt.Errorf("setattr %q: %w", rel, err)
	}
	return st, f, nil
}

// setattrOp is the op that replicates in, which left the file with
// attributes st, addressed to nothing yet; nil when in sets nothing a
// slave sets.
func setattrOp(in *fuse.SetAttrIn, st *syscall.Stat_t) *wire.Setattr {
	valid := wireValid(in.Valid)
	if valid == 0 {
		return nil
	}
	op := &wire.Setattr{
		Valid: valid,
		Mode:  st.Mode & 0o7777,
		Uid:   st.Uid,
		Gid:   st.Gid,
		Atime: omitTime,
		Mtime: wireTime(st.Mtim),
	}
	if valid&wire.SetSize != 0 {
		op.Size = in.Size
	}
	if valid&wire.SetAtime != 0 {
		op.Atime = wireTime(st.Atim)
	}
	return op
}

// chownNoIDs serves a SETATTR with nothing to set. The kernel sends one
// for a chown(2) that changes neither owner nor group (-1, -1), and before
// a write by a caller without CAP_FSETID to a file with set-id bits
// (file_remove_privs); under KILLPRIV_V2 both leave to the filesystem what
// the VFS does: clear S_ISUID, and S_ISGID when group-exec is set or the
// caller is neither in the file's group nor privileged, on anything but a
// directory. The change goes through setattr, so it is replicated. The
// two requests look the same: a caller that neither owns the file nor may
// write to it can only be a chown, which the VFS refuses (EPERM) when it
// would change the mode; one that may write is let through (a chown by
// such a caller then clears what its next write would). Root sends one
// for a write only to a file with a capability, which keeps its set-id
// bits.
func (n *node) chownNoIDs(fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) error {
	st, cap, err := n.privState(fh)
	if err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if removedBy := n.capRemovedBy.Swap(0); in.Caller.Uid == 0 && (cap || removedBy == in.Caller.Pid) {
		// Root (CAP_FSETID) writing to a file with a capability, which
		// the kernel has just removed or the write removes (killpriv.go):
		// the set-id bits stay. (A root chown -1 -1 of such a file keeps
		// them too, where the VFS would clear them: the one case the two
		// requests cannot be told apart.)
		out.FromStat(&st)
		return nil
	}
	mode := clearedIDs(&st, &in.Caller)
	if mode == st.Mode&0o7777 {
		out.FromStat(&st)
		return nil
	}
	if c := &in.Caller; c.Uid != 0 && c.Uid != st.Uid && !mayWrite(c, &st) {
		return fmt.Errorf("chown clearing set-id bits of a file the caller does not own: %w", syscall.EPERM)
	}
	chmod := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_MODE, Mode: mode}}
	chmod.Caller = in.Caller
	if in.Valid&fuse.FATTR_FH != 0 {
		chmod.Valid |= fuse.FATTR_FH
		chmod.Fh = in.Fh
	}
	return n.setattr(fh, chmod, out)
}

// privState reads the attributes of n's backing file and whether it has a
// file capability: through fh when the kernel passed one, else by path,
// else through any handle open on n.
func (n *node) privState(fh fs.FileHandle) (st syscall.Stat_t, cap bool, err error) {
	look := func(t attrTarget) error {
		var err error
		if st, err = t.stat(); err != nil {
			return err
		}
		cap, err = t.hasCap()
		return err
	}
	if f, ok := fh.(*file); ok {
		err = look(fdTarget(f.fd))
	} else if rel, inTree := relPath(n.inode()); inTree {
		var a at
		if a, err = n.m.resolve(rel); err == nil {
			err = look(pathTarget{a: a, typ: n.inode().StableAttr().Mode})
			a.close()
		}
	} else {
		err = n.withAnyFile(func(fd int) error { return look(fdTarget(fd)) })
	}
	return st, cap, err
}

// clearedIDs is the mode of a file with attributes st once the set-id
// bits the VFS clears for caller c are cleared (see chownNoIDs).
func clearedIDs(st *syscall.Stat_t, c *fuse.Caller) uint32 {
	mode := st.Mode & 0o7777
	if typ := st.Mode & syscall.S_IFMT; typ != syscall.S_IFDIR && typ != syscall.S_IFLNK {
		mode &^= syscall.S_ISUID
		if mode&syscall.S_ISGID != 0 && (mode&syscall.S_IXGRP != 0 || c.Uid != 0 && !callerInGroup(c, st.Gid)) {
			mode &^= syscall.S_ISGID
		}
	}
	return mode
}

// mayWrite reports whether the mode bits let caller c write to a file
// with attributes st.
func mayWrite(c *fuse.Caller, st *syscall.Stat_t) bool {
	switch {
	case c.Uid == st.Uid:
		return st.Mode&syscall.S_IWUSR != 0
	case callerInGroup(c, st.Gid):
		return st.Mode&syscall.S_IWGRP != 0
	}
	return st.Mode&syscall.S_IWOTH != 0
}

// killOnTruncate clears privileges before a truncate as the VFS would
// (killpriv.go): a truncate through the mount, whoever the caller, drops
// security.capability; FATTR_KILL_SUIDGID (the caller lacks CAP_FSETID)
// drops the set-id bits too. The kernel sends FATTR_KILL_SUIDGID with
// every chown as well, but there the daemon's chown clears them itself.
// Skipped when the cache says there is nothing to clear.
func (n *node) killOnTruncate(t attrTarget, in *fuse.SetAttrIn) error {
	if in.Valid&fuse.FATTR_SIZE == 0 {
		return nil
	}
	var kill *fuse.Caller
	if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 && in.Valid&fuse.FATTR_MODE == 0 {
		kill = &in.Caller
	}
	if !n.mayKill(kill) {
		return nil
	}
	return n.killPrivs(t, kill)
}

// wireValid maps FATTR_* bits to wire.Set* bits. ctime, lock owner and
// the handle bit are not attributes a slave sets.
func wireValid(v uint32) uint32 {
	var w uint32
	for _, b := range [...]struct{ fattr, set uint32 }{
		{fuse.FATTR_MODE, wire.SetMode},
		{fuse.FATTR_UID, wire.SetUid},
		{fuse.FATTR_GID, wire.SetGid},
		{fuse.FATTR_SIZE, wire.SetSize},
		{fuse.FATTR_ATIME, wire.SetAtime},
		{fuse.FATTR_MTIME, wire.SetMtime},
	} {
		if v&b.fattr != 0 {
			w |= b.set
		}
	}
	return w
}

// attrTarget is what setattr changes: an open descriptor or a path.
type attrTarget interface {
	chown(uid, gid int) error
	chmod(mode uint32) error
	truncate(size int64) error
	utimes(ts *[2]unix.Timespec) error
	stat() (syscall.Stat_t, error)
	hasCap() (bool, error) // security.capability is set (killpriv.go)
}

// applySetattr applies in to t and returns the attributes afterwards.
// chown comes before chmod, so a mode with set-id bits survives; truncate
// comes before the times, so an explicit mtime is not clobbered by it.
func applySetattr(t attrTarget, in *fuse.SetAttrIn) (syscall.Stat_t, error) {
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		if err := t.chown(u, g); err != nil {
			return syscall.Stat_t{}, fmt.Errorf("chown %d:%d: %w", u, g, err)
		}
	}
	if mode, ok := in.GetMode(); ok {
		if err := t.chmod(mode); err != nil {
			return syscall.Stat_t{}, fmt.Errorf("chmod %#o: %w", mode, err)
		}
	}
	if size, ok := in.GetSize(); ok {
		if err := t.truncate(int64(size)); err != nil {
			return syscall.Stat_t{}, fmt.Errorf("truncate %d: %w", size, err)
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		ts := [2]unix.Timespec{
			timespec(in.Valid, fuse.FATTR_ATIME, fuse.FATTR_ATIME_NOW, in.Atime, in.Atimensec),
			timespec(in.Valid, fuse.FATTR_MTIME, fuse.FATTR_MTIME_NOW, in.Mtime, in.Mtimensec),
		}
		if err := t.utimes(&ts); err != nil {
			return syscall.Stat_t{}, fmt.Errorf("utimens: %w", err)
		}
	}
	return t.stat()
}

// timespec builds a utimensat(2) time: UTIME_OMIT when not set, UTIME_NOW
// for "now" (the kernel's clock, not the daemon's idea of it).
func timespec(valid, set, now uint32, sec uint64, nsec uint32) unix.Timespec {
	switch {
	case valid&set == 0:
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	case valid&now != 0:
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
}

// fdTarget changes an open backing file.
type fdTarget int

func (fd fdTarget) chown(uid, gid int) error      { return syscall.Fchown(int(fd), uid, gid) }
func (fd fdTarget) chmod(mode uint32) error       { return syscall.Fchmod(int(fd), mode) }
func (fd fdTarget) truncate(size int64) error     { return syscall.Ftruncate(int(fd), size) }
func (fd fdTarget) stat() (syscall.Stat_t, error) { return fstat(int(fd)) }

// utimes is futimens(3): utimensat(2) with a NULL path; x/sys has no
// wrapper that passes NULL.
func (fd fdTarget) utimes(ts *[2]unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// pathTarget changes a backing path (relative to a directory descriptor:
// backing.go) without following a final symlink.
type pathTarget struct {
	a   at
	typ uint32 // file type bits of the node
}

func (t pathTarget) chown(uid, gid int) error {
	return unix.Fchownat(t.a.fd, t.a.name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

// chmod refuses symlinks: the kernel resolves chmod on a symlink to its
// target before asking us, and fchmodat(2) would follow it.
func (t pathTarget) chmod(mode uint32) error {
	if t.typ&syscall.S_IFMT == syscall.S_IFLNK {
		return syscall.EOPNOTSUPP
	}
	return unix.Fchmodat(t.a.fd, t.a.name, mode, 0)
}

// truncate is truncate(2) (there is no truncateat) through the
// directory's /proc/self/fd magic link (at.procPath): like truncate(2) of
// the path it opens nothing (opening a fifo for writing would block) and
// follows a final symlink.
func (t pathTarget) truncate(size int64) error { return syscall.Truncate(t.a.procPath(), size) }

func (t pathTarget) utimes(ts *[2]unix.Timespec) error {
	return unix.UtimesNanoAt(t.a.fd, t.a.name, ts[:], unix.AT_SYMLINK_NOFOLLOW)
}

func (t pathTarget) stat() (syscall.Stat_t, error) { return t.a.lstat() }
