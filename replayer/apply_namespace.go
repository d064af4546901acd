package replayer

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Ops that change names: Link, Unlink, Rmdir, Rename.

func (r *Replayer) applyLink(o *wire.Link) error {
	od, oname, err := r.lookup(o.OldPath, false)
	if err != nil {
		return err
	}
	defer od.close()
	nd, nname, err := r.lookup(o.NewPath, false)
	if err != nil {
		return err
	}
	defer nd.close()
	// Flags 0: a final symlink at OldPath is linked itself, not followed.
	if err := unix.Linkat(od.fd, oname, nd.fd, nname, 0); err != nil {
		if !errors.Is(err, unix.EEXIST) || !sameFile(od, oname, nd, nname) {
			return err
		}
	}
	return setDirMtime(nd, o.DirMtime)
}

// sameFile reports whether two names are links to one inode (a replayed
// Link).
func sameFile(ad dir, aname string, bd dir, bname string) bool {
	a, err := lstatAt(ad, aname)
	if err != nil {
		return false
	}
	b, err := lstatAt(bd, bname)
	return err == nil && a.Dev == b.Dev && a.Ino == b.Ino
}

// Unlink and Rmdir of a missing name succeed: the op's effect is already
// there (a replay after a crash). A refusal is still a refusal.

func (r *Replayer) applyUnlink(o *wire.Unlink) error {
	return r.remove(o.Path, 0, o.DirMtime)
}

func (r *Replayer) applyRmdir(o *wire.Rmdir) error {
	return r.remove(o.Path, unix.AT_REMOVEDIR, o.DirMtime)
}

func (r *Replayer) remove(p string, flags int, dirMtime wire.Time) error {
	d, name, err := r.lookup(p, false)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.close()
	if err := unix.Unlinkat(d.fd, name, flags); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return setDirMtime(d, dirMtime)
}

func (r *Replayer) applyRename(o *wire.Rename) error {
	switch o.Flags {
	case 0, wire.RenameNoReplace, wire.RenameExchange:
	default:
		// RENAME_WHITEOUT and anything newer mean nothing on a replica.
		return fmt.Errorf("%w: rename flags %#x", wire.ErrRefused, o.Flags)
	}
	od, oname, err := r.lookup(o.OldPath, false)
	if err != nil {
		return err
	}
	defer od.close()
	nd, nname, err := r.lookup(o.NewPath, false)
	if err != nil {
		return err
	}
	defer nd.close()
	// The wire flags have renameat2's values.
	if err := unix.Renameat2(od.fd, oname, nd.fd, nname, uint(o.Flags)); err != nil {
		return err
	}
	if err := setDirMtime(od, o.OldDirMtime); err != nil {
		return fmt.Errorf("old %w", err)
	}
	if err := setDirMtime(nd, o.NewDirMtime); err != nil {
		return fmt.Errorf("new %w", err)
	}
	return nil
}
