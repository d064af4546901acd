package mirrorfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Read-only ops. They do what go-fuse's LoopbackNode does, but relative to
// the backing dir's descriptor (backing.go) instead of by a path that
// starts with the backing dir's own.
//
// A node that is no longer in the tree (unlinked while open, or a removed
// directory a process still sits in) has no path: LoopbackNode would
// resolve go-fuse's fake ".go-fuse.<rand>/deleted" path for it, log a
// warning and fail; these use an open descriptor where there is one and
// answer ENOENT otherwise.

// resolveSelf returns where n is in the backing dir; ok is false when n is
// not in the tree. The caller closes a.
func (n *node) resolveSelf() (a at, ok bool, err error) {
	rel, ok := relPath(n.inode())
	if !ok {
		return at{}, false, nil
	}
	a, err = n.m.resolve(rel)
	return a, true, err
}

// Getattr prefers the handle the kernel passed (or go-fuse picked), else
// reads the attributes without following a final symlink (the root, "."
// relative to its own descriptor, is the backing dir itself).
func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if fga, ok := f.(fs.FileGetattrer); ok {
		return fga.Getattr(ctx, out)
	}
	a, ok, err := n.resolveSelf()
	if err != nil {
		return fs.ToErrno(err)
	}
	if ok {
		defer a.close()
		st, err := a.lstat()
		if err != nil {
			return fs.ToErrno(err)
		}
		out.FromStat(&st)
		return 0
	}
	return fs.ToErrno(n.withAnyFile(func(fd int) error {
		st, err := fstat(fd)
		if err == nil {
			out.FromStat(&st)
		}
		return err
	}))
}

// Statx is Getattr's statx(2) counterpart, with the flags and mask the
// kernel sent.
func (n *node) Statx(ctx context.Context, f fs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	if fsx, ok := f.(fs.FileStatxer); ok {
		return fsx.Statx(ctx, flags, mask, out)
	}
	var st unix.Statx_t
	a, ok, err := n.resolveSelf()
	if err != nil {
		return fs.ToErrno(err)
	}
	if ok {
		defer a.close()
		if err := unix.Statx(a.fd, a.name, int(flags), int(mask), &st); err != nil {
			return fs.ToErrno(err)
		}
		out.FromStatx(&st)
		return 0
	}
	return fs.ToErrno(n.withAnyFile(func(fd int) error {
		if err := unix.Statx(fd, "", int(flags)|unix.AT_EMPTY_PATH, int(mask), &st); err != nil {
			return err
		}
		out.FromStatx(&st)
		return nil
	}))
}

// Statfs reports on the filesystem that holds the node, following a final
// symlink as statfs(2) does; on the backing dir's root for a node not in
// the tree (fstatfs on an unlinked open file).
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var s syscall.Statfs_t
	a, ok, err := n.resolveSelf()
	switch {
	case err != nil:
		return fs.ToErrno(err)
	case !ok:
		err = syscall.Fstatfs(n.m.rootFd, &s)
	case a.name == ".":
		err = syscall.Fstatfs(a.fd, &s)
		a.close()
	default:
		var fd int
		fd, err = unix.Openat(a.fd, a.name, unix.O_PATH|unix.O_CLOEXEC, 0)
		a.close()
		if err == nil {
			err = syscall.Fstatfs(fd, &s)
			unix.Close(fd)
		}
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	out.FromStatfsT(&s)
	return 0
}

// Lookup finds name in n and makes its node.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dir, ok := relPath(n.inode())
	if !ok {
		return nil, syscall.ENOENT
	}
	a, err := n.m.resolve(childPath(dir, name))
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	defer a.close()
	ch, err := n.newChild(ctx, a, out)
	return ch, fs.ToErrno(err)
}

// newChild makes the Inode of the child of n at a as go-fuse's
// LoopbackNode.Lookup does: out is filled from a fresh lstat, and the node
// (a LoopbackNode that WrapChild turns into one of ours) gets the
// identity the loopback would give it, so a node known already (a hard
// link, or a lookup that raced this one) is found again.
func (n *node) newChild(ctx context.Context, a at, out *fuse.EntryOut) (*fs.Inode, error) {
	st, btime, err := statAt(a.fd, a.name, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return nil, err
	}
	out.Attr.FromStat(&st)
	child := &fs.LoopbackNode{RootData: n.RootData}
	return n.NewInode(ctx, child, stableAttr(n.RootData.Dev, &st, genFromBtime(btime))), nil
}

// Readlink reads a symlink's target.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	a, ok, err := n.resolveSelf()
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	if !ok {
		return nil, syscall.ENOENT
	}
	defer a.close()
	for l := 256; ; l *= 2 {
		buf := make([]byte, l)
		sz, err := unix.Readlinkat(a.fd, a.name, buf)
		if err != nil {
			return nil, fs.ToErrno(err)
		}
		if sz < len(buf) {
			return buf[:sz], 0
		}
	}
}

// OpendirHandle opens the directory for reading (go-fuse's loopback dir
// stream, which also seeks, fsyncs and answers ioctls: node.Ioctl refuses
// those before they reach it).
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fd, errno := n.openDir()
	if errno != 0 {
		return nil, 0, errno
	}
	ds, errno := fs.NewLoopbackDirStreamFd(fd)
	if errno != 0 {
		unix.Close(fd)
		return nil, 0, errno
	}
	return ds, keepCache | fuse.FOPEN_CACHE_DIR, 0
}

// Readdir is used by go-fuse only for a node without OpendirHandle; it
// reads the directory as OpendirHandle does.
func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	fd, errno := n.openDir()
	if errno != 0 {
		return nil, errno
	}
	ds, errno := fs.NewLoopbackDirStreamFd(fd)
	if errno != 0 {
		unix.Close(fd)
	}
	return ds, errno
}

// openDir opens n's backing directory for reading, as opendir(3) would.
func (n *node) openDir() (int, syscall.Errno) {
	a, ok, err := n.resolveSelf()
	if err != nil {
		return -1, fs.ToErrno(err)
	}
	if !ok {
		return -1, syscall.ENOENT
	}
	defer a.close()
	for {
		fd, err := unix.Openat(a.fd, a.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		return fd, fs.ToErrno(err)
	}
}

// backingGetxattr reads an extended attribute (node_xattr.go's Getxattr),
// not following a final symlink; the kernel asks for security.capability
// before every write, unlinked files included.
func (n *node) backingGetxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	var sz int
	a, ok, err := n.resolveSelf()
	switch {
	case err != nil:
	case ok:
		sz, err = unix.Lgetxattr(a.procPath(), attr, dest)
		a.close()
	default:
		err = n.withAnyFile(func(fd int) (err error) {
			sz, err = unix.Fgetxattr(fd, attr, dest)
			return err
		})
	}
	return uint32(max(sz, 0)), fs.ToErrno(err)
}

// backingListxattr lists extended attributes (node_xattr.go's Listxattr).
func (n *node) backingListxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var sz int
	a, ok, err := n.resolveSelf()
	switch {
	case err != nil:
	case ok:
		sz, err = unix.Llistxattr(a.procPath(), dest)
		a.close()
	default:
		err = n.withAnyFile(func(fd int) (err error) {
			sz, err = unix.Flistxattr(fd, dest)
			return err
		})
	}
	return uint32(max(sz, 0)), fs.ToErrno(err)
}
