package mirrorfs

import (
	"context"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/tdfs/tdfs/quictransport/wire"
	"golang.org/x/sys/unix"
)

// Namespace ops. Each runs under the exclusive namespace lock taken in
// rawFS, applies the op to the backing dir, and only then emits it.
//
// Mkdir, Mknod and Symlink make the node themselves and then let
// LoopbackNode.Lookup build the Inode (so its identity is computed by
// go-fuse exactly as for any lookup): LoopbackNode's own versions pass the
// mode through os.FileMode, which drops the sticky and set-id bits, and
// chown the new node's group to the caller's even in a set-group-ID
// directory.

// Mkdir makes a directory and emits wire.Mkdir.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dir, rel, err := n.childRel(name)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	p := n.m.abs(rel)
	if err := syscall.Mkdir(p, mode&0o7777); err != nil {
		return nil, fs.ToErrno(err)
	}
	ch, dirMtime, err := n.adopt(ctx, dir, name, p, syscall.S_IFDIR|mode, out)
	if err != nil {
		if rerr := syscall.Rmdir(p); rerr != nil {
			n.m.log.Error("mirrorfs: cannot undo mkdir", "path", rel, "err", rerr)
		}
		return nil, fs.ToErrno(err)
	}
	n.m.emit(&wire.Mkdir{
		Path: rel, Mode: out.Attr.Mode & 0o7777, Uid: out.Attr.Uid, Gid: out.Attr.Gid,
		Mtime: attrMtime(&out.Attr), DirMtime: dirMtime,
	})
	return ch, 0
}

// Mknod makes a fifo, socket, empty regular file or device node and emits
// wire.Mknod. Device nodes and set-id modes only where every slave holds
// them (policy.go), else EPERM.
func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dir, rel, err := n.childRel(name)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	typ := mode & syscall.S_IFMT
	if typ == 0 {
		typ = syscall.S_IFREG
	}
	if err := n.m.checkDevice(rel, mode); err != nil {
		return nil, fs.ToErrno(err)
	}
	if err := n.m.checkMode("mknod", rel, typ, mode); err != nil {
		return nil, fs.ToErrno(err)
	}
	p := n.m.abs(rel)
	dev := 0
	if typ == syscall.S_IFCHR || typ == syscall.S_IFBLK {
		dev = int(rdev)
	}
	if err := syscall.Mknod(p, mode, dev); err != nil {
		return nil, fs.ToErrno(err)
	}
	ch, dirMtime, err := n.adopt(ctx, dir, name, p, mode, out)
	if err != nil {
		n.undoUnlink(rel, p)
		return nil, fs.ToErrno(err)
	}
	n.m.emit(&wire.Mknod{
		Path: rel, Mode: out.Attr.Mode, Rdev: uint64(out.Attr.Rdev), Uid: out.Attr.Uid, Gid: out.Attr.Gid,
		Mtime: attrMtime(&out.Attr), DirMtime: dirMtime,
	})
	return ch, 0
}

// Symlink makes a symbolic link and emits wire.Symlink.
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dir, rel, err := n.childRel(name)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	p := n.m.abs(rel)
	if err := syscall.Symlink(target, p); err != nil {
		return nil, fs.ToErrno(err)
	}
	ch, dirMtime, err := n.adopt(ctx, dir, name, p, syscall.S_IFLNK, out)
	if err != nil {
		n.undoUnlink(rel, p)
		return nil, fs.ToErrno(err)
	}
	n.m.emit(&wire.Symlink{
		Path: rel, Target: target, Uid: out.Attr.Uid, Gid: out.Attr.Gid,
		Mtime: attrMtime(&out.Attr), DirMtime: dirMtime,
	})
	return ch, 0
}

// adopt finishes a node made at p: gives it to the caller, reads back the
// parent's mtime and looks the child up, which fills out from a fresh
// lstat and creates the Inode.
func (n *node) adopt(ctx context.Context, dir, name, p string, mode uint32, out *fuse.EntryOut) (*fs.Inode, wire.Time, error) {
	pst, dirMtime := n.m.dirStat(dir)
	n.m.giveToCaller(ctx, p, -1, mode, &pst)
	ch, errno := n.LoopbackNode.Lookup(ctx, name, out)
	if errno != 0 {
		return nil, omitTime, fmt.Errorf("look up new node %q: %w", p, errno)
	}
	return ch, dirMtime, nil
}

// undoUnlink removes a node made by an op that then failed, so the backing
// dir holds nothing that was not mirrored.
func (n *node) undoUnlink(rel, p string) {
	if err := syscall.Unlink(p); err != nil {
		n.m.log.Error("mirrorfs: cannot undo failed op", "path", rel, "err", err)
	}
}

// Link makes a hard link and emits wire.Link.
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dir, rel, err := n.childRel(name)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	old, ok := relPath(target.EmbeddedInode())
	if !ok || old == "" {
		// No path to link from (unlinked or O_TMPFILE); LoopbackNode
		// answers EXDEV too.
		return nil, syscall.EXDEV
	}
	ch, errno := n.LoopbackNode.Link(ctx, target, name, out)
	if errno != 0 {
		return nil, errno
	}
	n.m.emit(&wire.Link{OldPath: old, NewPath: rel, DirMtime: n.m.mtimeOf(n.m.abs(dir))})
	return ch, 0
}

// Unlink removes a non-directory and emits wire.Unlink.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	dir, rel, err := n.childRel(name)
	if err != nil {
		return fs.ToErrno(err)
	}
	if errno := n.LoopbackNode.Unlink(ctx, name); errno != 0 {
		return errno
	}
	n.m.emit(&wire.Unlink{Path: rel, DirMtime: n.m.mtimeOf(n.m.abs(dir))})
	return 0
}

// Rmdir removes an empty directory and emits wire.Rmdir.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	dir, rel, err := n.childRel(name)
	if err != nil {
		return fs.ToErrno(err)
	}
	if errno := n.LoopbackNode.Rmdir(ctx, name); errno != 0 {
		return errno
	}
	n.m.emit(&wire.Rmdir{Path: rel, DirMtime: n.m.mtimeOf(n.m.abs(dir))})
	return 0
}

// Rename renames with renameat2(2) flags and emits wire.Rename with the same
// flags. RENAME_WHITEOUT is refused: it leaves a character device behind.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	oldDir, oldRel, err := n.childRel(name)
	if err != nil {
		return fs.ToErrno(err)
	}
	newDir, newRel, err := np.childRel(newName)
	if err != nil {
		return fs.ToErrno(err)
	}
	if errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags); errno != 0 {
		return errno
	}
	n.m.emit(&wire.Rename{
		OldPath: oldRel, NewPath: newRel, Flags: flags,
		OldDirMtime: n.m.mtimeOf(n.m.abs(oldDir)),
		NewDirMtime: n.m.mtimeOf(n.m.abs(newDir)),
	})
	return 0
}
