package mirrorfs

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Create opens name with O_CREAT, emits wire.Create (with a handle id when
// the file is open for writing) and returns the handle.
//
// The kernel also sends CREATE for names it has not looked up yet, so the
// file may already exist. LoopbackNode.Create would then chown that
// existing file to the caller, and it loses set-id bits through
// os.FileMode; this version creates with O_EXCL first so it knows whether
// it made the file, and only then gives it to the caller.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ch, f, err := n.create(ctx, name, flags, mode, out)
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	return ch, f, keepCache, 0
}

func (n *node) create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, *file, error) {
	dir, rel, err := n.childRel(name)
	if err != nil {
		return nil, nil, err
	}
	a, err := n.m.resolve(rel)
	if err != nil {
		return nil, nil, fmt.Errorf("create %q: %w", rel, err)
	}
	defer a.close()
	if err := n.m.checkMode("create", rel, syscall.S_IFREG, mode); err != nil {
		// The mode only matters if the file is made: opening an
		// existing one with O_CREAT (no O_EXCL) ignores it.
		if _, serr := a.lstat(); serr != nil || flags&syscall.O_EXCL != 0 {
			return nil, nil, err
		}
	}
	// The kernel sends every write with its offset (it computes the end
	// of file for O_APPEND itself), so O_APPEND is dropped as
	// LoopbackNode does.
	flags &^= syscall.O_APPEND
	fd, created, err := openCreate(a, flags, mode&0o7777)
	if err != nil {
		return nil, nil, fmt.Errorf("create %q: %w", rel, err)
	}
	c := &creating{a: a, rel: rel, fd: fd, osf: os.NewFile(uintptr(fd), rel), flags: flags, created: created}
	pst, dirMtime := n.m.dirStat(dir)
	if created {
		n.m.giveToCaller(ctx, a, fd, syscall.S_IFREG|mode, &pst)
	}
	ch, f, st, err := n.createdFile(ctx, c, out)
	if err != nil {
		c.osf.Close()
		if created {
			n.undoUnlink(a)
		}
		return nil, nil, fmt.Errorf("create %q: %w", rel, err)
	}
	wflags := mirroredOpenFlags(flags)
	if created {
		// The file is new: the slave must end with an empty file whatever
		// it holds under that name (wire.OpenExcl truncates there).
		wflags |= wire.OpenExcl
	}
	n.m.emit(&wire.Create{
		Path:     rel,
		Handle:   f.handle,
		Flags:    wflags,
		Mode:     st.Mode & 0o7777,
		Uid:      st.Uid,
		Gid:      st.Gid,
		Mtime:    wireTime(st.Mtim),
		DirMtime: dirMtime,
	})
	return ch, f, nil
}

// creating is a CREATE whose backing file is open (fd, osf) at a, the
// path rel; created says the open made it.
type creating struct {
	a       at
	rel     string
	fd      int
	osf     *os.File
	flags   uint32
	created bool
}

// createdFile makes the node and the handle of the file c opened, and
// returns them with the file's attributes as the Create is to carry
// them. On error the caller closes c.osf (and unlinks what it made).
func (n *node) createdFile(ctx context.Context, c *creating, out *fuse.EntryOut) (*fs.Inode, *file, syscall.Stat_t, error) {
	st, err := fstat(c.fd)
	if err != nil {
		return nil, nil, st, err
	}
	ch, cn, err := n.createdNode(ctx, c, st, out)
	if err != nil {
		return nil, nil, st, err
	}
	if st, err = cn.createPrivs(c, st); err != nil {
		return nil, nil, st, err
	}
	f, err := cn.newFile(fs.NewLoopbackFileFromOS(c.osf), writable(c.flags))
	if err != nil {
		return nil, nil, st, err
	}
	if f.handle != 0 {
		n.m.opened = f
	}
	return ch, f, st, nil
}

// createdNode looks up the node of the file c opened, which st describes.
func (n *node) createdNode(ctx context.Context, c *creating, st syscall.Stat_t, out *fuse.EntryOut) (*fs.Inode, *node, error) {
	ch, err := n.newChild(ctx, c.a, out)
	if err != nil {
		return nil, nil, fmt.Errorf("look up: %w", err)
	}
	if out.Attr.Ino != st.Ino {
		// Only possible if something else renamed the backing file
		// between open and lookup.
		return nil, nil, fmt.Errorf("name changed under us: %w", syscall.EIO)
	}
	cn, ok := ch.Operations().(*node)
	if !ok {
		return nil, nil, fmt.Errorf("child is %T, not a mirror node: %w", ch.Operations(), syscall.EIO)
	}
	return ch, cn, nil
}

// createPrivs sets the privilege state of n, the file c opened (st),
// which an O_TRUNC of an existing file clears as a truncate must
// (killpriv.go), numbered before the Create; it returns st as of after.
func (n *node) createPrivs(c *creating, st syscall.Stat_t) (syscall.Stat_t, error) {
	switch {
	case c.created:
		// A new file has no file capability; its mode is st's.
		n.privs.Store(privBits(st.Mode, false))
	case c.flags&syscall.O_TRUNC != 0:
		p, err := n.m.killPrivsNamed(c.fd, c.rel, n.m.openKill)
		if err != nil {
			return st, err
		}
		n.privs.Store(p)
		return fstat(c.fd)
	case writable(c.flags):
		return st, n.loadPrivs(fdTarget(c.fd))
	}
	return st, nil
}

// openCreate opens a like open(2) with O_CREAT and reports whether it made
// the file. An existing name is opened without following a final symlink:
// the daemon runs as root and a symlink may point anywhere (the kernel
// looks names up, and so resolves symlinks itself, before it sends CREATE
// for a name it already knows).
func openCreate(a at, flags, perm uint32) (fd int, created bool, err error) {
	fl := int(flags) | syscall.O_CLOEXEC
	fd, err = unix.Openat(a.fd, a.name, fl|syscall.O_CREAT|syscall.O_EXCL, perm)
	if err == nil {
		return fd, true, nil
	}
	if err != syscall.EEXIST || flags&syscall.O_EXCL != 0 {
		return -1, false, err
	}
	fd, err = unix.Openat(a.fd, a.name, (fl&^syscall.O_CREAT)|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return -1, false, err
	}
	return fd, false, nil
}
