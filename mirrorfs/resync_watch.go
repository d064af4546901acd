package mirrorfs

import (
	"slices"
	"strings"
	"sync"
)

// What a running pass learns from live ops (step 4 of the pass, see
// resync.go).
//
// After the ResyncDir of directory D is applied at its position, D's
// entries on the slave equal the master's, and every later op applies to
// both trees alike, so they stay equal. What the walk has not listed yet
// it will list, whatever is there by then. So a live op matters only when
// it may leave the slave wrong somewhere the walk will not list again
// (resync_rules.go):
//   - a rename or link that carries what the slave may have stale (not
//     listed yet) into a place already listed;
//   - an op the slave may fail because its tree still differs, which then
//     leaves a listed place wrong: a rename whose destination side is
//     still to be listed (the slave keeps the source), a directory renamed
//     over one whose listing is to come or removed before it (the slave's
//     copy may not be empty), a link into a place still to be listed
//     (the slave then makes a separate file there);
//   - a name added to a directory being listed in several items (the
//     slave removes, at the last item, every name no item carried).
//
// The watch queues each such path as a pending root: its parent is listed
// again, then its subtree walked, after the current walk. Pending roots
// count as not listed until then, and move with renames. Their number is
// bounded (maxPending); beyond that the walk restarts from the root,
// which is correct, just slower.
//
// To tell what is listed, the watch holds the walk's plan (walkPos): the
// directory being listed and the subdirectories still to walk, updated
// under the namespace lock with the items, so every op, numbered under
// that lock too, sees the plan as of its position. TestWatchModel checks
// the rules against random ops on a slave that starts out different.

// maxPending bounds the pending roots of one pass.
const maxPending = 1024

// cmpPath orders slash-separated relative paths the way a depth-first walk
// in sorted-name order visits them: component by component, bytewise, a
// path before everything beneath it, "" (the root) first. Plain string
// order differs: "a-b" < "a/c" bytewise, but the walk visits a/c (inside
// a) before a-b.
func cmpPath(a, b string) int {
	for a != b {
		switch {
		case a == "":
			return -1
		case b == "":
			return 1
		}
		ca, ra, _ := strings.Cut(a, "/")
		cb, rb, _ := strings.Cut(b, "/")
		if ca != cb {
			return strings.Compare(ca, cb)
		}
		a, b = ra, rb
	}
	return 0
}

// under reports whether p is r or lies beneath r. Everything is under the
// root "".
func under(p, r string) bool {
	return r == "" || p == r || (len(p) > len(r) && p[len(r)] == '/' && strings.HasPrefix(p, r))
}

// parentOf returns the directory holding p ("" for a name in the root).
func parentOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

// walkPos is what the walk currently running will still list: the
// directory it is listing (current; emitted is the last name it has sent
// in earlier items when the listing takes several), and, per directory it
// is inside, the subdirectories it will still walk (frames, a stack).
// Everything at or beneath a subdirectory still to walk will be listed,
// whatever is there when the walk gets there. Its methods are pure
// functions of that state.
//
// Why not just a cursor in the walk's order: a directory that appears in
// an already listed directory (made, or renamed there, after its parent's
// listing) comes after the cursor and yet is never listed by the walk.
type walkPos struct {
	active     bool
	frames     []walkFrame
	hasCurrent bool
	current    string
	only       []string // the current directory's children the walk goes beneath; nil: all
	hasEmitted bool
	emitted    string
}

// walkFrame is a directory the walk is inside and the names of its
// subdirectories still to walk, sorted.
type walkFrame struct {
	dir  string
	subs []string
}

// childOf returns the name of the child of dir that p (strictly beneath
// dir) lies in.
func childOf(p, dir string) string {
	rest := p
	if dir != "" {
		rest = p[len(dir)+1:]
	}
	child, _, _ := strings.Cut(rest, "/")
	return child
}

// willList reports whether the walk will list the directory d (if it is a
// directory there when the walk gets there).
func (w walkPos) willList(d string) bool {
	if !w.active {
		return false
	}
	if w.hasCurrent && under(d, w.current) {
		return d == w.current || w.only == nil || slices.Contains(w.only, childOf(d, w.current))
	}
	for _, f := range w.frames {
		if d != f.dir && under(d, f.dir) {
			if _, ok := slices.BinarySearch(f.subs, childOf(d, f.dir)); ok {
				return true
			}
		}
	}
	return false
}

// staleEntry reports whether the walk will still list p's entry (name,
// kind, attributes), so whatever the slave holds at p now is made right.
func (w walkPos) staleEntry(p string) bool {
	if p == "" {
		return false
	}
	dir := parentOf(p)
	if w.active && w.hasCurrent && dir == w.current && w.hasEmitted {
		// Listed in several items: the names sent already are done
		// (names added meanwhile are queued by watch.addedIn).
		return childOf(p, dir) > w.emitted
	}
	return w.willList(dir)
}

// staleBelow reports whether the walk will still list some directory at or
// beneath the directory p.
func (w walkPos) staleBelow(p string) bool {
	if !w.active {
		return false
	}
	if w.willList(p) || (w.hasCurrent && under(w.current, p)) {
		return true
	}
	for _, f := range w.frames {
		if under(f.dir, p) && len(f.subs) > 0 {
			return true
		}
	}
	return false
}

// watch is a pass's view of live ops. Its methods take mu; callers hold
// no lock of the pass but may hold the namespace lock (observe runs inside
// namespace ops). Lock order: namespace, inode, sequencer, watch.
type watch struct {
	mu       sync.Mutex
	pos      walkPos
	pending  []string
	overflow bool // more than maxPending roots were queued: restart
	// The files whose content or mtime an op of the pass changed
	// (forceCompare); past maxTouched, every file counts as touched.
	touched    map[fileKey]struct{}
	touchedAll bool
	// Lost touches (see touch): the last one per file, numbered by seq;
	// past maxTouched, every file counts as touched at lostAll.
	seq     uint64
	lost    map[fileKey]uint64
	lostAll uint64
	suspect map[uint64]bool // handles maybe bound to another file on the slave
	// Names of files with several links the slave has, as far as the
	// pass knows, in groups that are one file on the slave: the names
	// listed with a LinkID (group: the LinkID), and those made by link ops
	// between listed places (the group of the old name, or a new one).
	// Moved along with renames, dropped when unlinked (resync_links.go,
	// linkEntry). Past maxLinkNames, not kept.
	linkNames map[string]uint64  // name: group
	groupFile map[uint64]fileKey // group: the master's file
	anon      uint64             // the last group made by a link op
	linksFull bool
}

// startMain starts (or restarts) the walk of the whole tree and forgets
// pending roots, which it covers.
func (w *watch) startMain() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pos = walkPos{active: true, hasCurrent: true, current: ""}
	w.pending = nil
	w.overflow = false
}

// popPending starts the walk of the pending roots that share the parent
// of the smallest one: the parent is listed again, then each root's
// subtree walked. They stay stale until then.
func (w *watch) popPending() (parent string, names []string, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.pending) == 0 || w.overflow {
		return "", nil, false
	}
	first := w.pending[0]
	for _, r := range w.pending {
		if cmpPath(r, first) < 0 {
			first = r
		}
	}
	parent = parentOf(first)
	w.pending = slices.DeleteFunc(w.pending, func(r string) bool {
		if r != "" && parentOf(r) == parent {
			names = append(names, childOf(r, parent))
			return true
		}
		return false
	})
	slices.Sort(names)
	w.pos = walkPos{active: true, hasCurrent: true, current: parent, only: names}
	return parent, names, true
}

// emittedUpTo records that the current directory's entries up to name were
// sent, in an item that is not its last (called under the namespace
// lock, with the item).
func (w *watch) emittedUpTo(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pos.hasEmitted, w.pos.emitted = true, name
}

// listed records that the current directory's Final item was emitted
// (under the namespace lock): the walk will go into subs (sorted) next.
func (w *watch) listed(subs []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pos.frames = append(w.pos.frames, walkFrame{dir: w.pos.current, subs: subs})
	w.pos.hasCurrent, w.pos.current, w.pos.only = false, "", nil
	w.pos.hasEmitted, w.pos.emitted = false, ""
}

// relisting records that the current directory's listing starts over
// (another directory took its path between two of its items).
func (w *watch) relisting() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pos.hasEmitted, w.pos.emitted = false, ""
}

// gone records that the current directory could not be listed (it went
// away; wherever it is now, the rules covered it when it moved).
func (w *watch) gone() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pos.hasCurrent, w.pos.current, w.pos.only = false, "", nil
	w.pos.hasEmitted, w.pos.emitted = false, ""
}

// nextDir makes the next subdirectory to walk current and returns it;
// false when the walk is over.
func (w *watch) nextDir() (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fs := w.pos.frames
	for len(fs) > 0 {
		top := &fs[len(fs)-1]
		if len(top.subs) > 0 {
			d := childPath(top.dir, top.subs[0])
			top.subs = top.subs[1:]
			w.pos.frames = fs
			w.pos.hasCurrent, w.pos.current = true, d
			return d, true
		}
		fs = fs[:len(fs)-1]
	}
	w.pos.frames = nil
	return "", false
}

// endWalk ends the running walk.
func (w *watch) endWalk() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pos = walkPos{}
}

// needsRestart reports whether the pending roots overflowed.
func (w *watch) needsRestart() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.overflow
}

// idle reports whether nothing is pending: no root to walk again, no
// restart.
func (w *watch) idle() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending) == 0 && !w.overflow
}

// add queues p as a pending root (used by verify re-checks too).
func (w *watch) add(p string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.addLocked(p)
}

// addLocked queues p unless a pending root already covers it, and drops
// the roots p covers.
func (w *watch) addLocked(p string) {
	for _, r := range w.pending {
		if under(p, r) {
			return
		}
	}
	w.pending = slices.DeleteFunc(w.pending, func(r string) bool { return under(r, p) })
	w.pending = append(w.pending, p)
	if len(w.pending) > maxPending {
		w.overflow = true
		w.pending = nil
	}
}

// covered reports whether p's entry will be listed again by this pass
// (the walk has not reached its directory, or p lies at or beneath a
// pending root, whose parent is listed again): whatever the slave holds
// at p now, it will be made right.
func (w *watch) covered(p string) bool {
	for _, r := range w.pending {
		if under(p, r) {
			return true
		}
	}
	return w.pos.staleEntry(p)
}

// staleTree reports whether p's entry or, for a directory, anything
// beneath it is still to be listed: the slave's copy of it may be stale.
func (w *watch) staleTree(p string, dir bool) bool {
	if w.covered(p) {
		return true
	}
	if !dir {
		return false
	}
	for _, r := range w.pending {
		if under(r, p) {
			return true
		}
	}
	return w.pos.staleBelow(p)
}
