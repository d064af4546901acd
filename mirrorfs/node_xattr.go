package mirrorfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/tdfs/tdfs/quictransport/wire"
	"golang.org/x/sys/unix"
)

// Setxattr sets an extended attribute (not following a final symlink) and
// emits wire.Setxattr. On a node no longer in the tree it is applied
// through an open descriptor and emits nothing.
//
// The emitted Value aliases the FUSE request buffer: the sink copies it.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	rel, ok := relPath(n.inode())
	if !ok {
		return fs.ToErrno(n.withAnyFile(func(fd int) error {
			return unix.Fsetxattr(fd, attr, data, int(flags))
		}))
	}
	if err := checkPath(rel); err != nil {
		return fs.ToErrno(err)
	}
	if errno := n.LoopbackNode.Setxattr(ctx, attr, data, flags); errno != 0 {
		return errno
	}
	n.m.emit(&wire.Setxattr{Path: rel, Name: attr, Value: data, Flags: flags})
	return 0
}

// Removexattr removes an extended attribute and emits wire.Removexattr,
// like Setxattr.
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	rel, ok := relPath(n.inode())
	if !ok {
		return fs.ToErrno(n.withAnyFile(func(fd int) error {
			return unix.Fremovexattr(fd, attr)
		}))
	}
	if err := checkPath(rel); err != nil {
		return fs.ToErrno(err)
	}
	if errno := n.LoopbackNode.Removexattr(ctx, attr); errno != 0 {
		return errno
	}
	n.m.emit(&wire.Removexattr{Path: rel, Name: attr})
	return 0
}
