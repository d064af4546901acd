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
		r := p.listLocked(l, want, attempt, restarts < maxRelists)
		if !r.emitted() {
			p.refund(want)
		}
		switch {
		case r.err != nil:
			return r.err
		case r.relist:
			restarts++
			l = &dirList{dir: dir, only: only}
			attempt = -1
			continue
		case r.gone:
			return nil
		case r.need > 0:
			want = r.need
			continue
		case r.final:
			if p.walkHook != nil {
				p.walkHook(dir)
			}
			return nil
		}
		if err := p.betweenItems(ctx, dir); err != nil {
			return err
		}
		want = maxDirItem + p.handlesSlack()
	}
}

// betweenItems runs between two items of a directory listed in several,
// outside every lock.
func (p *pass) betweenItems(ctx context.Context, dir string) error {
	if p.chunkHook != nil {
		p.chunkHook(dir)
	}
	// A large directory holds its files until the slave answers each item
	// (with descriptors, on a filesystem without file handles): bound
	// them between items too.
	return p.waitOutstanding(ctx)
}

// listed is how one attempt at an item of a listing went (listItem);
// relist says the listing starts over from its first item.
type listed struct {
	need                int64
	final, gone, relist bool
	err                 error
}

// emitted reports whether the item went out (using the reservation).
func (r listed) emitted() bool { return r.err == nil && !r.gone && r.need == 0 }

// listLocked runs listItem under the namespace lock held shared and tells
// the watch when the directory went away. mayRelist says a listing in
// several items whose path another directory took may start over.
func (p *pass) listLocked(l *dirList, want int64, attempt int, mayRelist bool) listed {
	p.mnt.rlockTree()
	defer p.mnt.runlockTree()
	var r listed
	r.need, r.final, r.gone, r.err = p.listItem(l, want, attempt)
	replaced := r.gone && l.id != 0
	switch {
	case replaced && mayRelist:
		// Listed in several items, and another directory took the path
		// in between (or it went away): the watch counts on this path
		// being listed, so list it again from the start, under a new
		// DirID (the slave never sees the old one's Final, so it
		// removes nothing on its account).
		p.w.relisting()
		r.relist = true
	case replaced:
		// Keeps being replaced: a pending root lists it later.
		p.w.gone()
		p.w.add(l.dir)
	case r.gone:
		p.w.gone()
	}
	return r
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

// dirItem is one item of a directory's listing, as listItem reads it and
// commit emits it.
type dirItem struct {
	fd    int          // the directory, open
	own   unix.Stat_t  // the directory's attributes
	ownX  []wire.Xattr // and xattrs (the Final item carries both)
	first bool         // the first item of the listing

	reads []entryRead // the entries read for it
	idx   []int       // names index of each read
	hss   []int64     // bytes of ResyncHandles each read needs
	size  int64       // bytes of the item
	hsize int64       // bytes of its ResyncHandles
	next  int         // names[next:] are left to later items
	final bool
}

// listItem builds and emits the next item of l within want reserved
// bytes; the caller holds the namespace lock shared. need > 0 asks for a
// larger reservation first; final says the Final item went out; gone that
// the directory went away.
func (p *pass) listItem(l *dirList, want int64, attempt int) (need int64, final, gone bool, err error) {
	it, gone, err := p.openListed(l)
	if gone || err != nil {
		return 0, false, gone, err
	}
	defer unix.Close(it.fd)
	if need, err := p.fill(l, it, want); need > 0 || err != nil {
		return need, false, false, err
	}
	if need := p.fitFinal(l, it, want); need > 0 {
		return need, false, false, nil
	}
	if it.first && !it.final && attempt == 0 && len(l.names) <= p.maxEntries() && want < maxDirItem+p.handlesSlack() {
		// It may fit in one item with a larger reservation: one item is
		// better than several (no names added meanwhile to walk again).
		return maxDirItem + p.handlesSlack(), false, false, nil
	}
	if err := p.commit(l, it, want-it.size); err != nil {
		return 0, false, false, err
	}
	l.next = it.next
	return 0, it.final, false, nil
}

// openListed opens l's directory for its next item and reads its own
// attributes and xattrs; with the first item, also its sorted names. gone
// says it is not there, or (after the first item) another directory took
// its path. Unless gone or failed, the caller closes it.fd.
func (p *pass) openListed(l *dirList) (it *dirItem, gone bool, err error) {
	fd, err := p.openDir(l.dir)
	if err != nil {
		if isGone(err) {
			return nil, true, nil
		}
		return nil, false, err
	}
	it = &dirItem{fd: fd, first: l.id == 0}
	replaced, err := p.readListed(l, it)
	if replaced || err != nil {
		unix.Close(fd)
		return nil, replaced, err
	}
	return it, false, nil
}

// readListed fills in what openListed reads of the open directory;
// replaced says another directory took l's path since its first item.
func (p *pass) readListed(l *dirList, it *dirItem) (replaced bool, err error) {
	fd := it.fd
	if err := unix.Fstat(fd, &it.own); err != nil {
		return false, fmt.Errorf("mirrorfs: resync: stat directory %q: %w", l.dir, err)
	}
	key := fileKey{dev: it.own.Dev, ino: it.own.Ino}
	if it.first {
		l.key = key
		names, err := readNames(fd)
		if err != nil {
			return false, fmt.Errorf("mirrorfs: resync: read directory %q: %w", l.dir, err)
		}
		slices.Sort(names)
		l.names = names
	} else if key != l.key {
		return true, nil // renamed away and replaced
	}
	it.ownX, err = p.xattrs(l.dir, func(b []byte) (int, error) { return unix.Flistxattr(fd, b) },
		func(n string, b []byte) (int, error) { return unix.Fgetxattr(fd, n, b) })
	return false, err
}

// fill reads entries of l into it while they fit: in the item
// (maxDirItem, MaxResyncEntries) and, with the ResyncHandles that rebinds
// handles, in want. need > 0 when not even one entry fits want (an entry
// always fits an item: maxEntryXattrs).
func (p *pass) fill(l *dirList, it *dirItem, want int64) (need int64, err error) {
	it.size = sizeDirHead(l.dir, nil)
	i := l.next
	for i < len(l.names) && len(it.reads) < p.maxEntries() {
		r, skip, err := p.readEntry(it.fd, l.dir, l.names[i])
		if err != nil {
			return 0, err
		}
		if skip {
			i++
			continue
		}
		es, hs := sizeEntry(&r.e), p.handlesSize(l.dir, &r, it.hsize)
		if it.size+es > maxDirItem || it.size+es+it.hsize+hs > want {
			if len(it.reads) == 0 {
				return it.size + es + it.hsize + hs, nil
			}
			break
		}
		it.reads, it.idx, it.hss = append(it.reads, r), append(it.idx, i), append(it.hss, hs)
		it.size += es
		it.hsize += hs
		i++
	}
	it.next = i
	it.final = i == len(l.names)
	return 0, nil
}

// handlesSize is the room the ResyncHandles next to an item need for the
// handles open on r (Rebase only), hsize being what the entries before it
// need already.
func (p *pass) handlesSize(dir string, r *entryRead, hsize int64) int64 {
	if !p.o.Rebase || r.e.Kind != wire.KindFile {
		return 0
	}
	n := len(p.mnt.handlesOf(r.key))
	if n == 0 {
		return 0
	}
	hs := int64(n) * sizeHandleRef(childPath(dir, r.e.Name))
	if hsize == 0 {
		hs += sizeHandlesHead
	}
	return hs
}

// fitFinal makes room in a Final item for the directory's own xattrs,
// which only it carries, by leaving its last entries to another item.
// need > 0 when the xattrs do not fit even alone.
func (p *pass) fitFinal(l *dirList, it *dirItem, want int64) (need int64) {
	ownSize := sizeDirHead(l.dir, it.ownX) - sizeDirHead(l.dir, nil)
	for it.final && (it.size+ownSize > maxDirItem || it.size+ownSize+it.hsize > want) {
		if len(it.reads) == 0 {
			return it.size + ownSize + it.hsize
		}
		k := len(it.reads) - 1
		it.size -= sizeEntry(&it.reads[k].e)
		it.hsize -= it.hss[k]
		it.next = it.idx[k]
		it.reads, it.idx, it.hss = it.reads[:k], it.idx[:k], it.hss[:k]
		it.final = false
	}
	if it.final {
		it.size += ownSize
	}
	return 0
}

// commit assigns ids to the entries read, emits the item (and the
// ResyncHandles rebinding the handles open on its files) and records what
// the replies will refer to; rest is the part of the reservation the item
// leaves. The namespace lock is held shared. On error nothing was emitted.
func (p *pass) commit(l *dirList, it *dirItem, rest int64) error {
	// Files open for writing may be written right now: lock them, then
	// read their attributes again, so the item holds them as of its
	// position. The handle locks too: no handle of these files is
	// released between reading the handles and emitting the item that
	// names them.
	var keys []fileKey
	for _, r := range it.reads {
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

	refs, newFiles, err := p.fileEntries(l, it, held, at)
	if err != nil {
		return err
	}
	p.record(l, it.final, newFiles, at)
	p.emitItem(l, it, refs, rest)
	p.files.Add(uint64(len(newFiles)))
	return nil
}

// fileEntries brings the entries of the files open for writing up to
// date, lists the handles open on them (Rebase) and makes the fileState
// of every file the slave is to compare, as of item position at. On error
// it releases what it made.
func (p *pass) fileEntries(l *dirList, it *dirItem, held heldWriters, at uint64) (refs []wire.HandleRef, newFiles []*fileState, err error) {
	for k := range it.reads {
		r := &it.reads[k]
		if r.e.Kind != wire.KindFile {
			continue
		}
		path := childPath(l.dir, r.e.Name)
		if p.mnt.written(r.key) {
			var st unix.Stat_t
			if err := unix.Fstatat(it.fd, r.e.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Ino == r.st.Ino && st.Dev == r.st.Dev {
				r.st = st
				r.e.Attr = entryAttr(&st)
			}
			if p.o.Rebase {
				for _, h := range held.handlesOf(r.key) {
					refs = append(refs, wire.HandleRef{Handle: h, Path: path})
				}
			}
		}
		f, err := p.fileEntry(it.fd, path, r, at)
		if err != nil {
			for _, f := range newFiles {
				f.release()
			}
			return nil, nil, err
		}
		if f != nil {
			p.forceCompare(r)
			newFiles = append(newFiles, f)
		}
	}
	return refs, newFiles, nil
}

// record files what the replies to the item at position at will refer
// to: l's DirID (assigned with its first item), its new files, and the
// item itself.
func (p *pass) record(l *dirList, final bool, newFiles []*fileState, at uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
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
}

// emitItem emits the ResyncDir, then the ResyncHandles for refs, gives
// back what of rest they leave, and tells the watch how far the walk got.
func (p *pass) emitItem(l *dirList, it *dirItem, refs []wire.HandleRef, rest int64) {
	item := &wire.ResyncDir{Pass: p.o.Pass, DirID: l.id, Path: l.dir, Final: it.final}
	item.Entries = make([]wire.Entry, 0, len(it.reads))
	for _, r := range it.reads {
		item.Entries = append(item.Entries, r.e)
		if r.e.Kind == wire.KindDir {
			l.subdirs = append(l.subdirs, r.e.Name)
		}
	}
	if it.final {
		item.Attr = entryAttr(&it.own)
		item.Xattrs = it.ownX
	}
	p.emit(item, it.size)
	if len(refs) > 0 {
		slices.SortFunc(refs, func(a, b wire.HandleRef) int { return cmp.Compare(a.Handle, b.Handle) })
		used, hs := p.emitHandles(refs)
		rest -= used
		p.w.rebound(hs)
	}
	p.refund(rest)

	p.entries.Add(uint64(len(it.reads)))
	if !it.final {
		if len(it.reads) > 0 {
			p.w.emittedUpTo(it.reads[len(it.reads)-1].e.Name)
		}
		return
	}
	p.dirs.Add(1)
	subs := l.subdirs
	if l.only != nil {
		subs = slices.DeleteFunc(subs, func(n string) bool { return !slices.Contains(l.only, n) })
	}
	p.w.listed(subs)
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
