package replayer

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// What the slave refuses even from an authenticated master, beyond path
// confinement (resolve.go): a master's certificate may be stolen, and the
// replica may be served to others (docs/design.md, Security).
//
// Every check here runs before the op or resync item changes anything,
// and tolerant mode never skips what it refuses: a refusal is the master's
// fault, never a tree that still differs.
//
// Set-id bits are refused, not stripped: a replica that silently differed
// from the master in its modes would contradict the fidelity promise
// (docs/design.md, Fidelity) and make every verify pass report it. A master
// whose tree legitimately holds setuid files (a backup of a system's /usr) is
// replicated by a slave started with AllowSetuid (--allow-setuid), on a
// replica mounted nosuid if its data should not run. A resync pass that would
// set such a mode is refused the same way; a Verify pass, which changes
// nothing, reports the difference instead.

// ErrPolicy is wrapped by the error of an op or item the slave refuses by
// its own policy (a set-id bit, a device, an xattr namespace, a size past
// its bound), as opposed to one no slave would apply (a path leaving the
// root): what it touches is left out of the replica, and tolerant mode
// skips it. It wraps wire.ErrRefused.
var ErrPolicy = fmt.Errorf("%w by this slave's policy", wire.ErrRefused)

// Defaults of the bounds in Options.
const (
	// DefaultMaxFileSize bounds file sizes and the end of writes: 16 TiB,
	// ext4's own limit with 4 KiB blocks. Sparse files on filesystems
	// that allow more (XFS, btrfs) stay below it unless configured.
	DefaultMaxFileSize = 16 << 40
	// DefaultMaxHandles bounds the files kept open for the master (one
	// descriptor each): far more than a master keeps open for writing,
	// far fewer than the kernel lets a process hold under systemd.
	DefaultMaxHandles = 65536
)

// setidBits are the mode bits a slave refuses unless AllowSetuid.
const setidBits = unix.S_ISUID | unix.S_ISGID

// Policy is what this replayer holds beyond ordinary entries, as the
// slave announces it to the master (whose mount then refuses the rest).
func (r *Replayer) Policy() wire.Policy {
	p := wire.Policy{MaxFileSize: r.maxFileSize}
	if r.allowSetuid {
		p.Flags |= wire.PolicySetid
	}
	if r.allowDevices {
		p.Flags |= wire.PolicyDevices
	}
	if r.chown {
		p.Flags |= wire.PolicyPrivXattrs
	}
	return p
}

// checkMode refuses a mode with setuid or setgid on an object of type typ
// (S_IF* bits), unless the slave allows them. On a directory the bits grant
// no privilege (setgid only makes new entries inherit its group, and is
// common in shared group directories; Linux ignores setuid there), so they
// are always allowed.
func (r *Replayer) checkMode(typ, mode uint32) error {
	if r.allowSetuid || typ == unix.S_IFDIR {
		return nil
	}
	bits := mode & setidBits
	if bits == 0 {
		return nil
	}
	which := "setuid"
	switch {
	case bits == unix.S_ISGID:
		which = "setgid"
	case bits == setidBits:
		which = "setuid and setgid"
	}
	return fmt.Errorf("%w: mode %#o on a %s has the %s bit (this slave does not replicate set-id files: see --allow-setuid)",
		ErrPolicy, mode&0o7777, typeName(typ), which)
}

// checkXattr refuses an xattr the slave does not hold. user.* and
// security.* are allowed, except security.capability (file capabilities
// grant privileges as setuid does) without AllowSetuid. trusted.* (needs
// CAP_SYS_ADMIN) and POSIX ACLs (they name uids and gids, like owners) only
// when the slave applies owners (it runs as root). Every other namespace
// (other system.* attributes, filesystem-private ones) is refused.
func (r *Replayer) checkXattr(name string) error {
	switch {
	case name == capXattr:
		if r.allowSetuid {
			return nil
		}
		return fmt.Errorf("%w: xattr %q grants file capabilities (this slave does not replicate them: see --allow-setuid)", ErrPolicy, name)
	case strings.HasPrefix(name, "user."), strings.HasPrefix(name, "security."):
		return nil
	case strings.HasPrefix(name, "trusted."),
		name == "system.posix_acl_access", name == "system.posix_acl_default":
		if r.chown {
			return nil
		}
		return fmt.Errorf("%w: xattr %q: only a slave running as root holds trusted.* xattrs and POSIX ACLs", ErrPolicy, name)
	}
	return fmt.Errorf("%w: xattr %q: namespace not replicated (user.*, security.*, and as root trusted.* and POSIX ACLs)", ErrPolicy, name)
}

// checkEnd refuses a size, or the end of a range at off of n bytes,
// beyond MaxFileSize. off and n are never negative (the codec reads them
// as 63-bit values).
func (r *Replayer) checkEnd(what string, off, n uint64) error {
	if off > r.maxFileSize || n > r.maxFileSize-off {
		return fmt.Errorf("%w: %s ends at %d, beyond the largest file this slave accepts (%d bytes: see --max-file-size)",
			ErrPolicy, what, off+n, r.maxFileSize)
	}
	return nil
}

// checkNewHandle refuses a handle that would bring the open handles beyond
// MaxHandles. A handle id already open is reused, not added.
func (r *Replayer) checkNewHandle(h uint64) error {
	if h == 0 {
		return nil
	}
	if _, open := r.handles[h]; open || len(r.handles) < r.maxHandles {
		return nil
	}
	return fmt.Errorf("%w: handle %d would be open file number %d; this slave keeps at most %d open (see --max-handles)",
		wire.ErrLimit, h, len(r.handles)+1, r.maxHandles)
}

// checkOp refuses, before anything changes, an op the slave does not
// apply whatever its tree holds. Modes of Setattr need the target's type
// and are checked in applySetattr, before its first change. Its errors
// are refusals only (wire.ErrRefused, wire.ErrLimit), never a tree that
// differs: tolerant mode skips those of policy and bounds, and no more.
func (r *Replayer) checkOp(op wire.Op) error {
	switch o := op.(type) {
	case *wire.Create:
		if err := r.checkNewHandle(o.Handle); err != nil {
			return err
		}
		if err := r.checkMode(unix.S_IFREG, o.Mode); err != nil {
			return err
		}
		return r.checkNotSetid("create over", o.Path)
	case *wire.Open:
		if err := r.checkNewHandle(o.Handle); err != nil {
			return err
		}
		return r.checkNotSetid("open for writing", o.Path)
	case *wire.Mkdir:
		return r.checkMode(unix.S_IFDIR, o.Mode)
	case *wire.Mknod:
		typ, err := r.mknodType(o.Mode)
		if err != nil {
			return err
		}
		return r.checkMode(typ, o.Mode)
	case *wire.Write:
		return r.checkEnd("write", uint64(o.Off), uint64(len(o.Data)))
	case *wire.Fallocate:
		return r.checkEnd("fallocate", uint64(o.Off), uint64(o.Len))
	case *wire.CopyRange:
		return r.checkEnd("copy", uint64(o.Off), uint64(o.Len))
	case *wire.Setattr:
		if o.Valid&wire.SetSize != 0 {
			return r.checkEnd("truncate", o.Size, 0)
		}
	case *wire.Setxattr:
		return r.checkXattr(o.Name)
	}
	return nil
}

// mknodType returns the file type Mknod makes for mode (zero means a
// regular file, as in mknod(2)), refusing a device node unless the slave
// allows them: a device in the replica would let anyone who can open it
// read or write that device on the slave's host, unless the replica is
// mounted nodev.
func (r *Replayer) mknodType(mode uint32) (uint32, error) {
	switch typ := mode & unix.S_IFMT; typ {
	case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFREG:
		return typ, nil
	case 0:
		return unix.S_IFREG, nil
	case unix.S_IFCHR, unix.S_IFBLK:
		if r.allowDevices {
			return typ, nil
		}
		return 0, fmt.Errorf("%w: mknod of a %s (this slave does not replicate device nodes: see --allow-devices)", ErrPolicy, typeName(mode))
	}
	return 0, fmt.Errorf("%w: mknod of a %s", wire.ErrRefused, typeName(mode))
}

// checkNotSetid refuses to open for writing (or create over) a regular
// file that already has set-id bits, unless the slave allows them: a
// master could otherwise give such a file (left by a run with
// --allow-setuid, or by a seeded copy) its own contents, and a slave
// running as root keeps the bits through the write (CAP_FSETID). Writes
// go through handles, so refusing the open covers them. A missing file
// is no concern here: the op creates it with a checked mode.
func (r *Replayer) checkNotSetid(what, path string) error {
	if r.allowSetuid {
		return nil
	}
	d, name, err := r.lookup(path, false)
	if err != nil {
		return nil // the op itself fails, or is tolerated, as it would
	}
	defer d.close()
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&setidBits != 0 {
		return fmt.Errorf("%w: %s %q, which has mode %#o: a set-id file (this slave does not replicate set-id files: see --allow-setuid)",
			ErrPolicy, what, path, st.Mode&0o7777)
	}
	return nil
}

// checkSetattrMode refuses a Setattr's set-id mode on t, whose type it
// reads first.
func (r *Replayer) checkSetattrMode(t target, mode uint32) error {
	if r.allowSetuid || mode&setidBits == 0 {
		return nil
	}
	var st unix.Stat_t
	flags := t.flags()
	if err := unix.Fstatat(t.fd, t.name, &st, flags); err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	return r.checkMode(st.Mode&unix.S_IFMT, mode)
}

// withhold applies the slave's policy to a pass's item: an entry the slave
// does not hold at all (a device, a set-id file, a file past the size
// bound) is left out, so the pass removes what the slave had under its
// name; an xattr it does not hold is left out of the entry's (or the
// directory's) own. Each is reported as a difference, in a Verify pass
// too. It returns nil when x is held in full, else a copy without what is
// left out.
func (r *Replayer) withhold(x *wire.ResyncDir, d *diffs) *wire.ResyncDir {
	var out *wire.ResyncDir
	copied := func() *wire.ResyncDir {
		if out == nil {
			c := *x
			out = &c
		}
		return out
	}
	for i, e := range x.Entries {
		path := joinPath(x.Path, e.Name)
		if err := r.checkEntryPolicy(e.Kind, e.Attr); err != nil {
			d.add(path, "%s", leftOutReason(err))
			if out == nil {
				copied().Entries = slices.Clone(x.Entries[:i])
			}
			continue
		}
		if xs, ok := r.heldXattrs(path, e.Xattrs, d); !ok {
			e.Xattrs = xs
			if out == nil {
				copied().Entries = slices.Clone(x.Entries[:i])
			}
		}
		if out != nil {
			out.Entries = append(out.Entries, e)
		}
	}
	if x.Final {
		if xs, ok := r.heldXattrs(x.Path, x.Xattrs, d); !ok {
			copied().Xattrs = xs
		}
	}
	return out
}

// heldXattrs returns the xattrs of xs the slave holds, reporting the
// others; ok says all are held (xs is then returned as it is).
func (r *Replayer) heldXattrs(path string, xs []wire.Xattr, d *diffs) ([]wire.Xattr, bool) {
	var held []wire.Xattr
	for i, x := range xs {
		if err := r.checkXattr(x.Name); err != nil {
			if held == nil {
				held = slices.Clone(xs[:i])
			}
			d.add(path, "%s", leftOutReason(err))
			continue
		}
		if held != nil {
			held = append(held, x)
		}
	}
	if held == nil {
		return xs, true
	}
	return held, false
}

// checkEntryPolicy refuses an entry of a pass the slave does not hold at
// all: a device, a set-id mode on anything but a directory, a file past
// the size bound. (Xattrs are left out one by one: heldXattrs.)
func (r *Replayer) checkEntryPolicy(kind uint8, a wire.Attr) error {
	typ, _ := kindType(kind)
	if wire.IsDevice(kind) && !r.allowDevices {
		return fmt.Errorf("%w: a %s (this slave does not replicate device nodes: see --allow-devices)", ErrPolicy, typeName(typ))
	}
	if kind != wire.KindSymlink {
		if err := r.checkMode(typ, a.Mode); err != nil {
			return err
		}
	}
	if kind == wire.KindFile {
		return r.checkEnd("file size", a.Size, 0)
	}
	return nil
}

// leftOutReason is a policy refusal as a difference reports it.
func leftOutReason(err error) string {
	return "left out by this slave's policy: " + strings.TrimPrefix(err.Error(), ErrPolicy.Error()+": ")
}
