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
//   - the names listed so far of files with several links, followed
//     through renames and unlinks, which tell whether the slave still has
//     a name of such a file to link later names to.

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
		if w.suspect == nil {
			w.suspect = make(map[uint64]bool)
		}
		if w.covered(path) {
			w.suspect[handle] = true
		} else {
			delete(w.suspect, handle)
		}
	}
	if lost {
		// A name of the file listed already will not be listed again:
		// list it again (it then starts a new LinkID, see linkEntry).
		if lid := w.linkOf[k]; lid != 0 {
			for p, l := range w.linkNames {
				if l == lid {
					w.addLocked(p)
				}
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
func (m *mirror) touched(ws []*watch, handle uint64, path string, opened bool) {
	k, ok := m.writers.keyOf(handle)
	if !ok {
		st, err := lstat(m.abs(path))
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

// trackLink records that path was listed as a name of file k, LinkID lid.
func (w *watch) trackLink(path string, k fileKey, lid uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.linksFull {
		return
	}
	if w.linkNames == nil {
		w.linkNames = make(map[string]uint64)
		w.linkOf = make(map[fileKey]uint64)
	}
	if len(w.linkNames) >= maxLinkNames {
		w.linksFull = true
		w.linkNames, w.linkOf = nil, nil
		return
	}
	w.linkNames[path] = lid
	w.linkOf[k] = lid
}

// namesOf returns the listed names of lid that still exist; known is
// false when the watch stopped following them.
func (w *watch) namesOf(lid uint64) (names []string, known bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for p, l := range w.linkNames {
		if l == lid {
			names = append(names, p)
		}
	}
	slices.Sort(names)
	return names, !w.linksFull
}

// forgetLink drops the names of lid.
func (w *watch) forgetLink(lid uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	maps.DeleteFunc(w.linkNames, func(_ string, l uint64) bool { return l == lid })
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
