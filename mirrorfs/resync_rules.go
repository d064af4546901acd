package mirrorfs

import (
	"slices"
	"syscall"

	"github.com/tdfs/tdfs/wire"
)

// The rules of the watch (resync_watch.go): what each namespace op means
// for the running pass, and the hook that feeds ops to the passes.

// movePending renames the pending roots at or beneath from to lie beneath
// to.
func (w *watch) movePending(from, to string) {
	for i, r := range w.pending {
		if under(r, from) {
			w.pending[i] = to + r[len(from):]
		}
	}
}

// dropBelow forgets the pending roots strictly beneath p (p was removed or
// replaced: nothing of what was beneath it is left to walk).
func (w *watch) dropBelow(p string) {
	w.pending = slices.DeleteFunc(w.pending, func(r string) bool { return r != p && under(r, p) })
}

// addedIn queues p when it is a new name in the directory being listed in
// several items: its names were read with the first item, and the slave
// removes at the last item every name no item carried.
func (w *watch) addedIn(p string) {
	if w.pos.active && w.pos.hasCurrent && w.pos.hasEmitted && p != "" && parentOf(p) == w.pos.current {
		w.addLocked(p)
	}
}

// addUncovered queues p unless it is covered already.
func (w *watch) addUncovered(p string) {
	if !w.covered(p) {
		w.addLocked(p)
	}
}

// walksBelow reports whether the directory p will be listed, and walked
// beneath, by this pass (by the walk, or as or beneath a pending root).
// That p's entry is covered is not enough: a batch of pending roots lists
// their parent again but walks only beneath the roots.
func (w *watch) walksBelow(p string) bool {
	for _, r := range w.pending {
		if under(p, r) {
			return true
		}
	}
	return w.pos.willList(p)
}

// addStale queues p, which now holds content the slave may have stale (a
// directory if dir), unless this pass will make it right anyway.
func (w *watch) addStale(p string, dir bool) {
	if dir && !w.walksBelow(p) || !dir && !w.covered(p) {
		w.addLocked(p)
	}
}

// created observes a name made by create, mkdir, mknod or symlink.
func (w *watch) created(p string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.addedIn(p)
}

// linked observes link(old, new). A stale file linked into a passed
// directory carries stale content there; and when the slave lacks old,
// its link fails and new is missing there. When new's directory is still
// to be listed, the slave's link may fail too (that directory missing
// there), and its listing would then make new a file of its own: old,
// listed already as a file with one link (no LinkID), is listed again so
// that both names carry the same LinkID.
//
// A link between two places the slave has right succeeds there: both
// names are followed (k is the file), so that if the file later starts a
// new LinkID, both join it.
func (w *watch) linked(old, new string, k fileKey, isFile bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	oldIn, newIn := !w.covered(old), !w.covered(new)
	if !oldIn {
		w.addUncovered(new)
	}
	if !newIn {
		w.addUncovered(old)
	}
	if oldIn && newIn && isFile {
		w.linkOpLocked(old, new, k)
	}
	w.addedIn(new)
}

// removedDir observes rmdir(p): when p's own listing was still to come,
// the slave's copy may not be empty and its rmdir fail, leaving an extra
// directory in a passed parent. Listing the parent again removes it.
func (w *watch) removedDir(p string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	stale := w.staleTree(p, true)
	w.dropBelow(p)
	if stale {
		w.addUncovered(p)
	}
}

// renamed observes rename(src, dst, flags). srcDir and dstDir say whether
// what now lies at dst (the former src) and, for an exchange, at src (the
// former dst) is a directory.
//
// On the slave the rename carries whatever the slave has at src: stale
// content lands at dst, and is walked again unless the pass will anyway.
// And the slave's rename may fail (it lacks src or dst's parent, its dst
// is a directory that is not empty, or for an exchange it lacks either
// side): then both directories the rename changed are wrong there (the
// slave's src stays where the master has none, dst is missing, and their
// mtimes are the old ones), and are listed again unless they will be
// anyway (asked after the pending roots moved: a root at src goes with
// it).
func (w *watch) renamed(src, dst string, flags uint32, srcDir, dstDir bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fromSrc := w.staleTree(src, srcDir)
	if flags&wire.RenameExchange != 0 {
		fromDst := w.staleTree(dst, dstDir)
		mayFail := w.covered(src) || w.covered(dst)
		// Swap the pending roots (and followed names) of both sides,
		// through a name neither can hold: a NUL byte.
		w.movePending(src, "\x00")
		w.movePending(dst, src)
		w.movePending("\x00", dst)
		w.moveLinks(src, "\x00")
		w.moveLinks(dst, src)
		w.moveLinks("\x00", dst)
		w.dropCoveredLinks(src)
		w.dropCoveredLinks(dst)
		if fromSrc {
			w.addStale(dst, srcDir)
		}
		if fromDst {
			w.addStale(src, dstDir)
		}
		if mayFail {
			w.addUncovered(src)
			w.addUncovered(dst)
		}
		// Either side may be a name added to a directory being listed in
		// several items, whose pending root just went to the other side.
		w.addedIn(src)
		w.addedIn(dst)
		return
	}
	// A directory renamed over a directory whose listing is still to come:
	// the slave's copy of dst may not be empty.
	overUnlisted := srcDir && flags&wire.RenameNoReplace == 0 && !w.covered(dst) && w.staleTree(dst, true)
	mayFail := w.covered(src) || w.covered(dst) || overUnlisted
	w.dropBelow(dst)
	w.movePending(src, dst)
	w.dropLinks(dst)
	w.moveLinks(src, dst)
	w.dropCoveredLinks(dst)
	if fromSrc {
		w.addStale(dst, srcDir)
	}
	if mayFail {
		w.addUncovered(src)
		w.addUncovered(dst)
	}
	w.addedIn(dst)
}

// observe feeds op, just applied and numbered (namespace ops under the
// exclusive namespace lock, data ops under the inode's write lock), to
// every running pass: first what it did to a file's content, then to the
// names.
func (mt passMount) observe(ws []*watch, op wire.Op) {
	if handle, path, opened, ok := contentTouch(op); ok {
		mt.touched(ws, handle, path, opened)
	}
	switch o := op.(type) {
	case *wire.Rename:
		mt.observeRename(ws, o)
	case *wire.Link:
		mt.observeLink(ws, o)
	case *wire.Rmdir:
		for _, w := range ws {
			w.removedDir(o.Path)
		}
	case *wire.Unlink:
		for _, w := range ws {
			w.unlinked(o.Path)
		}
	case *wire.Release:
		for _, w := range ws {
			w.released(o.Handle)
		}
	default:
		if path, ok := createdPath(op); ok {
			for _, w := range ws {
				w.created(path)
			}
		}
	}
}

// contentTouch says which file op changed the content, mtime or xattrs
// of: the one open under handle (0: none), or the one at path ("": none);
// opened says op opened handle on path. ok is false for every other op.
func contentTouch(op wire.Op) (handle uint64, path string, opened, ok bool) {
	switch o := op.(type) {
	case *wire.Create:
		return o.Handle, o.Path, o.Handle != 0, true
	case *wire.Open:
		return o.Handle, o.Path, o.Handle != 0, true
	case *wire.Write:
		return o.Handle, "", false, true
	case *wire.Fallocate:
		return o.Handle, "", false, true
	case *wire.CopyRange:
		// Unreachable while copy.go emits no CopyRange during a pass;
		// the destination changed like a Write's.
		return o.Handle, "", false, true
	case *wire.Setattr:
		if o.Handle != 0 {
			return o.Handle, "", false, true // by handle: the path is ignored
		}
		return 0, o.Path, false, true
	case *wire.Setxattr:
		// xattrs belong to the file: one set through a name still to be
		// listed may miss the slave's copy, as a chmod may.
		return 0, o.Path, false, true
	case *wire.Removexattr:
		return 0, o.Path, false, true
	}
	return 0, "", false, false
}

// createdPath returns the path op made a new node at.
func createdPath(op wire.Op) (string, bool) {
	switch o := op.(type) {
	case *wire.Create:
		return o.Path, true
	case *wire.Mkdir:
		return o.Path, true
	case *wire.Mknod:
		return o.Path, true
	case *wire.Symlink:
		return o.Path, true
	}
	return "", false
}

// observeRename feeds a rename to every pass, with whether what moved
// (and, for an exchange, what it was swapped with) is a directory.
func (mt passMount) observeRename(ws []*watch, o *wire.Rename) {
	srcDir := mt.m.isDir(o.NewPath)
	dstDir := o.Flags&wire.RenameExchange != 0 && mt.m.isDir(o.OldPath)
	for _, w := range ws {
		w.renamed(o.OldPath, o.NewPath, o.Flags, srcDir, dstDir)
	}
}

// observeLink feeds a link to every pass, with the file linked.
func (mt passMount) observeLink(ws []*watch, o *wire.Link) {
	st, err := mt.m.lstat(o.NewPath)
	isFile := err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFREG
	k := fileKey{dev: st.Dev, ino: st.Ino}
	for _, w := range ws {
		w.linked(o.OldPath, o.NewPath, k, isFile)
	}
}

// isDir reports whether the backing path rel is a directory. It errs
// towards true when it cannot tell: treating a file as a directory only
// costs a walk.
func (m *mirror) isDir(rel string) bool {
	st, err := m.lstat(rel)
	if err != nil {
		return true
	}
	return st.Mode&syscall.S_IFMT == syscall.S_IFDIR
}
