package replayer

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// One entry of a ResyncDir: its kind, its contents (a regular file's, by
// hashes the master answers with ResyncData), hard links, then attributes
// and xattrs (resync_attr.go). A Verify pass compares and reports; a
// repair pass makes the entry the master's.

// syncEntry makes one entry what the master has.
func (r *Replayer) syncEntry(p *resyncPass, pd *passDir, d dir, e wire.Entry, reply func(wire.ResyncReply) error) error {
	st, err := lstatAt(d, e.Name)
	exists := err == nil
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if e.Kind == wire.KindFile && e.FileID == 0 {
		return r.syncLaterLink(p, pd, d, e, st, exists)
	}
	exists, goOn, err := r.clearEntry(p, pd, d, e, st, exists)
	if err != nil || !goOn {
		return err
	}
	switch e.Kind {
	case wire.KindDir:
		// Its own ResyncDir sets its attributes and fills it.
		return makeDir(d, e.Name, exists)
	case wire.KindFile:
		return r.syncFile(p, pd, d, e, st, exists, reply)
	case wire.KindSymlink:
		exists, err = r.syncSymlink(p, pd, d, e, exists)
	case wire.KindFifo, wire.KindSocket, wire.KindCharDev, wire.KindBlkDev:
		// Devices only with AllowDevices (checkEntryPolicy).
		err = makeSpecial(d, e, exists)
	}
	if err != nil {
		return err
	}
	return r.fixEntryAttrs(p, pd, d, e, st, exists)
}

// clearEntry reports what the slave has under e's name if it is missing,
// of another kind, or another device, and in a repair pass removes the
// wrong one. It returns whether the name still exists, and whether to go
// on making the entry (a Verify pass stops at such a difference).
func (r *Replayer) clearEntry(p *resyncPass, pd *passDir, d dir, e wire.Entry, st unix.Stat_t, exists bool) (stillExists, goOn bool, err error) {
	path := joinPath(pd.path, e.Name)
	want, _ := kindType(e.Kind)
	switch {
	case exists && st.Mode&unix.S_IFMT != want:
		pd.diffs.add(path, "kind %s (master %s)", typeName(st.Mode), typeName(want))
	case exists && wire.IsDevice(e.Kind) && st.Rdev != e.Rdev:
		pd.diffs.add(path, "device number %#x (master %#x)", st.Rdev, e.Rdev)
	case !exists:
		pd.diffs.add(path, "missing")
		if p.verify {
			return false, false, nil
		}
		pd.changed = true
		return false, true, nil
	default:
		return true, true, nil
	}
	if p.verify {
		return true, false, nil
	}
	if err := r.removeAll(d.fd, e.Name, 0); err != nil {
		return true, false, err
	}
	pd.changed = true
	return false, true, nil
}

// makeDir makes a missing directory entry, mode 0700 until its own
// ResyncDir sets its attributes.
func makeDir(d dir, name string, exists bool) error {
	if exists {
		return nil
	}
	if err := unix.Mkdirat(d.fd, name, 0o700); err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	return nil
}

// syncSymlink makes the symlink entry point to the master's target,
// replacing one that points elsewhere in a repair pass. It returns
// whether the symlink it leaves was already there.
func (r *Replayer) syncSymlink(p *resyncPass, pd *passDir, d dir, e wire.Entry, exists bool) (bool, error) {
	if exists && !symlinkIs(d, e.Name, e.Target) {
		pd.diffs.add(joinPath(pd.path, e.Name), "symlink target")
		if p.verify {
			return true, nil
		}
		if err := unix.Unlinkat(d.fd, e.Name, 0); err != nil {
			return true, fmt.Errorf("remove symlink: %w", err)
		}
		exists = false
	}
	if !exists {
		// The target is opaque data, stored and never resolved.
		if err := unix.Symlinkat(e.Target, d.fd, e.Name); err != nil {
			return false, fmt.Errorf("symlink: %w", err)
		}
	}
	return exists, nil
}

// makeSpecial makes a missing fifo, socket or device node entry.
func makeSpecial(d dir, e wire.Entry, exists bool) error {
	if exists {
		return nil
	}
	typ, _ := kindType(e.Kind)
	if err := unix.Mknodat(d.fd, e.Name, typ|0o600, int(e.Rdev)); err != nil {
		return fmt.Errorf("mknod: %w", err)
	}
	return nil
}

// fixEntryAttrs gives an entry other than a directory or a regular file
// the master's attributes and xattrs; st is what it had, unless it was
// just made (!exists).
func (r *Replayer) fixEntryAttrs(p *resyncPass, pd *passDir, d dir, e wire.Entry, st unix.Stat_t, exists bool) error {
	fresh := !exists
	if fresh {
		var err error
		if st, err = lstatAt(d, e.Name); err != nil {
			return err
		}
	}
	return r.fixAttrs(&attrJob{
		path: joinPath(pd.path, e.Name), t: target{fd: d.fd, name: e.Name}, x: entryXnode(d, e.Name), st: st, fresh: fresh,
		hasMode: e.Kind != wire.KindSymlink, want: e.Attr, xattrs: e.Xattrs,
	}, p.verify, &pd.diffs)
}

// syncFile makes a regular file's name, attributes and xattrs the
// master's and, when its size or mtime differ (in a Verify pass: always),
// answers ResyncHashes for its contents.
func (r *Replayer) syncFile(p *resyncPass, pd *passDir, d dir, e wire.Entry, st unix.Stat_t, exists bool, reply func(wire.ResyncReply) error) error {
	path := joinPath(pd.path, e.Name)
	_, wasSplit := p.split[[2]uint64{st.Dev, st.Ino}]
	exists, err := r.splitHardLink(p, pd, d, e, st, exists)
	if err != nil {
		return err
	}
	fd := -1
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
	}()
	fresh := !exists
	if fresh {
		if fd, err = createFile(d, e.Name, &st); err != nil {
			return err
		}
	}
	differs := r.contentsDiffer(pd, path, e, &st, fresh, wasSplit)
	if err := r.fixAttrs(&attrJob{
		path: path, t: target{fd: d.fd, name: e.Name}, x: entryXnode(d, e.Name), st: st, fresh: fresh,
		hasMode: true, want: e.Attr, xattrs: e.Xattrs,
	}, p.verify, &pd.diffs); err != nil {
		return err
	}
	switch {
	case p.verify:
		err = r.verifyContents(p, d, e, reply)
	case differs || p.full || e.Compare:
		err = r.sendContents(p, d, e, path, &fd, reply)
	}
	if err != nil {
		return err
	}
	if e.LinkID != 0 {
		return r.keepLink(p, d, e)
	}
	return nil
}

// splitHardLink reports a file the slave links with names the master
// keeps apart (the master lists it with no LinkID) and, in a repair pass,
// unlinks it: writing to it would change them too, so a new file replaces
// it, and the master sends its contents. The inode's other names are
// checked by contents when their turn comes. It returns whether the name
// still exists.
func (r *Replayer) splitHardLink(p *resyncPass, pd *passDir, d dir, e wire.Entry, st unix.Stat_t, exists bool) (bool, error) {
	if !exists || e.LinkID != 0 || st.Nlink <= 1 {
		return exists, nil
	}
	pd.diffs.add(joinPath(pd.path, e.Name), "hard link: %d links (master 1)", st.Nlink)
	if p.verify {
		return true, nil
	}
	if len(p.split) < maxPassSplits {
		p.split[[2]uint64{st.Dev, st.Ino}] = struct{}{}
	}
	if err := unix.Unlinkat(d.fd, e.Name, 0); err != nil {
		return true, fmt.Errorf("unlink: %w", err)
	}
	pd.changed = true
	return false, nil
}

// createFile makes a new, empty regular file name in d and returns its
// fd, filling st.
func createFile(d dir, name string, st *unix.Stat_t) (int, error) {
	fd, err := unix.Openat(d.fd, name, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, fmt.Errorf("create: %w", err)
	}
	if err := unix.Fstat(fd, st); err != nil {
		return fd, fmt.Errorf("fstat: %w", err)
	}
	return fd, nil
}

// contentsDiffer reports whether a file's contents must be compared with
// the master's because its size or mtime differ, or because they cannot
// vouch for its bytes; a size that differs is reported. A new file's
// mtime is set by fixAttrs: only its size calls for data.
func (r *Replayer) contentsDiffer(pd *passDir, path string, e wire.Entry, st *unix.Stat_t, fresh, wasSplit bool) bool {
	sizeDiffers := uint64(st.Size) != e.Attr.Size
	if fresh {
		return sizeDiffers
	}
	if sizeDiffers {
		pd.diffs.add(path, "size %d (master %d)", st.Size, e.Attr.Size)
	}
	mtimeDiffers := !e.Attr.Mtime.Omit && !sameTime(st.Mtim, e.Attr.Mtime)
	// A split inode holds another file's contents; a suspect one may hold
	// stale bytes under the master's size and mtime (suspects.go).
	suspect := wasSplit || r.isSuspect(st)
	return sizeDiffers || mtimeDiffers || suspect
}

// verifyContents answers ResyncHashes of a file's contents in a Verify
// pass, which compares every file and changes none.
func (r *Replayer) verifyContents(p *resyncPass, d dir, e wire.Entry, reply func(wire.ResyncReply) error) error {
	fd, err := openNoatime(d.fd, e.Name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open: %w", refuseSymlink(err))
	}
	defer unix.Close(fd)
	if err := checkRegularFd(fd); err != nil {
		return err
	}
	return r.sendHashes(p.num, e.FileID, fd, true, reply)
}

// sendContents answers ResyncHashes of a file's contents in a repair
// pass, through *fd (opened here when it is -1), and binds the file to
// its FileID for the ResyncData and ResyncClose to come. *fd becomes -1
// when the pass owns it (or bind closed it); the caller closes it
// otherwise.
func (r *Replayer) sendContents(p *resyncPass, d dir, e wire.Entry, path string, fd *int, reply func(wire.ResyncReply) error) error {
	if _, dup := p.files[e.FileID]; dup {
		return fmt.Errorf("%w: file id %d sent twice", ErrBadResync, e.FileID)
	}
	if *fd < 0 {
		var err error
		if *fd, err = openRegular(d, e.Name, unix.O_RDWR); err != nil {
			return err
		}
	}
	if err := r.sendHashes(p.num, e.FileID, *fd, false, reply); err != nil {
		return err
	}
	if err := r.bind(p, e.FileID, *fd, path); err != nil {
		*fd = -1 // bind closed it
		return err
	}
	// Its contents are on their way: if the pass is cut short before its
	// Close, the next one must compare them.
	if err := r.suspect(p.files[e.FileID].ino); err != nil {
		return fmt.Errorf("record the file as suspect: %w", err)
	}
	*fd = -1 // the pass owns it until ResyncClose
	return nil
}

// keepLink remembers the first file of hard-link group e.LinkID, to link
// the group's later names to it.
func (r *Replayer) keepLink(p *resyncPass, d dir, e wire.Entry) error {
	if _, dup := p.links[e.LinkID]; dup {
		return fmt.Errorf("%w: link id %d has two first files", ErrBadResync, e.LinkID)
	}
	if len(p.links) >= maxPassLinks {
		if !p.linksFull {
			p.linksFull = true
			r.log.Warn("replayer: resync: too many hard-linked files in one pass: later links are reported, not made",
				"pass", p.num, "max", maxPassLinks)
		}
		return nil
	}
	if p.verify {
		st, err := lstatAt(d, e.Name)
		if err != nil {
			return err
		}
		p.links[e.LinkID] = linkRef{held: heldFile{fd: -1}, dev: st.Dev, ino: st.Ino}
		return nil
	}
	fd, err := unix.Openat(d.fd, e.Name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("keep hard link: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fmt.Errorf("keep hard link: %w", err)
	}
	p.links[e.LinkID] = linkRef{held: r.hold(p, fd, unix.O_PATH), dev: st.Dev, ino: st.Ino}
	return nil
}

// syncLaterLink makes name a hard link to the first file of its group.
func (r *Replayer) syncLaterLink(p *resyncPass, pd *passDir, d dir, e wire.Entry, st unix.Stat_t, exists bool) error {
	path := joinPath(pd.path, e.Name)
	ref, ok := p.links[e.LinkID]
	if !ok {
		pd.diffs.add(path, "hard link not checked: this pass does not know the first file of link id %d", e.LinkID)
		return nil
	}
	if exists && st.Dev == ref.dev && st.Ino == ref.ino {
		return nil
	}
	if exists {
		pd.diffs.add(path, "hard link")
	} else {
		pd.diffs.add(path, "missing")
	}
	if p.verify {
		return nil
	}
	if exists {
		if err := r.removeAll(d.fd, e.Name, 0); err != nil {
			return err
		}
	}
	pd.changed = true
	// linkat(2) of an fd needs CAP_DAC_READ_SEARCH with AT_EMPTY_PATH;
	// through its /proc magic link it does not.
	err := r.use(ref.held, func(fd int) error {
		return unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), d.fd, e.Name, unix.AT_SYMLINK_FOLLOW)
	})
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESTALE) {
		// The first file lost its last name to a live op since: the
		// master's later ops will say what this name becomes.
		pd.diffs.add(path, "hard link not made: its first file has no name any more")
		return nil
	}
	if err != nil {
		return fmt.Errorf("link: %w", err)
	}
	return nil
}
