package replayer

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// ResyncDir: make one directory's entries equal to the master's.
//
// Extras are removed range by range. The items of one DirID list the
// master's names in byte order, and item k lists every name the master
// has between the last name of item k-1 (exclusive) and its own last name
// (inclusive; the Final item: to the end), as of item k's position. So a
// name the slave has in that range and item k lacks is extra at item k's
// position, and is removed then. Waiting for the Final item to remove
// every name no item listed would be wrong: a live op between item k and
// the Final one may create, on both sides, a name in item k's range that
// neither item lists (the master had not made it yet at item k, and it
// does not belong to the Final item's range). The names of earlier items
// are kept, as wire.ResyncDir says. Entries must therefore come in strictly
// increasing byte order (Go's string order), within and across items; a
// master that sorts otherwise is refused rather than obeyed.

// passDir is a directory whose items have begun but not ended.
type passDir struct {
	path    string
	names   []string // the slave's names when the first item came, sorted
	next    int      // names[:next] lie in ranges already handled
	last    string   // the last entry name so far ("" before any)
	listed  bool     // names was read
	missing bool     // Verify: Path is not a directory here
	changed bool     // repair: the pass added or removed entries (moving the directory's mtime)
	diffs   diffs
}

// kindType maps an entry kind to its file type bits.
func kindType(kind uint8) (uint32, bool) {
	switch kind {
	case wire.KindFile:
		return unix.S_IFREG, true
	case wire.KindDir:
		return unix.S_IFDIR, true
	case wire.KindSymlink:
		return unix.S_IFLNK, true
	case wire.KindFifo:
		return unix.S_IFIFO, true
	case wire.KindSocket:
		return unix.S_IFSOCK, true
	case wire.KindCharDev:
		return unix.S_IFCHR, true
	case wire.KindBlkDev:
		return unix.S_IFBLK, true
	}
	return 0, false
}

// checkEntries checks what the decoder cannot: names are single clean
// components in strictly increasing order after last, kinds are known, a
// file has a FileID unless it is a later hard link.
func checkEntries(last string, entries []wire.Entry) error {
	if len(entries) > wire.MaxResyncEntries {
		return fmt.Errorf("%w: %d entries in one item", ErrBadResync, len(entries))
	}
	prev := last
	for _, e := range entries {
		if err := wire.CheckPath(e.Name, false); err != nil || strings.IndexByte(e.Name, '/') >= 0 {
			return fmt.Errorf("%w: entry name %q", ErrBadResync, e.Name)
		}
		if e.Name <= prev {
			return fmt.Errorf("%w: entry %q after %q: entries out of order", ErrBadResync, e.Name, prev)
		}
		prev = e.Name
		if _, ok := kindType(e.Kind); !ok {
			return fmt.Errorf("%w: entry %q of kind %d", ErrBadResync, e.Name, e.Kind)
		}
		if len(e.Xattrs) > wire.MaxResyncXattrs {
			return fmt.Errorf("%w: entry %q with %d xattrs", ErrBadResync, e.Name, len(e.Xattrs))
		}
		if e.Kind == wire.KindFile && e.FileID == 0 && e.LinkID == 0 {
			return fmt.Errorf("%w: file %q without a FileID", ErrBadResync, e.Name)
		}
		if e.Kind == wire.KindSymlink && (len(e.Target) > wire.MaxPathLen || strings.IndexByte(e.Target, 0) >= 0) {
			return fmt.Errorf("%w: symlink %q: bad target", ErrBadResync, e.Name)
		}
	}
	return nil
}

func (r *Replayer) resyncDir(p *resyncPass, x *wire.ResyncDir, reply func(wire.ResyncReply) error) error {
	if err := wire.CheckPath(x.Path, true); err != nil {
		return fmt.Errorf("%w: %w", ErrBadResync, err)
	}
	pd := p.dirs[x.DirID]
	if pd == nil {
		if len(p.dirs) >= maxPassDirs {
			return fmt.Errorf("%w: more than %d directories described in part", ErrBadResync, maxPassDirs)
		}
		pd = &passDir{path: x.Path}
	} else if pd.path != x.Path {
		return fmt.Errorf("%w: dir id %d was %q", ErrBadResync, x.DirID, pd.path)
	}
	if err := checkEntries(pd.last, x.Entries); err != nil {
		return err
	}
	if len(x.Xattrs) > wire.MaxResyncXattrs {
		return fmt.Errorf("%w: %d xattrs", ErrBadResync, len(x.Xattrs))
	}
	// What this slave does not hold is left out before the item changes
	// anything, and reported (policy.go).
	if w := r.withhold(x, &pd.diffs); w != nil {
		x = w
	}
	p.dirs[x.DirID] = pd

	d, err := r.passDirOpen(p, pd)
	if err != nil {
		return err
	}
	defer d.close()
	if !pd.missing {
		for _, e := range x.Entries {
			if err := r.dropExtras(p, pd, d, e.Name, false); err != nil {
				return err
			}
			if err := r.syncEntry(p, pd, d, e, reply); err != nil {
				return fmt.Errorf("%q: %w", joinPath(pd.path, e.Name), err)
			}
			pd.last = e.Name
		}
	}
	if !x.Final {
		return reply(&wire.ResyncDirDone{Pass: p.num, DirID: x.DirID, Part: true})
	}
	delete(p.dirs, x.DirID)
	if pd.missing {
		pd.diffs.add(pd.path, "missing")
	} else {
		if err := r.dropExtras(p, pd, d, "", true); err != nil {
			return err
		}
		if err := r.fixDirAttrs(p, pd, d, x); err != nil {
			return fmt.Errorf("directory's own attributes: %w", err)
		}
	}
	return reply(&wire.ResyncDirDone{Pass: p.num, DirID: x.DirID, Diffs: pd.diffs.done(pd.path)})
}

// passDirOpen opens the directory (making it one in a repair pass) and,
// at its first item, lists what the slave has in it.
func (r *Replayer) passDirOpen(p *resyncPass, pd *passDir) (dir, error) {
	var (
		d   dir
		err error
	)
	if p.verify {
		if pd.missing {
			return dir{}, nil
		}
		d, err = r.openDir(pd.path)
		if err != nil && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP)) {
			pd.missing = true
			return dir{}, nil
		}
	} else {
		d, err = r.ensureDir(pd.path)
	}
	if err != nil {
		return dir{}, err
	}
	if pd.listed {
		return d, nil
	}
	fd, err := openReadable(d)
	if err != nil {
		d.close()
		return dir{}, err
	}
	names, err := readNames(fd)
	unix.Close(fd)
	if err != nil {
		d.close()
		return dir{}, fmt.Errorf("list: %w", err)
	}
	slices.Sort(names)
	pd.names, pd.listed = names, true
	return d, nil
}

// dropExtras handles the slave's names up to bound (exclusive; all of
// them with all): each one still there is extra, and is removed in a
// repair pass. A name equal to bound is an entry: it is skipped.
func (r *Replayer) dropExtras(p *resyncPass, pd *passDir, d dir, bound string, all bool) error {
	for pd.next < len(pd.names) {
		n := pd.names[pd.next]
		if !all && n >= bound {
			if n == bound {
				pd.next++
			}
			return nil
		}
		pd.next++
		if _, err := lstatAt(d, n); errors.Is(err, unix.ENOENT) {
			continue // a live op removed it since the listing
		} else if err != nil {
			return fmt.Errorf("%q: %w", joinPath(pd.path, n), err)
		}
		pd.diffs.add(joinPath(pd.path, n), "extra")
		if p.verify {
			continue
		}
		if err := r.removeAll(d.fd, n, 0); err != nil {
			return fmt.Errorf("remove extra %q: %w", joinPath(pd.path, n), err)
		}
		pd.changed = true
	}
	if all {
		pd.names = nil // the listing is no longer needed
	}
	return nil
}

// syncEntry makes one entry what the master has.
func (r *Replayer) syncEntry(p *resyncPass, pd *passDir, d dir, e wire.Entry, reply func(wire.ResyncReply) error) error {
	path := joinPath(pd.path, e.Name)
	want, _ := kindType(e.Kind)
	st, err := lstatAt(d, e.Name)
	exists := err == nil
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if e.Kind == wire.KindFile && e.FileID == 0 {
		return r.syncLaterLink(p, pd, d, e, st, exists)
	}
	switch {
	case exists && st.Mode&unix.S_IFMT != want:
		pd.diffs.add(path, "kind %s (master %s)", typeName(st.Mode), typeName(want))
		if p.verify {
			return nil
		}
		if err := r.removeAll(d.fd, e.Name, 0); err != nil {
			return err
		}
		exists, pd.changed = false, true
	case exists && wire.IsDevice(e.Kind) && st.Rdev != e.Rdev:
		pd.diffs.add(path, "device number %#x (master %#x)", st.Rdev, e.Rdev)
		if p.verify {
			return nil
		}
		if err := r.removeAll(d.fd, e.Name, 0); err != nil {
			return err
		}
		exists, pd.changed = false, true
	case !exists:
		pd.diffs.add(path, "missing")
		if p.verify {
			return nil
		}
		pd.changed = true
	}
	switch e.Kind {
	case wire.KindDir:
		// Its own ResyncDir sets its attributes and fills it.
		if !exists {
			if err := unix.Mkdirat(d.fd, e.Name, 0o700); err != nil {
				return fmt.Errorf("mkdir: %w", err)
			}
		}
		return nil
	case wire.KindFile:
		return r.syncFile(p, pd, d, e, st, exists, reply)
	case wire.KindSymlink:
		if exists && !symlinkIs(d, e.Name, e.Target) {
			pd.diffs.add(path, "symlink target")
			if p.verify {
				break
			}
			if err := unix.Unlinkat(d.fd, e.Name, 0); err != nil {
				return fmt.Errorf("remove symlink: %w", err)
			}
			exists = false
		}
		if !exists {
			// The target is opaque data, stored and never resolved.
			if err := unix.Symlinkat(e.Target, d.fd, e.Name); err != nil {
				return fmt.Errorf("symlink: %w", err)
			}
		}
	case wire.KindFifo, wire.KindSocket, wire.KindCharDev, wire.KindBlkDev:
		// Devices only with AllowDevices (checkEntryPolicy).
		if !exists {
			if err := unix.Mknodat(d.fd, e.Name, want|0o600, int(e.Rdev)); err != nil {
				return fmt.Errorf("mknod: %w", err)
			}
		}
	}
	fresh := !exists
	if fresh {
		if st, err = lstatAt(d, e.Name); err != nil {
			return err
		}
	}
	return r.fixAttrs(&attrJob{
		path: path, t: target{fd: d.fd, name: e.Name}, x: entryXnode(d, e.Name), st: st, fresh: fresh,
		hasMode: e.Kind != wire.KindSymlink, want: e.Attr, xattrs: e.Xattrs,
	}, p.verify, &pd.diffs)
}

// syncFile makes a regular file's name, attributes and xattrs the
// master's and, when its size or mtime differ (in a Verify pass: always),
// answers ResyncHashes for its contents.
func (r *Replayer) syncFile(p *resyncPass, pd *passDir, d dir, e wire.Entry, st unix.Stat_t, exists bool, reply func(wire.ResyncReply) error) error {
	path := joinPath(pd.path, e.Name)
	_, wasSplit := p.split[[2]uint64{st.Dev, st.Ino}]
	if exists && e.LinkID == 0 && st.Nlink > 1 {
		// The slave links this file with names the master keeps apart.
		// Writing to it would change them too: a new file replaces it,
		// and the master sends its contents. The inode's other names are
		// checked by contents when their turn comes.
		pd.diffs.add(path, "hard link: %d links (master 1)", st.Nlink)
		if !p.verify {
			if len(p.split) < maxPassSplits {
				p.split[[2]uint64{st.Dev, st.Ino}] = struct{}{}
			}
			if err := unix.Unlinkat(d.fd, e.Name, 0); err != nil {
				return fmt.Errorf("unlink: %w", err)
			}
			exists, pd.changed = false, true
		}
	}
	fd := -1
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
	}()
	fresh := !exists
	if fresh {
		var err error
		fd, err = unix.Openat(d.fd, e.Name, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("create: %w", err)
		}
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("fstat: %w", err)
		}
	}
	sizeDiffers := uint64(st.Size) != e.Attr.Size
	// A new file's mtime is set just below; only its size calls for data.
	mtimeDiffers := !fresh && !e.Attr.Mtime.Omit && !sameTime(st.Mtim, e.Attr.Mtime)
	// A split inode holds another file's contents; a suspect one may hold
	// stale bytes under the master's size and mtime (suspects.go).
	contentsSuspect := !fresh && (wasSplit || r.isSuspect(&st))
	if sizeDiffers && !fresh {
		pd.diffs.add(path, "size %d (master %d)", st.Size, e.Attr.Size)
	}
	if err := r.fixAttrs(&attrJob{
		path: path, t: target{fd: d.fd, name: e.Name}, x: entryXnode(d, e.Name), st: st, fresh: fresh,
		hasMode: true, want: e.Attr, xattrs: e.Xattrs,
	}, p.verify, &pd.diffs); err != nil {
		return err
	}
	switch {
	case p.verify:
		var err error
		if fd, err = openNoatime(d.fd, e.Name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
			return fmt.Errorf("open: %w", refuseSymlink(err))
		}
		if err := checkRegularFd(fd); err != nil {
			return err
		}
		if err := r.sendHashes(p.num, e.FileID, fd, true, reply); err != nil {
			return err
		}
	case sizeDiffers || mtimeDiffers || contentsSuspect || p.full || e.Compare:
		if _, dup := p.files[e.FileID]; dup {
			return fmt.Errorf("%w: file id %d sent twice", ErrBadResync, e.FileID)
		}
		if fd < 0 {
			var err error
			if fd, err = openRegular(d, e.Name, unix.O_RDWR); err != nil {
				return err
			}
		}
		if err := r.sendHashes(p.num, e.FileID, fd, false, reply); err != nil {
			return err
		}
		if err := r.bind(p, e.FileID, fd, path); err != nil {
			fd = -1 // bind closed it
			return err
		}
		if !p.verify {
			// Its contents are on their way: if the pass is cut short
			// before its Close, the next one must compare them.
			if err := r.suspect(p.files[e.FileID].ino); err != nil {
				return fmt.Errorf("record the file as suspect: %w", err)
			}
		}
		fd = -1 // the pass owns it until ResyncClose
	}
	if e.LinkID != 0 {
		return r.keepLink(p, d, e)
	}
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

// fixDirAttrs sets the directory's own attributes and xattrs (Final
// item), after every change to its entries.
func (r *Replayer) fixDirAttrs(p *resyncPass, pd *passDir, d dir, x *wire.ResyncDir) error {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	rfd := r.syncFd // the root's readable fd; Resync holds mu, so Close waits
	if pd.path != "" {
		var err error
		if rfd, err = openReadable(d); err != nil {
			return err
		}
		defer unix.Close(rfd)
	}
	return r.fixAttrs(&attrJob{
		path: pd.path, t: fdTarget(d.fd), x: xnode{fd: rfd}, st: st, hasMode: true,
		quietMtime: pd.changed, want: x.Attr, xattrs: x.Xattrs,
	}, p.verify, &pd.diffs)
}
