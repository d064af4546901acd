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
	pd, err := checkDirItem(p, x)
	if err != nil {
		return err
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
		if err := r.syncEntries(p, pd, d, x.Entries, reply); err != nil {
			return err
		}
	}
	if !x.Final {
		return reply(&wire.ResyncDirDone{Pass: p.num, DirID: x.DirID, Part: true})
	}
	delete(p.dirs, x.DirID)
	if err := r.finishDir(p, pd, d, x); err != nil {
		return err
	}
	return reply(&wire.ResyncDirDone{Pass: p.num, DirID: x.DirID, Diffs: pd.diffs.done(pd.path)})
}

// checkDirItem checks what the decoder cannot of a ResyncDir, and returns
// its directory: the one its DirID began, or a new one.
func checkDirItem(p *resyncPass, x *wire.ResyncDir) (*passDir, error) {
	if err := wire.CheckPath(x.Path, true); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadResync, err)
	}
	pd := p.dirs[x.DirID]
	if pd == nil {
		if len(p.dirs) >= maxPassDirs {
			return nil, fmt.Errorf("%w: more than %d directories described in part", ErrBadResync, maxPassDirs)
		}
		pd = &passDir{path: x.Path}
	} else if pd.path != x.Path {
		return nil, fmt.Errorf("%w: dir id %d was %q", ErrBadResync, x.DirID, pd.path)
	}
	if err := checkEntries(pd.last, x.Entries); err != nil {
		return nil, err
	}
	if len(x.Xattrs) > wire.MaxResyncXattrs {
		return nil, fmt.Errorf("%w: %d xattrs", ErrBadResync, len(x.Xattrs))
	}
	return pd, nil
}

// syncEntries makes an item's entries the master's, removing first the
// extras that sort before each.
func (r *Replayer) syncEntries(p *resyncPass, pd *passDir, d dir, entries []wire.Entry, reply func(wire.ResyncReply) error) error {
	for _, e := range entries {
		if err := r.dropExtras(p, pd, d, e.Name, false); err != nil {
			return err
		}
		if err := r.syncEntry(p, pd, d, e, reply); err != nil {
			return fmt.Errorf("%q: %w", joinPath(pd.path, e.Name), err)
		}
		pd.last = e.Name
	}
	return nil
}

// finishDir ends a directory at its Final item: the extras after its
// last entry go, then its own attributes are set.
func (r *Replayer) finishDir(p *resyncPass, pd *passDir, d dir, x *wire.ResyncDir) error {
	if pd.missing {
		pd.diffs.add(pd.path, "missing")
		return nil
	}
	if err := r.dropExtras(p, pd, d, "", true); err != nil {
		return err
	}
	if err := r.fixDirAttrs(p, pd, d, x); err != nil {
		return fmt.Errorf("directory's own attributes: %w", err)
	}
	return nil
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
