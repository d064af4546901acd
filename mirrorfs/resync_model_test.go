package mirrorfs

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/tdfs/tdfs/wire"
)

// A model of a pass against random directory ops: the walk, driven
// through the watch's plan, on a slave that starts out different and skips
// what it cannot apply.

// simTree models a master tree of directories and a slave's copy of it
// during a pass. Master directories have identities (a directory renamed
// keeps its own), as the walk checks between the items of one listing,
// and mtimes (versions bumped by the ops that change their entries); the
// slave's copies have mtimes too, set by the ops it applies (which carry
// the master's) and by listings (entries' attributes, a directory's own at
// its Final item), and spoilt (-1) by the slave's own changes.
type simTree struct {
	master map[string]int // directory: identity
	mtime  map[string]int // master directory: mtime
	slave  map[string]int // slave directory: mtime
	ids    int
	clock  int
}

func children[V any](dirs map[string]V, p string) []string {
	var out []string
	for d := range dirs {
		if d != "" && parentOf(d) == p {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, cmpPath)
	return out
}

func (t *simTree) has(p string) bool { _, ok := t.master[p]; return ok }

func (t *simTree) onSlave(p string) bool { _, ok := t.slave[p]; return ok }

// touch gives master directory p a new mtime.
func (t *simTree) touch(p string) {
	t.clock++
	t.mtime[p] = t.clock
}

// slaveTakes sets the slave's mtime of p to the master's (an op applied
// there, or a listing), if the slave has p.
func (t *simTree) slaveTakes(p string) {
	if t.onSlave(p) {
		t.slave[p] = t.mtime[p]
	}
}

// slaveMake makes p a directory on the slave, with missing parents.
func (t *simTree) slaveMake(p string) {
	for q := p; !t.onSlave(q); q = parentOf(q) {
		t.slave[q] = -1
		t.slave[parentOf(q)] = -1
	}
}

// slaveRemove removes p and its subtree on the slave.
func (t *simTree) slaveRemove(p string) {
	for d := range t.slave {
		if under(d, p) {
			delete(t.slave, d)
		}
	}
	t.slave[parentOf(p)] = -1
}

// listItem is the slave applying one item of p's listing carrying names;
// with final, it then removes every name of p that no item carried, and
// takes p's own mtime.
func (t *simTree) listItem(p string, names, carried []string, final bool) {
	t.slaveMake(p)
	for _, n := range names {
		c := childPath(p, n)
		if !t.onSlave(c) {
			t.slave[c] = -1
			t.slave[p] = -1
		}
		t.slaveTakes(c)
	}
	if final {
		for _, c := range children(t.slave, p) {
			if !slices.Contains(carried, childOf(c, p)) {
				t.slaveRemove(c)
			}
		}
		t.slaveTakes(p)
	}
}

func move[V any](dirs map[string]V, src, dst string) {
	var moved []string
	for d := range dirs {
		if under(d, src) {
			moved = append(moved, d)
		}
	}
	vals := map[string]V{}
	for _, d := range moved {
		vals[d] = dirs[d]
		delete(dirs, d)
	}
	for _, d := range moved {
		dirs[dst+d[len(src):]] = vals[d]
	}
}

func empty[V any](dirs map[string]V, p string) bool { return len(children(dirs, p)) == 0 }

// TestWatchModel runs the walk against random directory ops (mkdir,
// rmdir, rename, rename over an empty directory, exchange), on a slave
// whose tree starts out different and which skips what it cannot apply,
// with listings in one item or in two, and checks the end state: once the
// walk and every pending root are done, the slave's tree is the master's,
// directory mtimes included. Take any of the watch's rules out and it
// fails.
func TestWatchModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	checked := 0
	const rounds = 4000
	for round := 0; round < rounds; round++ {
		tr := &simTree{master: map[string]int{"": 0}, mtime: map[string]int{"": 0}, slave: map[string]int{"": -2}}
		for i := 0; i < 10; i++ {
			// Random, different, initial trees.
			ds := slices.Sorted(maps.Keys(tr.master))
			tr.ids++
			d := childPath(ds[rng.IntN(len(ds))], fmt.Sprintf("%c", 'a'+rng.IntN(5)))
			tr.master[d], tr.mtime[d] = tr.ids, 0
			ds = slices.Sorted(maps.Keys(tr.slave))
			tr.slave[childPath(ds[rng.IntN(len(ds))], fmt.Sprintf("%c", 'a'+rng.IntN(5)))] = -2
		}
		w := &watch{}
		w.startMain()
		trace := []string{fmt.Sprintf("master %v", tr.mtime), fmt.Sprintf("slave  %v", tr.slave)}

		// The walk, driven through the watch's plan. current is the
		// directory to list; a listing in two items keeps its state in
		// between.
		current, only, walking := "", []string(nil), true
		var (
			split   bool     // the first item went out
			id      int      // current's identity at the first item
			rest    []string // names still to send
			carried []string // names sent
			subs    []string // subdirectories found
		)
		finish := func() {
			if only != nil {
				subs = slices.DeleteFunc(subs, func(n string) bool { return !slices.Contains(only, n) })
			}
			w.listed(subs)
			only, split, rest, carried, subs = nil, false, nil, nil, nil
			current, walking = w.nextDir()
		}
		walkStep := func() bool {
			if !walking {
				return false
			}
			if split {
				if i, ok := tr.master[current]; !ok || i != id {
					// The walk lists the path again from the start.
					trace = append(trace, fmt.Sprintf("second item of %q: replaced, listing again", current))
					w.relisting()
					split, rest, carried, subs = false, nil, nil, nil
					return true
				}
				var names []string
				for _, n := range rest {
					if tr.has(childPath(current, n)) {
						names = append(names, n)
					}
				}
				carried = append(carried, names...)
				subs = append(subs, names...)
				tr.listItem(current, names, carried, true)
				trace = append(trace, fmt.Sprintf("second item of %q: %q", current, names))
				finish()
				return true
			}
			if !tr.has(current) {
				w.gone()
				current, walking = w.nextDir()
				only = nil
				return true
			}
			var names []string
			for _, c := range children(tr.master, current) {
				names = append(names, childOf(c, current))
			}
			slices.Sort(names)
			if len(names) >= 2 && rng.IntN(2) == 0 {
				first := names[:len(names)/2]
				split, id, rest, carried, subs = true, tr.master[current], names[len(names)/2:], slices.Clone(first), slices.Clone(first)
				tr.listItem(current, first, carried, false)
				w.emittedUpTo(first[len(first)-1])
				trace = append(trace, fmt.Sprintf("first item of %q: %q", current, first))
				return true
			}
			tr.listItem(current, names, names, true)
			subs = names
			trace = append(trace, fmt.Sprintf("list %q", current))
			finish()
			return true
		}

		ops := 0
		for step := 0; step < 1000; step++ {
			if rng.IntN(3) != 0 || ops > 15 {
				if walkStep() {
					continue
				}
				w.endWalk()
				parent, names, ok := w.popPending()
				if !ok {
					break
				}
				trace = append(trace, fmt.Sprintf("walk pending %q %q", parent, names))
				current, only, walking = parent, names, true
				continue
			}
			ops++
			ds := slices.Sorted(maps.Keys(tr.master))
			a := ds[rng.IntN(len(ds))]
			b := childPath(ds[rng.IntN(len(ds))], fmt.Sprintf("n%d", rng.IntN(20)))
			switch k := rng.IntN(6); {
			case k == 0: // mkdir b
				if tr.has(b) {
					continue
				}
				tr.ids++
				tr.master[b] = tr.ids
				tr.touch(b)
				tr.touch(parentOf(b))
				if tr.onSlave(parentOf(b)) && !tr.onSlave(b) {
					tr.slave[b] = 0
					tr.slaveTakes(b)
					tr.slaveTakes(parentOf(b))
				}
				w.created(b)
				trace = append(trace, fmt.Sprintf("mkdir %q; pending %q", b, pendingOf(w)))
			case k == 1: // rmdir a
				if a == "" || !empty(tr.master, a) {
					continue
				}
				delete(tr.master, a)
				delete(tr.mtime, a)
				tr.touch(parentOf(a))
				if tr.onSlave(a) && empty(tr.slave, a) {
					delete(tr.slave, a)
					tr.slaveTakes(parentOf(a))
				}
				w.removedDir(a)
				trace = append(trace, fmt.Sprintf("rmdir %q; pending %q", a, pendingOf(w)))
			case k == 2: // exchange a and some other directory
				c := ds[rng.IntN(len(ds))]
				if a == "" || c == "" || under(a, c) || under(c, a) {
					continue
				}
				for _, m := range []map[string]int{tr.master, tr.mtime} {
					move(m, a, "\x00")
					move(m, c, a)
					move(m, "\x00", c)
				}
				tr.touch(parentOf(a))
				tr.touch(parentOf(c))
				if tr.onSlave(a) && tr.onSlave(c) {
					move(tr.slave, a, "\x00")
					move(tr.slave, c, a)
					move(tr.slave, "\x00", c)
					tr.slaveTakes(parentOf(a))
					tr.slaveTakes(parentOf(c))
				}
				w.renamed(a, c, wire.RenameExchange, true, true)
				trace = append(trace, fmt.Sprintf("exchange %q %q; pending %q", a, c, pendingOf(w)))
			default: // rename a over b (absent, or an empty directory)
				noReplace := k == 3
				if a == "" || under(b, a) || (tr.has(b) && (noReplace || !empty(tr.master, b))) {
					continue
				}
				delete(tr.master, b)
				delete(tr.mtime, b)
				move(tr.master, a, b)
				move(tr.mtime, a, b)
				tr.touch(parentOf(a))
				tr.touch(parentOf(b))
				if tr.onSlave(a) && tr.onSlave(parentOf(b)) && !under(b, a) && (!tr.onSlave(b) || !noReplace && empty(tr.slave, b)) {
					delete(tr.slave, b)
					move(tr.slave, a, b)
					tr.slaveTakes(parentOf(a))
					tr.slaveTakes(parentOf(b))
				}
				var flags uint32
				if noReplace {
					flags = wire.RenameNoReplace
				}
				w.renamed(a, b, flags, true, false)
				trace = append(trace, fmt.Sprintf("rename %q -> %q; pending %q", a, b, pendingOf(w)))
			}
		}
		if walking || !w.idle() {
			continue // overflow or not finished within the steps: nothing to check
		}
		if !maps.Equal(tr.mtime, tr.slave) {
			t.Fatalf("round %d: after the pass (directory: mtime)\nmaster %v\nslave  %v\n%s", round,
				tr.mtime, tr.slave, strings.Join(trace, "\n"))
		}
		checked++
	}
	if checked < rounds*3/4 {
		t.Errorf("only %d of %d rounds finished their pass", checked, rounds)
	}
}
