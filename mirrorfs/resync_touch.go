package mirrorfs

import (
	"maps"
	"slices"
	"syscall"
)

// What the watch remembers of files, besides paths to walk again:
//
//   - the files ops of the pass changed the content or mtime of (the
//     slave's quick check cannot be trusted on them: forceCompare), and
//     among them those an op may have missed on the slave (lost touches:
//     through a path still to be listed, or a handle the slave may have
//     bound to another file), which hard-linked files need compared again
//     (linkEntry);
//   - the names of files with several links the slave has (listed, or
//     made by a link op it applied), followed through renames and
//     unlinks: they tell whether the slave still has a name of such a file
//     to link later names to, and which names to list again when the file
//     starts a new LinkID.

// maxTouched bounds the files a pass remembers as touched by ops.
const maxTouched = 1 << 20

// touch records that an op changed the content or mtime of file k,
// through handle (0: none) or path ("": none); opened says the op opened
// handle on path. An op that acted through a path still to be listed, or
// through a handle the slave may have bound to another file, may have
// missed the slave's copy of the file: that is a lost touch, and the
// file's content must be compared after it (resync_walk.go, linkEntry).
func (w *watch) touch(k fileKey, handle uint64, path string, opened bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	lost := (handle != 0 && !opened && w.suspect[handle]) || (path != "" && w.covered(path))
	if opened {
		w.openedLocked(handle, path)
	}
	if lost {
		w.lostLocked(k)
	}
	w.touchedLocked(k)
}

// openedLocked records that handle was opened on path: the slave may bind
// it to another file when path is still to be listed; w.mu held.
func (w *watch) openedLocked(handle uint64, path string) {
	if w.suspect == nil {
		w.suspect = make(map[uint64]bool)
	}
	if w.covered(path) {
		w.suspect[handle] = true
	} else {
		delete(w.suspect, handle)
	}
}

// lostLocked records a lost touch of file k; w.mu held.
func (w *watch) lostLocked(k fileKey) {
	// A name of the file listed already will not be listed again: list
	// it again (it then starts a new LinkID, see linkEntry).
	for p, g := range w.linkNames {
		if w.groupFile[g] == k {
			w.addLocked(p)
		}
	}
	w.seq++
	if w.lostAll == 0 && len(w.lost) >= maxTouched {
		w.lostAll, w.lost = w.seq, nil
	}
	if w.lostAll == 0 {
		if w.lost == nil {
			w.lost = make(map[fileKey]uint64)
		}
		w.lost[k] = w.seq
	}
}

// touchedLocked records that an op changed file k, or, past maxTouched
// files, that ops changed every file; w.mu held.
func (w *watch) touchedLocked(k fileKey) {
	if w.touchedAll {
		return
	}
	if w.touched == nil {
		w.touched = make(map[fileKey]struct{})
	}
	if len(w.touched) >= maxTouched {
		w.touchedAll = true
		w.touched = nil
		return
	}
	w.touched[k] = struct{}{}
}

// lostSince reports whether file k had a lost touch after mark (a value
// of now).
func (w *watch) lostSince(k fileKey, mark uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lostAll > mark {
		return true
	}
	return w.lost[k] > mark
}

// now marks the present for lostSince.
func (w *watch) now() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seq
}

// suspectHandles records handles the slave may have bound to another
// file (named in the ResyncHandles of a rebase, before anything is
// listed); rebound clears them once an item has bound them to a listed
// name; released forgets a handle.
func (w *watch) suspectHandles(hs []uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.suspect == nil {
		w.suspect = make(map[uint64]bool)
	}
	for _, h := range hs {
		w.suspect[h] = true
	}
}

func (w *watch) rebound(hs []uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, h := range hs {
		delete(w.suspect, h)
	}
}

func (w *watch) released(h uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.suspect, h)
}

// touchedFile reports whether an op of the pass changed file k.
func (w *watch) touchedFile(k fileKey) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.touched[k]
	return ok || w.touchedAll
}

// touched records, for every pass, the file an op changed the content or
// mtime of: the one open under handle, or the one at path.
func (mt passMount) touched(ws []*watch, handle uint64, path string, opened bool) {
	k, ok := mt.fileOf(handle)
	if !ok {
		st, err := mt.m.lstat(path)
		if err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			return
		}
		k = fileKey{dev: st.Dev, ino: st.Ino}
	}
	for _, w := range ws {
		w.touch(k, handle, path, opened)
	}
}

// maxLinkNames bounds the names of hard-linked files a pass follows.
const maxLinkNames = 4096

// anonGroups numbers the groups made by link ops, apart from LinkIDs.
const anonGroups = 1 << 63

// trackName records that the slave has path as a name of file k, in group
// g (one file on the slave).
func (w *watch) trackName(path string, g uint64, k fileKey) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.trackNameLocked(path, g, k)
}

func (w *watch) trackNameLocked(path string, g uint64, k fileKey) {
	if w.linksFull {
		return
	}
	if w.linkNames == nil {
		w.linkNames = make(map[string]uint64)
		w.groupFile = make(map[uint64]fileKey)
	}
	if len(w.linkNames) >= maxLinkNames {
		w.linksFull = true
		w.linkNames, w.groupFile = nil, nil
		return
	}
	w.linkNames[path] = g
	w.groupFile[g] = k
}

// linkOp records link(old, new) of file k, applied on the slave: new is
// one file with old there.
func (w *watch) linkOpLocked(old, new string, k fileKey) {
	g, ok := w.linkNames[old]
	if !ok {
		w.anon++
		g = anonGroups + w.anon
		w.trackNameLocked(old, g, k)
	}
	w.trackNameLocked(new, g, k)
}

// groupOf returns the group of the followed name path.
func (w *watch) groupOf(path string) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	g, ok := w.linkNames[path]
	return g, ok
}

// namesIn returns the names of group g; known is false when the watch
// stopped following names.
func (w *watch) namesIn(g uint64) (names []string, known bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for p, h := range w.linkNames {
		if h == g {
			names = append(names, p)
		}
	}
	slices.Sort(names)
	return names, !w.linksFull
}

// regroup moves the names of group from into group to.
func (w *watch) regroup(from, to uint64, k fileKey) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for p, h := range w.linkNames {
		if h == from {
			w.linkNames[p] = to
		}
	}
	if w.groupFile != nil {
		w.groupFile[to] = k
	}
}

// splitOff queues, to be listed again, the followed names of file k that
// are not in group keep (other files on the slave: listed again, they
// join keep's LinkID), and forgets them.
func (w *watch) splitOff(k fileKey, keep uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for p, g := range w.linkNames {
		if g != keep && w.groupFile[g] == k {
			delete(w.linkNames, p)
			w.addUncovered(p)
		}
	}
}

// moveLinks renames the followed names at or beneath from to lie beneath
// to; dropLinks forgets those at or beneath p.
func (w *watch) moveLinks(from, to string) {
	moved := map[string]uint64{}
	for p, l := range w.linkNames {
		if under(p, from) {
			moved[to+p[len(from):]] = l
			delete(w.linkNames, p)
		}
	}
	maps.Copy(w.linkNames, moved)
}

// dropCoveredLinks forgets the followed names at or beneath p when p is
// still to be listed: the slave may not have them there (its rename may
// have failed, and the listing of the old place then removes its copy).
// They are listed again anyway.
func (w *watch) dropCoveredLinks(p string) {
	if w.covered(p) {
		w.dropLinks(p)
	}
}

func (w *watch) dropLinks(p string) {
	maps.DeleteFunc(w.linkNames, func(q string, _ uint64) bool { return under(q, p) })
}

// unlinked observes unlink(p).
func (w *watch) unlinked(p string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.linkNames, p)
}
