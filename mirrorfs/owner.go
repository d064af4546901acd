package mirrorfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// childRel returns the relative paths of n (a directory) and of its child
// name, refusing paths the wire cannot carry. A directory that is no longer
// in the tree (removed while a process sits in it) yields ENOENT, which is
// what the backing dir would answer too.
func (n *node) childRel(name string) (dir, rel string, err error) {
	dir, ok := relPath(n.inode())
	if !ok {
		return "", "", syscall.ENOENT
	}
	rel = childPath(dir, name)
	if err := checkPath(rel); err != nil {
		return "", "", err
	}
	return dir, rel, nil
}

// dirStat reads back the directory dir after an op: its attributes (the
// set-group-ID bit matters to giveToCaller) and its mtime for the op.
func (m *mirror) dirStat(dir string) (syscall.Stat_t, wire.Time) {
	st, err := m.lstat(dir)
	if err != nil {
		m.log.Warn("mirrorfs: cannot read back directory after op", "err", err)
		return st, omitTime
	}
	return st, wireTime(st.Mtim)
}

// giveToCaller makes the caller the owner of a node this mount has just
// created, as LoopbackNode does when the daemon runs as root, with two
// corrections:
//   - in a set-group-ID directory the group stays the one the kernel
//     chose (the directory's); chowning it to the caller's group would
//     break setgid directories;
//   - chown clears the set-user-ID and set-group-ID bits of anything but
//     a directory (a regular file, fifo, socket or device), so they are
//     put back: the mode came from the kernel, which has already stripped
//     what the caller may not have.
//
// fd >= 0 names the new file; otherwise a does (not following a symlink).
// Failures are logged, not returned: the node exists and is mirrored with
// the owner it really has, so master and slaves still agree.
func (m *mirror) giveToCaller(ctx context.Context, a at, fd int, mode uint32, parent *syscall.Stat_t) {
	if !m.root {
		return
	}
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return
	}
	uid, gid := int(c.Uid), int(c.Gid)
	if parent.Mode&syscall.S_ISGID != 0 {
		gid = -1
	}
	if uid == 0 && gid <= 0 {
		return // the daemon (root) already owns it that way
	}
	var err error
	if fd >= 0 {
		err = syscall.Fchown(fd, uid, gid)
	} else {
		err = unix.Fchownat(a.fd, a.name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		m.log.Warn("mirrorfs: cannot give new node to its creator", "path", a.rel, "uid", uid, "gid", gid, "err", err)
		return
	}
	typ := mode & syscall.S_IFMT
	if mode&(syscall.S_ISUID|syscall.S_ISGID) == 0 || typ == syscall.S_IFDIR || typ == syscall.S_IFLNK {
		return
	}
	if fd >= 0 {
		err = syscall.Fchmod(fd, mode&0o7777)
	} else {
		// Never a symlink here: a final one is no concern.
		err = unix.Fchmodat(a.fd, a.name, mode&0o7777, 0)
	}
	if err != nil {
		m.log.Warn("mirrorfs: cannot restore set-id bits after chown", "path", a.rel, "err", err)
	}
}

// attrMtime is the mtime in attributes filled from a post-op lstat.
func attrMtime(a *fuse.Attr) wire.Time {
	return wire.Time{Sec: int64(a.Mtime), Nsec: a.Mtimensec}
}
