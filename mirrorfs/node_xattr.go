package mirrorfs

import (
	"bytes"
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Setxattr sets an extended attribute (not following a final symlink) and
// emits wire.Setxattr. On a node no longer in the tree it is applied
// through an open descriptor and emits nothing.
//
// The emitted Value aliases the FUSE request buffer: the sink copies it.
//
// SyncedXattr is refused with EPERM (read-only), before anything reaches
// the backing dir.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if isSyncedXattr(attr) {
		return syscall.EPERM
	}
	if attr == capXattr {
		defer n.privs.Store(0) // read again at the next write (killpriv.go)
	}
	rel, ok := relPath(n.inode())
	if !ok {
		return fs.ToErrno(n.withAnyFile(func(fd int) error {
			return unix.Fsetxattr(fd, attr, data, int(flags))
		}))
	}
	if err := checkPath(rel); err != nil {
		return fs.ToErrno(err)
	}
	if err := n.m.checkXattr(rel, attr); err != nil {
		return fs.ToErrno(err)
	}
	if err := n.m.xattrAt(rel, func(p string) error { return unix.Lsetxattr(p, attr, data, int(flags)) }); err != nil {
		return fs.ToErrno(err)
	}

	n.m.emit(&wire.Setxattr{Path: rel, Name: attr, Value: data, Flags: flags})
	return 0
}

// xattrAt calls fn with the path the l*xattr calls take for the backing
// path rel (at.procPath).
func (m *mirror) xattrAt(rel string, fn func(p string) error) error {
	a, err := m.resolve(rel)
	if err != nil {
		return err
	}
	defer a.close()
	return fn(a.procPath())
}

// Removexattr removes an extended attribute and emits wire.Removexattr,
// like Setxattr (SyncedXattr included: EPERM).
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if isSyncedXattr(attr) {
		return syscall.EPERM
	}
	if attr == capXattr {
		defer n.privs.Store(0)
		// The kernel removes a capability itself before the SETATTR with
		// nothing to set that a write by root then sends (chownNoIDs).
		if c, ok := fuse.FromContext(ctx); ok {
			n.capRemovedBy.Store(c.Pid)
		}
	}
	rel, ok := relPath(n.inode())
	if !ok {
		return fs.ToErrno(n.withAnyFile(func(fd int) error {
			return unix.Fremovexattr(fd, attr)
		}))
	}
	if err := checkPath(rel); err != nil {
		return fs.ToErrno(err)
	}
	if err := n.m.xattrAt(rel, func(p string) error { return unix.Lremovexattr(p, attr) }); err != nil {
		return fs.ToErrno(err)
	}

	n.m.emit(&wire.Removexattr{Path: rel, Name: attr})
	return 0
}

// Getxattr reads an extended attribute from the backing dir (or through an
// open descriptor: node_orphan.go), except SyncedXattr, the replication
// fence (synced.go), which never reaches it.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if isSyncedXattr(attr) {
		return n.m.readSynced(ctx, dest, attr == SyncedSlavesXattr)
	}
	return n.backingGetxattr(ctx, attr, dest)
}

// Listxattr lists the backing file's extended attributes (node_orphan.go)
// without SyncedXattr: the mount never stores the name, and should a
// backing file carry it (set beside the mount), listing it would invite
// tools that copy xattrs to read the fence for every file.
// A size probe (empty dest) may then answer a few bytes more than needed,
// which listxattr(2) allows: the caller reads again with that buffer.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	sz, errno := n.backingListxattr(ctx, dest)
	if errno != 0 || len(dest) == 0 {
		return sz, errno
	}
	return uint32(len(withoutName(withoutName(dest[:sz], SyncedXattr), SyncedSlavesXattr))), 0
}

// withoutName removes name from list, a listxattr(2) buffer of
// NUL-terminated names, in place, and returns what is left.
func withoutName(list []byte, name string) []byte {
	out := list[:0]
	for rest := list; len(rest) > 0; {
		i := bytes.IndexByte(rest, 0)
		if i < 0 { // not NUL-terminated: keep it as it is
			return append(out, rest...)
		}
		if string(rest[:i]) != name {
			out = append(out, rest[:i+1]...)
		}
		rest = rest[i+1:]
	}
	return out
}
