package mirrorfs

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tdfs/tdfs/wire"
)

func TestCmpPath(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "a", -1},
		{"a", "", 1},
		{"a", "a", 0},
		{"a", "a/b", -1},
		{"a/b", "a", 1},
		{"a/b", "a-b", -1}, // bytewise "a-b" < "a/b"; the walk visits a/b first
		{"a-b", "a/b", 1},
		{"a/b", "a/c", -1},
		{"a/z", "b", -1},
		{"a/b/c", "a/c", -1},
		{"a/c", "a/b/c", 1},
		{"ab", "a/b", 1},
		{"a.b/x", "a/x", 1},
	} {
		if got := cmpPath(tc.a, tc.b); got != tc.want {
			t.Errorf("cmpPath(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// Sorting paths with cmpPath gives the order in which a depth-first walk
// in sorted-name order visits them.
func TestCmpPathIsWalkOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "b", "a-b", "a.b", "a0", "A", "ab", "b/"[:1], "z", "-", "~"}
	for round := 0; round < 50; round++ {
		// A random tree of directories.
		children := map[string][]string{}
		all := []string{""}
		for i := 0; i < 60; i++ {
			parent := all[rng.IntN(len(all))]
			name := alphabet[rng.IntN(len(alphabet))] + alphabet[rng.IntN(len(alphabet))]
			if slices.Contains(children[parent], name) {
				continue
			}
			children[parent] = append(children[parent], name)
			all = append(all, childPath(parent, name))
		}
		var walk []string
		var visit func(string)
		visit = func(d string) {
			walk = append(walk, d)
			names := slices.Clone(children[d])
			slices.Sort(names)
			for _, n := range names {
				visit(childPath(d, n))
			}
		}
		visit("")
		sorted := slices.Clone(all)
		slices.SortFunc(sorted, cmpPath)
		if !slices.Equal(walk, sorted) {
			t.Fatalf("walk order %q\nsorted      %q", walk, sorted)
		}
	}
}

func TestUnderAndParent(t *testing.T) {
	for _, tc := range []struct {
		p, r string
		want bool
	}{
		{"a", "", true}, {"", "", true}, {"a", "a", true}, {"a/b", "a", true},
		{"ab", "a", false}, {"a", "a/b", false}, {"b/a", "a", false}, {"", "a", false},
	} {
		if got := under(tc.p, tc.r); got != tc.want {
			t.Errorf("under(%q, %q) = %v, want %v", tc.p, tc.r, got, tc.want)
		}
	}
	for p, want := range map[string]string{"a": "", "a/b": "a", "a/b/c": "a/b"} {
		if got := parentOf(p); got != want {
			t.Errorf("parentOf(%q) = %q, want %q", p, got, want)
		}
	}
}

func TestWalkPosStale(t *testing.T) {
	// The main walk inside a, listing a/b: the root's subdirectories c
	// and z are still to walk, a's d; a/a is done.
	inside := walkPos{active: true, hasCurrent: true, current: "a/b",
		frames: []walkFrame{{"", []string{"c", "z"}}, {"a", []string{"d"}}}}
	// The same, a/b listed in several items up to the name m.
	chunked := inside
	chunked.hasEmitted, chunked.emitted = true, "m"
	// A batch of pending roots x/w and x/y: x is listed again first.
	batch := walkPos{active: true, hasCurrent: true, current: "x", only: []string{"w", "y"}}
	for _, tc := range []struct {
		name       string
		pos        walkPos
		p          string
		entry, sub bool // staleEntry(p), staleBelow(p)
	}{
		{"nothing listed yet", walkPos{active: true, hasCurrent: true}, "a", true, true},
		{"nothing listed yet, the root", walkPos{active: true, hasCurrent: true}, "", false, true},
		{"inactive", walkPos{}, "a/b", false, false},
		{"the listing's entries", inside, "a/b/x", true, true},
		{"beneath the listing", inside, "a/b/x/y", true, true},
		{"the listing itself", inside, "a/b", false, true},
		{"its parent", inside, "a", false, true},
		{"walked already", inside, "a/a", false, false},
		{"walked already, beneath", inside, "a/a/q", false, false},
		{"to walk in a", inside, "a/d", false, true},
		{"beneath what is to walk in a", inside, "a/d/q", true, true},
		{"a name of a not in its listing", inside, "a/n", false, false},
		{"beneath it", inside, "a/n/q", false, false},
		{"to walk in the root", inside, "z", false, true},
		{"beneath it", inside, "z/q/r", true, true},
		{"a new name in the root", inside, "n", false, false},
		{"beneath the new name", inside, "n/q", false, false},
		{"the root", inside, "", false, true},
		{"chunked, name sent", chunked, "a/b/c", false, true},
		{"chunked, name sent, beneath", chunked, "a/b/c/q", true, true},
		{"chunked, name to send", chunked, "a/b/x", true, true},
		{"chunked, the name sent last", chunked, "a/b/m", false, true},
		{"batch, the parent's entries", batch, "x/q", true, false},
		{"batch, a root", batch, "x/y", true, true},
		{"batch, beneath a root", batch, "x/y/a", true, true},
		{"batch, beneath another child", batch, "x/q/a", false, false},
		{"batch, the parent", batch, "x", false, true},
		{"batch, elsewhere", batch, "q", false, false},
	} {
		if got := tc.pos.staleEntry(tc.p); got != tc.entry {
			t.Errorf("%s: staleEntry(%q) = %v, want %v", tc.name, tc.p, got, tc.entry)
		}
		if got := tc.pos.staleBelow(tc.p); got != tc.sub {
			t.Errorf("%s: staleBelow(%q) = %v, want %v", tc.name, tc.p, got, tc.sub)
		}
	}
}

// ruleTree is the tree the rule tests walk.
var ruleTree = []string{"0", "0/d", "0/x", "a", "a/b", "a/d", "a/x", "b", "c", "y", "z", "z/sub", "z/x"}

// walkTo returns a watch whose main walk over dirs has listed everything
// up to and including upTo.
func walkTo(dirs []string, upTo string) *watch {
	w := &watch{}
	w.startMain()
	cur := ""
	for {
		var subs []string
		for _, d := range dirs {
			if parentOf(d) == cur {
				subs = append(subs, childOf(d, cur))
			}
		}
		slices.Sort(subs)
		w.listed(subs)
		if cur == upTo {
			return w
		}
		next, ok := w.nextDir()
		if !ok {
			panic("walkTo: " + upTo + " not in the tree")
		}
		cur = next
	}
}

func watchAt(upTo string) *watch { return walkTo(ruleTree, upTo) }

func pendingOf(w *watch) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := slices.Clone(w.pending)
	slices.Sort(p)
	return p
}

func TestWatchRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		w    func() *watch
		op   func(w *watch)
		want []string
	}{
		{"dir from unwalked into walked", func() *watch { return watchAt("a") },
			func(w *watch) { w.renamed("z/sub", "a/sub", 0, true, false) }, []string{"a/sub"}},
		{"file from unwalked into walked", func() *watch { return watchAt("a") },
			func(w *watch) { w.renamed("z/f", "a/f", 0, false, false) }, []string{"a/f"}},
		{"file within a listed directory", func() *watch { return watchAt("a") },
			func(w *watch) { w.renamed("a/f", "a/g", 0, false, false) }, nil},
		{"file from walked into unwalked: the slave may lack z", func() *watch { return watchAt("a") },
			func(w *watch) { w.renamed("a/f", "z/f", 0, false, false) }, []string{"a/f"}},
		{"both unwalked", func() *watch { return watchAt("a") },
			func(w *watch) { w.renamed("y/f", "z/f", 0, true, false) }, nil},
		{"dir whose walk is in progress, moved into the walked part", func() *watch { return watchAt("a/b") },
			func(w *watch) { w.renamed("a", "0a", 0, true, false) }, []string{"0a"}},
		{"walked dir over a name whose listing is to come", func() *watch { return watchAt("a") },
			func(w *watch) { w.renamed("0/d", "a/d", 0, true, false) }, []string{"0/d", "a/d"}}, // a/d: for a's mtime
		{"walked dir, no replace", func() *watch { return watchAt("a") },
			func(w *watch) { w.renamed("0/d", "a/d", wire.RenameNoReplace, true, false) }, nil},
		{"walked dir over a walked one", func() *watch { return watchAt("b") },
			func(w *watch) { w.renamed("0/d", "a/d", 0, true, false) }, nil},
		{"link of an unwalked file", func() *watch { return watchAt("a") },
			func(w *watch) { w.linked("z/f", "a/f", fileKey{ino: 1}, true) }, []string{"a/f"}},
		{"link of a walked file", func() *watch { return watchAt("a") },
			func(w *watch) { w.linked("0/f", "a/g", fileKey{ino: 1}, true) }, nil},
		{"link of a walked file into the unwalked part", func() *watch { return watchAt("a") },
			func(w *watch) { w.linked("0/f", "z/g", fileKey{ino: 1}, true) }, []string{"0/f"}},
		{"rmdir of a dir not listed yet", func() *watch { return watchAt("a") },
			func(w *watch) { w.removedDir("a/x") }, []string{"a/x"}},
		{"rmdir of a walked dir", func() *watch { return watchAt("a") },
			func(w *watch) { w.removedDir("0/x") }, nil},
		{"rmdir in the unwalked part", func() *watch { return watchAt("a") },
			func(w *watch) { w.removedDir("z/x") }, nil},
		{"name added to a directory listed in several items", func() *watch {
			w := watchAt("b")
			w.nextDir() // c
			w.emittedUpTo("m")
			return w
		}, func(w *watch) {
			w.created("c/new")
			w.created("d/new")
			w.linked("b/f", "c/l", fileKey{ino: 1}, true)
			w.renamed("c/x", "c/y", 0, false, false)
		}, []string{"c/l", "c/new", "c/y"}},
		{"after the last item", func() *watch {
			w := watchAt("b")
			w.nextDir() // c
			w.emittedUpTo("m")
			w.listed(nil)
			return w
		}, func(w *watch) { w.created("c/new") }, nil},
		{"a directory new in the root after its listing", func() *watch { return watchAt("a") },
			func(w *watch) { w.renamed("z/x", "n1/n9", 0, true, false) }, []string{"n1/n9"}},
		{"made in a listed directory", func() *watch { return watchAt("a") },
			func(w *watch) { w.created("a/new") }, nil},
		{"pending roots move along", func() *watch {
			w := &watch{}
			w.add("a/x")
			return w
		}, func(w *watch) { w.renamed("a", "q", 0, true, false) }, []string{"q"}},
		{"pending root moved into an unrelated place", func() *watch {
			w := &watch{}
			w.add("a/x")
			return w
		}, func(w *watch) { w.renamed("a/x", "b/y", 0, true, false) }, []string{"a/x", "b/y"}}, // a/x: a's mtime, if the slave lacked a/x
		{"exchange swaps pending roots", func() *watch {
			w := &watch{}
			w.add("a/x")
			return w
		}, func(w *watch) { w.renamed("a", "b", wire.RenameExchange, true, true) }, []string{"b"}},
		{"exchange of two walked files", func() *watch { return watchAt("b") },
			func(w *watch) { w.renamed("a/f", "a/g", wire.RenameExchange, false, false) }, nil},
		{"exchange with an unwalked file", func() *watch { return watchAt("b") },
			func(w *watch) { w.renamed("a/f", "z/g", wire.RenameExchange, false, false) }, []string{"a/f"}},
		{"rename over a pending root drops it", func() *watch {
			w := &watch{}
			w.add("a/x/y")
			return w
		}, func(w *watch) { w.renamed("b", "a/x", 0, false, false) }, nil},
		{"rmdir of a pending root", func() *watch {
			w := &watch{}
			w.add("a/x")
			return w
		}, func(w *watch) { w.removedDir("a/x") }, []string{"a/x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.w()
			tc.op(w)
			if got := pendingOf(w); !slices.Equal(got, tc.want) {
				t.Errorf("pending %q, want %q", got, tc.want)
			}
		})
	}
}

func TestWatchPendingSubsumes(t *testing.T) {
	w := &watch{}
	w.add("a/b")
	w.add("a/b/c")
	w.add("x/y")
	w.add("a")
	w.add("x/z")
	if got := pendingOf(w); !slices.Equal(got, []string{"a", "x/y", "x/z"}) {
		t.Fatalf("pending %q", got)
	}
	// Pending roots are stale, entries and subtrees.
	if !w.covered("a/q") || !w.staleTree("a", true) || w.covered("b") || w.covered("x") {
		t.Fatal("staleness of pending roots")
	}
	// The smallest goes first, with the roots of the same parent.
	parent, names, ok := w.popPending()
	if !ok || parent != "" || !slices.Equal(names, []string{"a"}) {
		t.Fatalf("popPending = %q %q %v", parent, names, ok)
	}
	parent, names, ok = w.popPending()
	if !ok || parent != "x" || !slices.Equal(names, []string{"y", "z"}) {
		t.Fatalf("popPending = %q %q %v", parent, names, ok)
	}
	// They stay stale until listed: x's entries, then y's and z's.
	if !w.covered("x/y") || !w.covered("x/q") || !w.covered("x/y/a") || w.covered("x/q/a") || w.covered("a") {
		t.Fatal("a batch covers its parent's entries and its roots' subtrees")
	}
	w.listed([]string{"y", "z"})
	if w.covered("x/y") || w.covered("x/q") || !w.covered("x/y/a") || !w.staleTree("x/z", true) || w.staleTree("x/q", true) {
		t.Fatal("after the parent's listing the roots' entries are current, their content not")
	}
	w.endWalk()
	if w.covered("x/y/a") || w.staleTree("x", true) {
		t.Fatal("after the walk nothing is stale")
	}
}

func TestWatchOverflowRestarts(t *testing.T) {
	w := watchAt("a")
	for i := 0; i <= maxPending; i++ {
		w.renamed(fmt.Sprintf("z/%d", i), fmt.Sprintf("a/%d", i), 0, false, false)
	}
	if !w.needsRestart() || w.idle() {
		t.Fatal("overflow not reported")
	}
	if _, _, ok := w.popPending(); ok {
		t.Fatal("popPending after an overflow")
	}
	w.startMain()
	if w.needsRestart() || !w.idle() || !w.covered("a/x") {
		t.Fatal("startMain must clear the overflow and start over")
	}
}

// The names of hard-linked files the slave has: followed through link
// ops between listed places, renames and unlinks; not through links into
// places still to be listed (the slave's link may fail there).
func TestWatchLinkNames(t *testing.T) {
	w := watchAt("a")
	k := fileKey{ino: 7}
	w.linked("0/f", "a/g", k, true)
	w.linked("0/f", "z/h", k, true) // z is still to be listed
	g, ok := w.groupOf("0/f")
	if !ok {
		t.Fatal("0/f not followed")
	}
	names := func() []string {
		n, known := w.namesIn(g)
		if !known {
			t.Fatal("names not known")
		}
		return n
	}
	if got := names(); !slices.Equal(got, []string{"0/f", "a/g"}) {
		t.Fatalf("names %q", got)
	}
	w.renamed("0", "b", 0, true, false)
	if got := names(); !slices.Equal(got, []string{"a/g", "b/f"}) {
		t.Fatalf("after rename: %q", got)
	}
	w.renamed("a/g", "z/g", 0, false, false) // into the part still to be listed
	if got := names(); !slices.Equal(got, []string{"b/f"}) {
		t.Fatalf("after a rename into the unlisted part: %q", got)
	}
	// Another file on the slave, same master file: split off and queued
	// when b/f's group joins a LinkID.
	w.trackName("a/x", 99, k)
	w.regroup(g, 5, k)
	w.splitOff(k, 5)
	if n, _ := w.namesIn(5); !slices.Equal(n, []string{"b/f"}) {
		t.Fatalf("group 5: %q", n)
	}
	if _, ok := w.groupOf("a/x"); ok || !slices.Contains(pendingOf(w), "a/x") {
		t.Fatalf("a/x not split off: pending %q", pendingOf(w))
	}
	w.unlinked("b/f")
	if n, _ := w.namesIn(5); len(n) != 0 {
		t.Fatalf("after unlink: %q", n)
	}
}
