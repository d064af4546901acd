package mirrorfs

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// The walk (step 2 of a pass). Each directory is listed under the
// namespace lock held shared: no namespace op, setattr, xattr op or
// writable open runs meanwhile, writes do (the listing locks the write
// locks of the files open for writing before it reads their attributes
// again and emits). Directories are walked depth-first in sorted-name
// order; the watch holds what the walk will still list (its plan), which
// the rules for live ops consult (resync_watch.go).
//
// A directory whose entries do not fit in one item is listed in several,
// each under its own lock (the reservation for the next one is made
// without any lock held: a slow slave must not stall the mount's
// namespace ops). Its sorted names are read once, with the first item, and
// held until the last; names added meanwhile are walked again later
// (watch.addedIn).

// maxRelists bounds how often one directory's listing in several items
// starts over because another directory took its path.
const maxRelists = 8

// dirList is a directory being listed.
type dirList struct {
	dir     string
	only    []string // walk beneath these subdirectories alone (nil: all)
	id      uint64   // DirID, 0 until the first item
	key     fileKey  // the directory, checked at every item after the first
	names   []string // sorted, read with the first item
	next    int      // names[next:] are still to be listed
	subdirs []string
}

// dirState is a directory whose Final item was emitted.
type dirState struct {
	path    string
	finalAt uint64 // p.items when its Final item was emitted
}

// walk lists root, then walks depth-first beneath it: into every
// subdirectory, or (a batch of pending roots) only into those named in
// only. The watch holds the walk's plan (what it will still list), which
// the rules for live ops consult.
func (p *pass) walk(ctx context.Context, root string, only []string) error {
	defer p.w.endWalk()
	dir := root
	for {
		if p.w.needsRestart() {
			return errRestart
		}
		if err := p.listDir(ctx, dir, only); err != nil {
			return err
		}
		only = nil
		next, ok := p.w.nextDir()
		if !ok {
			return nil
		}
		dir = next
	}
}

// listDir lists dir and emits its items. A directory that is gone
// (renamed, removed, not a directory any more) is skipped: wherever it is
// now, the watch covered it when it moved. With only, the walk goes on
// beneath those subdirectories alone.
func (p *pass) listDir(ctx context.Context, dir string, only []string) error {
	// Bound what is outstanding before starting another directory, as
	// long as waiting can help.
	if err := p.waitOutstanding(ctx); err != nil {
		return err
	}
	want, err := p.estimate(dir)
	if err != nil {
		return err
	}
	l := &dirList{dir: dir, only: only}
	restarts := 0
	for attempt := 0; ; attempt++ {
		if err := p.reserve(ctx, want); err != nil {
			return err
		}
		p.mnt.rlockTree()
		need, final, gone, err := p.listItem(l, want, attempt)
		replaced := gone && l.id != 0
		switch {
		case replaced && restarts < maxRelists:
			// Listed in several items, and another directory took the
			// path in between (or it went away): the watch counts on
			// this path being listed, so list it again from the start,
			// under a new DirID (the slave never sees the old one's
			// Final, so it removes nothing on its account).
			p.w.relisting()
		case replaced:
			// Keeps being replaced: a pending root lists it later.
			p.w.gone()
			p.w.add(dir)
		case gone:
			p.w.gone()
		}
		p.mnt.runlockTree()
		switch {
		case err != nil:
			p.refund(want)
			return err
		case replaced && restarts < maxRelists:
			restarts++
			p.refund(want)
			l = &dirList{dir: dir, only: only}
			attempt = -1
			continue
		case gone:
			p.refund(want)
			return nil
		case need > 0:
			p.refund(want)
			want = need
			continue
		case final:
			if p.walkHook != nil {
				p.walkHook(dir)
			}
			return nil
		}
		if p.chunkHook != nil {
			p.chunkHook(dir)
		}
		// A large directory holds its files until the slave answers
		// each item (with descriptors, on a filesystem without file
		// handles): bound them between items too.
		if err := p.waitOutstanding(ctx); err != nil {
			return err
		}
		want = maxDirItem + p.handlesSlack()
	}
}

// waitOutstanding waits until the files held for the slave's answers are
// within bounds, as long as waiting can help (answers are still to come).
func (p *pass) waitOutstanding(ctx context.Context) error {
	return p.waitFor(ctx, func() bool {
		return (len(p.byID) <= maxOutstanding && p.fds <= maxFds) ||
			(p.waiting == 0 && p.busy == 0 && len(p.sendq) == 0)
	})
}

// handlesSlack is room reserved next to a ResyncDir for the ResyncHandles
// that rebinds the handles open on its files (Rebase only).
func (p *pass) handlesSlack() int64 {
	if !p.o.Rebase {
		return 0
	}
	return sizeHandlesHead + 64*sizeHandleRef(strings.Repeat("x", 256))
}

// estimate guesses the size of a directory's first item from its names,
// read without any lock. Whether the directory is there is decided under
// the lock only (the watch counts on it being listed until then).
func (p *pass) estimate(dir string) (int64, error) {
	want := sizeDirHead(dir, nil) + 1024 + p.handlesSlack()
	fd, err := p.openDir(dir)
	if err != nil {
		if isGone(err) {
			return want, nil
		}
		return 0, err
	}
	defer unix.Close(fd)
	names, err := readNames(fd)
	if err != nil {
		return 0, fmt.Errorf("mirrorfs: resync: read directory %q: %w", dir, err)
	}
	for i, name := range names {
		if i == p.maxEntries() {
			break
		}
		want += sizeString(name) + 1 + sizeAttr + 4*sizeVarint
	}
	return min(want, maxDirItem+p.handlesSlack()), nil
}

// maxEntries is the most entries one ResyncDir carries.
func (p *pass) maxEntries() int {
	if p.maxEnt > 0 {
		return p.maxEnt
	}
	return wire.MaxResyncEntries
}

// listItem builds and emits the next item of l within want reserved
// bytes; the caller holds the namespace lock shared. need > 0 asks for a
// larger reservation first; final says the Final item went out; gone that
// the directory went away.
func (p *pass) listItem(l *dirList, want int64, attempt int) (need int64, final, gone bool, err error) {
	fd, err := p.openDir(l.dir)
	if err != nil {
		if isGone(err) {
			return 0, false, true, nil
		}
		return 0, false, false, err
	}
	defer unix.Close(fd)
	var own unix.Stat_t
	if err := unix.Fstat(fd, &own); err != nil {
		return 0, false, false, fmt.Errorf("mirrorfs: resync: stat directory %q: %w", l.dir, err)
	}
	first := l.id == 0
	if first {
		l.key = fileKey{dev: own.Dev, ino: own.Ino}
		names, err := readNames(fd)
		if err != nil {
			return 0, false, false, fmt.Errorf("mirrorfs: resync: read directory %q: %w", l.dir, err)
		}
		slices.Sort(names)
		l.names = names
	} else if (fileKey{dev: own.Dev, ino: own.Ino}) != l.key {
		return 0, false, true, nil // renamed away and replaced
	}
	ownX, err := p.xattrs(l.dir, func(b []byte) (int, error) { return unix.Flistxattr(fd, b) },
		func(n string, b []byte) (int, error) { return unix.Fgetxattr(fd, n, b) })
	if err != nil {
		return 0, false, false, err
	}

	// Read entries while they fit: in the item (maxDirItem,
	// MaxResyncEntries) and, with the ResyncHandles that rebinds handles,
	// in want. The directory's own xattrs go in the Final item only.
	head := sizeDirHead(l.dir, nil)
	ownSize := sizeDirHead(l.dir, ownX) - head
	size, hsize := head, int64(0)
	var reads []entryRead
	var idx []int   // names index of each read
	var hss []int64 // handles size of each read
	i := l.next
	for i < len(l.names) && len(reads) < p.maxEntries() {
		r, skip, err := p.readEntry(fd, l.dir, l.names[i])
		if err != nil {
			return 0, false, false, err
		}
		if skip {
			i++
			continue
		}
		es := sizeEntry(&r.e)
		var hs int64
		if p.o.Rebase && r.e.Kind == wire.KindFile {
			if n := len(p.mnt.handlesOf(r.key)); n > 0 {
				hs = int64(n) * sizeHandleRef(childPath(l.dir, r.e.Name))
				if hsize == 0 {
					hs += sizeHandlesHead
				}
			}
		}
		if size+es > maxDirItem || size+es+hsize+hs > want {
			if len(reads) == 0 {
				// Not even one entry fits the reservation (an entry
				// always fits an item: maxEntryXattrs).
				return size + es + hsize + hs, false, false, nil
			}
			break
		}
		reads, idx, hss = append(reads, r), append(idx, i), append(hss, hs)
		size += es
		hsize += hs
		i++
	}
	final = i == len(l.names)
	for final && (size+ownSize > maxDirItem || size+ownSize+hsize > want) {
		if len(reads) == 0 {
			return size + ownSize + hsize, false, false, nil
		}
		// The Final item must carry the directory's own xattrs: leave
		// the last entries to it.
		k := len(reads) - 1
		size -= sizeEntry(&reads[k].e)
		hsize -= hss[k]
		i = idx[k]
		reads, idx, hss = reads[:k], idx[:k], hss[:k]
		final = false
	}
	if final {
		size += ownSize
	}
	if first && !final && attempt == 0 && len(l.names) <= p.maxEntries() && want < maxDirItem+p.handlesSlack() {
		// It may fit in one item with a larger reservation: one item is
		// better than several (no names added meanwhile to walk again).
		return maxDirItem + p.handlesSlack(), false, false, nil
	}
	if err := p.commit(l, fd, reads, own, ownX, first, final, size, want-size); err != nil {
		return 0, false, false, err
	}
	l.next = i
	return 0, final, false, nil
}

// commit assigns ids to the entries read, emits the item (and the
// ResyncHandles rebinding the handles open on its files) and records what
// the replies will refer to. The namespace lock is held shared. On error
// nothing was emitted.
func (p *pass) commit(l *dirList, fd int, reads []entryRead, own unix.Stat_t, ownX []wire.Xattr, first, final bool, size, rest int64) error {
	// Files open for writing may be written right now: lock them, then
	// read their attributes again, so the item holds them as of its
	// position.
	var keys []fileKey
	for _, r := range reads {
		if r.e.Kind == wire.KindFile {
			keys = append(keys, r.key)
		}
	}
	held := p.mnt.holdWriters(keys)
	defer held.unlock()

	p.mu.Lock()
	p.items++
	at := p.items
	p.mu.Unlock()

	var refs []wire.HandleRef
	var newFiles []*fileState
	for k := range reads {
		r := &reads[k]
		if r.e.Kind != wire.KindFile {
			continue
		}
		path := childPath(l.dir, r.e.Name)
		if p.mnt.written(r.key) {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, r.e.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Ino == r.st.Ino && st.Dev == r.st.Dev {
				r.st = st
				r.e.Attr = entryAttr(&st)
			}
			if p.o.Rebase {
				for _, h := range held.handlesOf(r.key) {
					refs = append(refs, wire.HandleRef{Handle: h, Path: path})
				}
			}
		}
		f, err := p.fileEntry(fd, path, r, at)
		if err != nil {
			for _, f := range newFiles {
				f.release()
			}
			return err
		}
		if f != nil {
			p.forceCompare(r)
			newFiles = append(newFiles, f)
		}
	}

	p.mu.Lock()
	if l.id == 0 {
		p.nextDir++
		l.id = p.nextDir
	}
	for _, f := range newFiles {
		p.byID[f.id] = f
		p.fifo = append(p.fifo, f)
		if f.ident.fd >= 0 {
			p.fds++
		}
	}
	if final {
		p.dirByID[l.id] = &dirState{path: l.dir, finalAt: at}
	} else {
		p.parts[l.id] = append(p.parts[l.id], at)
	}
	p.waiting++
	p.notifyLocked()
	p.mu.Unlock()

	item := &wire.ResyncDir{Pass: p.o.Pass, DirID: l.id, Path: l.dir, Final: final}
	item.Entries = make([]wire.Entry, 0, len(reads))
	for _, r := range reads {
		item.Entries = append(item.Entries, r.e)
		if r.e.Kind == wire.KindDir {
			l.subdirs = append(l.subdirs, r.e.Name)
		}
	}
	if final {
		item.Attr = entryAttr(&own)
		item.Xattrs = ownX
	}
	p.emit(item, size)
	if len(refs) > 0 {
		slices.SortFunc(refs, func(a, b wire.HandleRef) int { return cmp.Compare(a.Handle, b.Handle) })
		used, hs := p.emitHandles(refs)
		rest -= used
		p.w.rebound(hs)
	}
	p.refund(rest)

	p.entries.Add(uint64(len(reads)))
	p.files.Add(uint64(len(newFiles)))
	if !final && len(reads) > 0 {
		p.w.emittedUpTo(reads[len(reads)-1].e.Name)
	}
	if final {
		p.dirs.Add(1)
		subs := l.subdirs
		if l.only != nil {
			subs = slices.DeleteFunc(subs, func(n string) bool { return !slices.Contains(l.only, n) })
		}
		p.w.listed(subs)
	}
	return nil
}

// emitHandles emits refs as ResyncHandles items (MaxResyncHandles each),
// and returns the bytes they used and the handles they name.
func (p *pass) emitHandles(refs []wire.HandleRef) (used int64, hs []uint64) {
	for i := 0; i < len(refs); i += wire.MaxResyncHandles {
		chunk := refs[i:min(len(refs), i+wire.MaxResyncHandles)]
		n := int64(sizeHandlesHead)
		for _, r := range chunk {
			n += sizeHandleRef(r.Path)
		}
		p.emit(&wire.ResyncHandles{Pass: p.o.Pass, Handles: chunk}, n)
		used += n
	}
	hs = make([]uint64, len(refs))
	for i, r := range refs {
		hs[i] = r.Handle
	}
	return used, hs
}
