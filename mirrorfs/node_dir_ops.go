package mirrorfs

import (
	"context"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Namespace ops. Each runs under the exclusive namespace lock taken in
// rawFS, applies the op to the backing dir, and only then emits it.
//
// Mkdir, Mknod and Symlink make the node themselves and then build the
// Inode as a lookup does (newChild, so its identity is the one any lookup
// computes): LoopbackNode's own versions pass the mode through
// os.FileMode, which drops the sticky and set-id bits, and chown the new
// node's group to the caller's even in a set-group-ID directory. All of
// them reach the backing dir relative to its descriptor (backing.go).

// Mkdir makes a directory and emits wire.Mkdir.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dir, rel, err := n.childRel(name)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	a, err := n.m.resolve(rel)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	defer a.close()
	if err := unix.Mkdirat(a.fd, a.name, mode&0o7777); err != nil {
		return nil, fs.ToErrno(err)
	}
	ch, dirMtime, err := n.adopt(ctx, dir, a, syscall.S_IFDIR|mode, out)
	if err != nil {
		if rerr := unix.Unlinkat(a.fd, a.name, unix.AT_REMOVEDIR); rerr != nil {
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
	a, err := n.m.resolve(rel)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	defer a.close()
	dev := 0
	if typ == syscall.S_IFCHR || typ == syscall.S_IFBLK {
		dev = int(rdev)
	}
	if err := unix.Mknodat(a.fd, a.name, mode, dev); err != nil {
		return nil, fs.ToErrno(err)
	}
	ch, dirMtime, err := n.adopt(ctx, dir, a, mode, out)
	if err != nil {
		n.undoUnlink(a)
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
	a, err := n.m.resolve(rel)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	defer a.close()
	if err := unix.Symlinkat(target, a.fd, a.name); err != nil {
		return nil, fs.ToErrno(err)
	}
	ch, dirMtime, err := n.adopt(ctx, dir, a, syscall.S_IFLNK, out)
	if err != nil {
		n.undoUnlink(a)
		return nil, fs.ToErrno(err)
	}
	n.m.emit(&wire.Symlink{
		Path: rel, Target: target, Uid: out.Attr.Uid, Gid: out.Attr.Gid,
		Mtime: attrMtime(&out.Attr), DirMtime: dirMtime,
	})
	return ch, 0
}

// adopt finishes a node made at a (in the directory dir): gives it to the
// caller, reads back the parent's mtime and looks the child up, which
// fills out from a fresh lstat and creates the Inode.
func (n *node) adopt(ctx context.Context, dir string, a at, mode uint32, out *fuse.EntryOut) (*fs.Inode, wire.Time, error) {
	pst, dirMtime := n.m.dirStat(dir)
	n.m.giveToCaller(ctx, a, -1, mode, &pst)
	ch, err := n.newChild(ctx, a, out)
	if err != nil {
		return nil, omitTime, fmt.Errorf("look up new node %q: %w", a.rel, err)
	}
	return ch, dirMtime, nil
}

// undoUnlink removes a node made by an op that then failed, so the backing
// dir holds nothing that was not mirrored.
func (n *node) undoUnlink(a at) {
	if err := unix.Unlinkat(a.fd, a.name, 0); err != nil {
		n.m.log.Error("mirrorfs: cannot undo failed op", "path", a.rel, "err", err)
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
	if tn, ok := target.(*node); !ok || tn.m != n.m {
		return nil, syscall.EXDEV // not of this mount
	}
	ch, err := n.link(ctx, old, rel, out)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	n.m.emit(&wire.Link{OldPath: old, NewPath: rel, DirMtime: n.m.mtimeOf(dir)})
	return ch, 0
}

// link makes rel a hard link to the backing file old (not following old
// if it is a symlink, as link(2)) and makes its Inode as a lookup does.
func (n *node) link(ctx context.Context, old, rel string, out *fuse.EntryOut) (*fs.Inode, error) {
	oa, err := n.m.resolve(old)
	if err != nil {
		return nil, err
	}
	defer oa.close()
	a, err := n.m.resolve(rel)
	if err != nil {
		return nil, err
	}
	defer a.close()
	if err := unix.Linkat(oa.fd, oa.name, a.fd, a.name, 0); err != nil {
		return nil, err
	}
	ch, err := n.newChild(ctx, a, out)
	if err != nil {
		n.undoUnlink(a)
		return nil, err
	}
	return ch, nil
}

// Unlink removes a non-directory and emits wire.Unlink.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	dir, rel, err := n.childRel(name)
	if err != nil {
		return fs.ToErrno(err)
	}
	if err := n.m.unlink(rel, 0); err != nil {
		return fs.ToErrno(err)
	}
	n.m.emit(&wire.Unlink{Path: rel, DirMtime: n.m.mtimeOf(dir)})
	return 0
}

// Rmdir removes an empty directory and emits wire.Rmdir.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	dir, rel, err := n.childRel(name)
	if err != nil {
		return fs.ToErrno(err)
	}
	if err := n.m.unlink(rel, unix.AT_REMOVEDIR); err != nil {
		return fs.ToErrno(err)
	}
	n.m.emit(&wire.Rmdir{Path: rel, DirMtime: n.m.mtimeOf(dir)})
	return 0
}

// unlink is unlinkat(2) of the backing path rel.
func (m *mirror) unlink(rel string, flags int) error {
	a, err := m.resolve(rel)
	if err != nil {
		return err
	}
	defer a.close()
	return unix.Unlinkat(a.fd, a.name, flags)
}

// Rename renames with renameat2(2) flags and emits wire.Rename with the same
// flags. RENAME_WHITEOUT is refused: it leaves a character device behind.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	np, ok := newParent.(*node)
	if !ok || np.m != n.m {
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
	if err := n.rename(oldDir, oldRel, name, np, newDir, newRel, newName, flags); err != nil {
		return fs.ToErrno(err)
	}
	n.m.emit(&wire.Rename{
		OldPath: oldRel, NewPath: newRel, Flags: flags,
		OldDirMtime: n.m.mtimeOf(oldDir),
		NewDirMtime: n.m.mtimeOf(newDir),
	})
	return 0
}

// rename renames the backing path oldRel (name in n, at oldDir) to newRel
// (newName in np, at newDir) as go-fuse's LoopbackNode.Rename does:
// without flags a plain renameat(2); with flags renameat2(2) between the
// two parent directories, once each is found to be the directory its node
// stands for (EBUSY if the backing dir changed under the mount).
func (n *node) rename(oldDir, oldRel, name string, np *node, newDir, newRel, newName string, flags uint32) error {
	if flags == 0 {
		oa, err := n.m.resolve(oldRel)
		if err != nil {
			return err
		}
		defer oa.close()
		na, err := n.m.resolve(newRel)
		if err != nil {
			return err
		}
		defer na.close()
		return unix.Renameat(oa.fd, oa.name, na.fd, na.name)
	}
	d1, err := n.m.openDir(oldDir)
	if err != nil {
		return err
	}
	defer d1.close()
	d2, err := n.m.openDir(newDir)
	if err != nil {
		return err
	}
	defer d2.close()
	if err := n.isDir(d1.fd); err != nil {
		return err
	}
	if err := np.isDir(d2.fd); err != nil {
		return err
	}
	return unix.Renameat2(d1.fd, name, d2.fd, newName, uint(flags))
}

// isDir checks that the directory open as fd is the one n stands for
// (same identity, the generation aside); the root always is.
func (n *node) isDir(fd int) error {
	if n.inode().IsRoot() {
		return nil
	}
	st, err := fstat(fd)
	if err != nil {
		return err
	}
	if n.inode().StableAttr().Ino != stableAttr(n.RootData.Dev, &st, 0).Ino {
		return fmt.Errorf("directory %d changed under the mount: %w", n.inode().StableAttr().Ino, syscall.EBUSY)
	}
	return nil
}
