package mirrorfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Read-only ops on nodes that are no longer in the tree (unlinked while
// open, or a removed directory a process still sits in). LoopbackNode
// would resolve go-fuse's fake ".go-fuse.<rand>/deleted" path for them,
// log a warning and fail; these use an open descriptor where there is one
// and answer ENOENT otherwise. Nodes in the tree go to LoopbackNode.

func (n *node) inTree() bool {
	_, ok := relPath(n.inode())
	return ok
}

// Getattr prefers the handle the kernel passed (or go-fuse picked).
func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if fga, ok := f.(fs.FileGetattrer); ok {
		return fga.Getattr(ctx, out)
	}
	if n.inTree() {
		return n.LoopbackNode.Getattr(ctx, f, out)
	}
	return fs.ToErrno(n.withAnyFile(func(fd int) error {
		st, err := fstat(fd)
		if err == nil {
			out.FromStat(&st)
		}
		return err
	}))
}

// Statx is Getattr's statx(2) counterpart.
func (n *node) Statx(ctx context.Context, f fs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	if f != nil || n.inTree() {
		return n.LoopbackNode.Statx(ctx, f, flags, mask, out)
	}
	return fs.ToErrno(n.withAnyFile(func(fd int) error {
		var st unix.Statx_t
		if err := unix.Statx(fd, "", int(flags)|unix.AT_EMPTY_PATH, int(mask), &st); err != nil {
			return err
		}
		out.FromStatx(&st)
		return nil
	}))
}

// Statfs reports on the backing dir's root for a node not in the tree
// (fstatfs on an unlinked open file).
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if n.inTree() {
		return n.LoopbackNode.Statfs(ctx, out)
	}
	var s syscall.Statfs_t
	if err := syscall.Statfs(n.m.backing, &s); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStatfsT(&s)
	return 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !n.inTree() {
		return nil, syscall.ENOENT
	}
	return n.LoopbackNode.Lookup(ctx, name, out)
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if !n.inTree() {
		return nil, syscall.ENOENT
	}
	return n.LoopbackNode.Readlink(ctx)
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if !n.inTree() {
		return nil, 0, syscall.ENOENT
	}
	return n.LoopbackNode.OpendirHandle(ctx, flags)
}

// backingGetxattr reads an extended attribute (node_xattr.go's Getxattr);
// the kernel asks for security.capability before every write, unlinked
// files included.
func (n *node) backingGetxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if n.inTree() {
		return n.LoopbackNode.Getxattr(ctx, attr, dest)
	}
	var sz int
	err := n.withAnyFile(func(fd int) (err error) {
		sz, err = unix.Fgetxattr(fd, attr, dest)
		return err
	})
	return uint32(max(sz, 0)), fs.ToErrno(err)
}

// backingListxattr lists extended attributes (node_xattr.go's Listxattr).
func (n *node) backingListxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if n.inTree() {
		return n.LoopbackNode.Listxattr(ctx, dest)
	}
	var sz int
	err := n.withAnyFile(func(fd int) (err error) {
		sz, err = unix.Flistxattr(fd, dest)
		return err
	})
	return uint32(max(sz, 0)), fs.ToErrno(err)
}
