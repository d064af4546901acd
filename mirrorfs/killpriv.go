package mirrorfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Killing privileges (FUSE_HANDLE_KILLPRIV_V2).
//
// Without that capability the kernel asks GETXATTR(security.capability)
// before every write(2) (file_remove_privs, through
// security_inode_need_killpriv), one round trip per write. With it, fuse
// sets SB_NOSEC, so the VFS checks a file once and marks it S_NOSEC until
// its attributes are next refreshed, and the filesystem promises to clear
// privileges itself, as the Linux VFS does (include/uapi/linux/fuse.h):
//
//   - WRITE with WRITE_KILL_SUIDGID, SETATTR of the size with
//     FATTR_KILL_SUIDGID, OPEN or CREATE with O_TRUNC and OPEN_KILL_SUIDGID:
//     the caller lacks CAP_FSETID, so clear S_ISUID, and S_ISGID when
//     S_IXGRP is set or the caller is not in the file's group (as the VFS
//     decides for every filesystem: setattr_should_drop_sgid).
//   - security.capability goes on every write and truncate, whoever the
//     caller (cap_inode_killpriv does not look at the caller).
//   - chown: the daemon's own chown of the backing file already clears
//     them as the VFS does (root is not exempt there), the kernel sends the
//     cleared mode in the same SETATTR and removes security.capability with
//     a REMOVEXATTR of its own, so nothing is left to do.
//
// The daemon runs as root (CAP_FSETID): its own pwrite or ftruncate of the
// backing file clears nothing, so this file must.
//
// Every bit cleared is replicated as the op the master would have sent had
// the kernel cleared it through SETATTR (mode) or REMOVEXATTR: they are
// applied with node.setattr and node.Removexattr, under the exclusive
// namespace lock, numbered before the write, truncate or open they precede.
//
// Cost. A write must not pay a syscall to learn that there is nothing to
// kill. node.privs caches, per inode, whether it has S_ISUID, S_ISGID (with
// or without S_IXGRP), or security.capability. It is read at every open for writing
// (one fstat and one fgetxattr per open, not per write; a file the mount
// creates needs neither) and kept up to date by every op through the mount
// that can change it (setattr, setxattr, removexattr, and the killing
// itself), all of which run under the exclusive namespace lock. Nothing
// else changes the backing dir (applications write through the mount only:
// docs/design.md, Processes and packages), so a write, which holds the
// shared lock, can trust the cache: only when it says something may need
// killing does the write retake the lock exclusively and look at the file.

// capXattr is the file capability attribute (linux/xattr.h XATTR_NAME_CAPS).
const capXattr = "security.capability"

// privs bits (node.privs). 0 means unknown.
const (
	privKnown uint32 = 1 << iota
	privSUID         // S_ISUID
	privSGIDX        // S_ISGID with S_IXGRP
	privCap          // security.capability is set
	privSGID         // S_ISGID without S_IXGRP
)

// privBits describes a file of mode with or without a file capability.
func privBits(mode uint32, cap bool) uint32 {
	b := privKnown
	if mode&syscall.S_ISUID != 0 {
		b |= privSUID
	}
	switch mode & (syscall.S_ISGID | syscall.S_IXGRP) {
	case syscall.S_ISGID | syscall.S_IXGRP:
		b |= privSGIDX
	case syscall.S_ISGID:
		b |= privSGID
	}
	if cap {
		b |= privCap
	}
	return b
}

// mayKill reports whether a write or truncate may have privileges to
// clear: the state is unknown, or a capability is set, or set-id bits are
// set and the caller lacks CAP_FSETID (kill, the request's caller, is not
// nil).
func (n *node) mayKill(kill *fuse.Caller) bool {
	p := n.privs.Load()
	return p&privKnown == 0 || p&privCap != 0 || kill != nil && p&(privSUID|privSGIDX|privSGID) != 0
}

// loadPrivs reads n's privilege state through t. Called at every open for
// writing, under the exclusive namespace lock.
func (n *node) loadPrivs(t attrTarget) error {
	st, err := t.stat()
	if err != nil {
		return err
	}
	cap, err := t.hasCap()
	if err != nil {
		return err
	}
	n.privs.Store(privBits(st.Mode, cap))
	return nil
}

// killPrivs clears what a write or truncate through t must clear (see the
// top of this file): security.capability always, and the set-id bits
// killedMode drops when kill (the caller, who lacks CAP_FSETID) is not
// nil. Each change is made and replicated as a SETATTR or REMOVEXATTR
// would be. The caller holds the exclusive namespace lock.
func (n *node) killPrivs(t attrTarget, kill *fuse.Caller) error {
	st, err := t.stat()
	if err != nil {
		return err
	}
	cap, err := t.hasCap()
	if err != nil {
		return err
	}
	mode := killedMode(st.Mode&0o7777, st.Gid, kill)
	if mode != st.Mode&0o7777 {
		in := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_MODE, Mode: mode}}
		if err := n.setattr(nil, in, &fuse.AttrOut{}); err != nil {
			return fmt.Errorf("clear set-id bits: %w", err)
		}
	}
	if cap {
		// ENODATA: gone already (the kernel may have removed it with a
		// REMOVEXATTR of its own).
		if errno := n.Removexattr(context.Background(), capXattr); errno != 0 && errno != syscall.ENODATA {
			return fmt.Errorf("remove %s: %w", capXattr, errno)
		}
	}
	n.privs.Store(privBits(mode, false))
	return nil
}

// killPrivsNamed is killPrivs for a file that CREATE opened (with O_TRUNC)
// under rel, whose node is not in go-fuse's tree yet (the bridge adds it
// after Create returns): the changes go through fd and are replicated
// under rel, as SETATTR and REMOVEXATTR of that path would be. It returns
// the privilege state afterwards.
func (m *mirror) killPrivsNamed(fd int, rel string, kill *fuse.Caller) (uint32, error) {
	st, err := fstat(fd)
	if err != nil {
		return 0, err
	}
	cap, err := fdTarget(fd).hasCap()
	if err != nil {
		return 0, err
	}
	mode := killedMode(st.Mode&0o7777, st.Gid, kill)
	if mode != st.Mode&0o7777 {
		if err := syscall.Fchmod(fd, mode); err != nil {
			return 0, fmt.Errorf("clear set-id bits: %w", err)
		}
		if st, err = fstat(fd); err != nil {
			return 0, err
		}
		m.emit(&wire.Setattr{
			Path:  rel,
			Valid: wire.SetMode,
			Mode:  st.Mode & 0o7777,
			Uid:   st.Uid,
			Gid:   st.Gid,
			Atime: omitTime,
			Mtime: wireTime(st.Mtim),
		})
	}
	if cap {
		err := unix.Fremovexattr(fd, capXattr)
		switch {
		case err == nil:
			m.emit(&wire.Removexattr{Path: rel, Name: capXattr})
		case !errors.Is(err, unix.ENODATA):
			return 0, fmt.Errorf("remove %s: %w", capXattr, err)
		}
	}
	return privBits(mode, false), nil
}

// hasCap reports whether the open file has a file capability.
func (fd fdTarget) hasCap() (bool, error) {
	_, err := unix.Fgetxattr(int(fd), capXattr, nil)
	return xattrPresent(err)
}

// hasCap reports whether the path (not following a final symlink) has a
// file capability.
func (t pathTarget) hasCap() (bool, error) {
	_, err := unix.Lgetxattr(t.a.procPath(), capXattr, nil)
	return xattrPresent(err)
}

// xattrPresent maps the error of a getxattr(2) size probe: ENODATA, or a
// backing filesystem without xattrs, means absent.
func xattrPresent(err error) (bool, error) {
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.EOPNOTSUPP):
		return false, nil
	}
	return false, fmt.Errorf("getxattr %s: %w", capXattr, err)
}

// afterSetattr keeps n.privs in step with a setattr through the mount
// (mode is the file's mode afterwards). A chown may have removed a file
// capability: the state is then read again at the next write.
func (n *node) afterSetattr(valid uint32, mode uint32) {
	switch {
	case valid&(fuse.FATTR_UID|fuse.FATTR_GID) != 0:
		n.privs.Store(0)
	case valid&fuse.FATTR_MODE != 0:
		if p := n.privs.Load(); p&privKnown != 0 {
			n.privs.Store(privBits(mode, p&privCap != 0))
		}
	}
}

// killedMode is the mode of a file of group gid after a write, truncate
// or O_TRUNC open by kill, a caller without CAP_FSETID (nil: none):
// set-uid goes, and set-gid with it when group-exec is set or the caller
// is not in the file's group, as the Linux VFS decides
// (setattr_should_drop_sgid).
func killedMode(mode, gid uint32, kill *fuse.Caller) uint32 {
	if kill == nil {
		return mode
	}
	mode &^= syscall.S_ISUID
	if mode&syscall.S_ISGID != 0 && (mode&syscall.S_IXGRP != 0 || !callerInGroup(kill, gid)) {
		mode &^= syscall.S_ISGID
	}
	return mode
}

// callerInGroup reports whether the caller of a request is in group gid:
// its own group, or one of its supplementary groups, which FUSE does not
// pass along and /proc/<pid>/status lists. A caller whose groups cannot be
// read (it has exited) counts by its own group alone.
func callerInGroup(c *fuse.Caller, gid uint32) bool {
	if c.Gid == gid {
		return true
	}
	data, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(c.Pid), 10) + "/status")
	if err != nil || c.Pid == 0 {
		return false
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		groups, ok := strings.CutPrefix(line, "Groups:")
		if !ok {
			continue
		}
		for g := range strings.FieldsSeq(groups) {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil && uint32(n) == gid {
				return true
			}
		}
		return false
	}
	return false
}
