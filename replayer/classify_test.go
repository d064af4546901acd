package replayer

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/internal/treecmp"
	"github.com/tdfs/tdfs/wire"
)

// TestClassifyTable pins the class of each kind of error, wrapped the way
// Apply wraps them, and the cause line ResourceCause gives.
func TestClassifyTable(t *testing.T) {
	// Apply wraps every cause in the op's description and often in a
	// *PathError-like layer: classification must see through both.
	wrap := func(err error) error {
		return fmt.Errorf("apply write handle 1: write 3 bytes at 0: %w", &os.PathError{Op: "pwrite", Path: "f", Err: err})
	}
	cases := []struct {
		name  string
		err   error
		want  Class
		cause string // checked when not "-"
	}{
		{"nil", nil, ClassNone, ""},

		{"ENOSPC", wrap(unix.ENOSPC), ClassResource, "disk full"},
		{"EDQUOT", wrap(unix.EDQUOT), ClassResource, "-"},
		{"EROFS", wrap(unix.EROFS), ClassResource, "read-only filesystem"},
		{"EIO", wrap(unix.EIO), ClassResource, "-"},
		{"EMFILE", wrap(unix.EMFILE), ClassResource, "-"},
		{"EOPNOTSUPP", wrap(unix.EOPNOTSUPP), ClassResource, "-"},

		{"wire.ErrRefused", wire.ErrRefused, ClassRefused, ""},
		{"wire.ErrLimit", wire.ErrLimit, ClassRefused, ""},
		{"wrapped wire.ErrRefused", fmt.Errorf("apply mknod %q: %w: mknod of a character device", "n", wire.ErrRefused), ClassRefused, ""},
		{"wrapped wire.ErrLimit", fmt.Errorf("apply open %q: %w: handle 9", "f", wire.ErrLimit), ClassRefused, ""},

		{"ENOENT", wrap(unix.ENOENT), ClassDiverged, ""},
		{"EEXIST", wrap(unix.EEXIST), ClassDiverged, ""},
		{"ENOTDIR", wrap(unix.ENOTDIR), ClassDiverged, ""},
		{"EISDIR", wrap(unix.EISDIR), ClassDiverged, ""},
		{"ENOTEMPTY", wrap(unix.ENOTEMPTY), ClassDiverged, ""},
		{"ErrUnknownHandle", fmt.Errorf("apply write handle 7: %w %d", ErrUnknownHandle, 7), ClassDiverged, ""},
		{"ErrUncertain", fmt.Errorf("reapply rename: %w: RENAME_EXCHANGE", ErrUncertain), ClassDiverged, ""},
		// A symlink where the master has a directory: a refusal by its
		// wording, but what it says is that the trees differ.
		{"wire.ErrRefused wrapping ELOOP", fmt.Errorf("apply create %q: %w: %q passes through a symlink: %w", "d/f", wire.ErrRefused, "d", unix.ELOOP), ClassDiverged, ""},
		{"wrong type", fmt.Errorf("apply open %q: %w", "d", wrongType("directory is not a regular file")), ClassDiverged, ""},
	}
	for _, c := range cases {
		if got := Classify(c.err); got != c.want {
			t.Errorf("%s: Classify(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
		cause := ResourceCause(c.err)
		switch {
		case c.cause != "-" && cause != c.cause:
			t.Errorf("%s: ResourceCause(%v) = %q, want %q", c.name, c.err, cause, c.cause)
		case c.want == ClassResource && cause == "":
			t.Errorf("%s: ResourceCause(%v) is empty for a resource error", c.name, c.err)
		}
	}
	// The class names appear in logs and status lines: they must differ.
	seen := map[string]Class{}
	for _, c := range []Class{ClassNone, ClassResource, ClassRefused, ClassDiverged} {
		if prev, dup := seen[c.String()]; dup {
			t.Errorf("classes %d and %d are both named %q", prev, c, c.String())
		}
		seen[c.String()] = c
	}
}

// TestClassifyDivergedKnownCases holds minimal reproductions of ops that
// the master applied, failing on a replica that differs from its tree,
// that the property test below found or that it cannot generate. Each case
// builds the trees, applies all its ops but the last to both (they must
// succeed), and then the last, which must succeed on the master and fail
// on the slave in class want; a diverged one must be skipped (nil) by a
// slave in tolerant mode.
//
//   - CopyRange whose source and destination are one inode on the slave
//     but two files on the master (the slave's tree holds a hard link, or
//     a rename, that the master's does not): the overlap check once
//     refused it as if the master had sent nonsense (ClassRefused, a
//     replica wedged for ever). The property test found it
//     (TDFS_TEST_SEED=36), through a path source and through a handle.
//   - Setattr setting the setgid bit on a path that is a directory on the
//     master (allowed) and a regular file on the slave: the slave cannot
//     tell it from a chmod g+s of a file, which its policy refuses, so it
//     is a refusal (ClassRefused), and stays one until the master refuses
//     at its mount what its slaves would refuse.
func TestClassifyDivergedKnownCases(t *testing.T) {
	omit := wire.Time{Omit: true}
	data := []byte(strings.Repeat("0123456789", 10))
	cases := []struct {
		name   string
		master func(b treeBuilder)
		slave  func(b treeBuilder)
		ops    []wire.Op
		want   Class
	}{
		{
			name:   "copy from a path that is the destination's inode on the slave only",
			master: func(b treeBuilder) { b.file("a", data, 0o644); b.file("b", data, 0o644) },
			slave:  func(b treeBuilder) { b.file("a", data, 0o644); b.link("a", "b") },
			ops: []wire.Op{
				&wire.Open{Path: "b", Handle: 1, Mtime: omit},
				&wire.CopyRange{SrcPath: "a", SrcOff: 10, Handle: 1, Off: 20, Len: 50, Mtime: omit},
			},
			want: ClassDiverged,
		},
		{
			name:   "copy between handles that are one inode on the slave only",
			master: func(b treeBuilder) { b.file("a", data, 0o644); b.file("b", data, 0o644) },
			slave:  func(b treeBuilder) { b.file("a", data, 0o644); b.link("a", "b") },
			ops: []wire.Op{
				&wire.Open{Path: "a", Handle: 1, Mtime: omit},
				&wire.Open{Path: "b", Handle: 2, Mtime: omit},
				&wire.CopyRange{SrcHandle: 1, SrcOff: 10, Handle: 2, Off: 20, Len: 50, Mtime: omit},
			},
			want: ClassDiverged,
		},
		{
			name:   "setgid on a directory of the master that is a file on the slave",
			master: func(b treeBuilder) { b.dir("d", 0o755) },
			slave:  func(b treeBuilder) { b.file("d", data, 0o644) },
			ops: []wire.Op{
				&wire.Setattr{Path: "d", Valid: wire.SetMode, Mode: 0o2755, Mtime: omit},
			},
			want: ClassRefused,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mRoot, sRoot := t.TempDir(), t.TempDir()
			c.master(treeBuilder{t, mRoot})
			c.slave(treeBuilder{t, sRoot})
			m := newTestReplayer(t, mRoot, dvOptions())
			s := newTestReplayer(t, sRoot, dvOptions())
			last := len(c.ops) - 1
			for i, op := range c.ops {
				if err := m.Apply(op); err != nil {
					t.Fatalf("master: %s: %v", describe(op), err)
				}
				err := s.Apply(op)
				if i < last {
					if err != nil {
						t.Fatalf("slave: %s: %v", describe(op), err)
					}
					continue
				}
				if err == nil {
					t.Fatalf("slave: %s succeeded on a tree that differs", describe(op))
				}
				if got := Classify(err); got != c.want {
					t.Errorf("op %s\n\terror %q\n\tClassify = %v, want %v", showOp(op), err, got, c.want)
				}
				if c.want != ClassDiverged {
					return
				}
				s.SetTolerant(true)
				if err := s.Apply(op); err != nil {
					t.Errorf("tolerant mode: %s: %v, want it skipped", describe(op), err)
				}
			}
		})
	}
}

// The property test below guards against one bug class: an error of an op
// that the master applied successfully, met on a replica that differs from
// the master's tree, classified as ClassResource or ClassRefused. The
// slave would then retry it, or wait, forever, instead of asking for the
// resync that repairs it.
//
// Each iteration, for one seed:
//
//  1. builds the same random small tree in a master replica M and three
//     slave replicas, all through Apply;
//  2. makes the slaves differ from M by editing them directly on disk, the
//     same random way for all three;
//  3. generates random ops for M's tree over a small namespace, so that
//     they meet the differences often, and applies each to M first. An op
//     that fails on M is dropped: a master only sends ops that succeeded.
//     Every other op goes to
//     - S through Apply: any error must be ClassDiverged, and Reapply of
//     the op that failed must fail, if at all, as ClassDiverged too;
//     - R through Reapply only (as after a crash): same rule;
//     - T, in tolerant mode, through Apply: it must return nil, because
//     tolerant mode skips exactly the diverged failures.
//
// M is itself a Replayer: its own refusals (set-id modes, overlapping copy
// ranges) then drop the op as a real master's failure would.
//
// Confinement is checked on the way: a sentinel directory next to the
// replicas, which the slaves' symlinks point into, must be untouched, and
// no name of the namespace may appear in "/", which others point to.
//
// By default it runs seeds 1..200, stopping early after defaultBudget so
// that it stays quick under -race on a slow machine. TDFS_TEST_SEED=n runs
// seed n alone (with TDFS_TEST_ITERS=k: seeds n..n+k-1); TDFS_TEST_ITERS=k
// alone runs k seeds from 1. Either removes the time budget.
func TestClassifyDivergedProperty(t *testing.T) {
	const defaultBudget = 8 * time.Second
	first, iters, budget := uint64(1), 200, defaultBudget
	if os.Getenv("TDFS_TEST_SEED") != "" || os.Getenv("TDFS_TEST_ITERS") != "" {
		budget = 0
	}
	if s := os.Getenv("TDFS_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TDFS_TEST_SEED=%q: %v", s, err)
		}
		first, iters = v, 1
	}
	if s := os.Getenv("TDFS_TEST_ITERS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("TDFS_TEST_ITERS=%q: want a positive number", s)
		}
		iters = v
	}
	base := t.TempDir()
	outsideBefore := rootNamesState()
	stats := newDvStats()
	start := time.Now()
	for i := range iters {
		seed := first + uint64(i)
		it := newDvIter(t, base, seed, stats)
		it.run()
		if stats.full() {
			t.Logf("stopping after %d of %d seeds: enough failures recorded", i+1, iters)
			break
		}
		if budget > 0 && time.Since(start) > budget && i+1 < iters {
			t.Logf("stopping after %d of %d seeds: time budget of %v spent", i+1, iters, budget)
			break
		}
	}
	if after := rootNamesState(); after != outsideBefore {
		t.Errorf("names of the test's namespace changed in \"/\": before %s, after %s", outsideBefore, after)
	}
	stats.report(t, time.Since(start))
}

// dvNames is the namespace: ops and divergences act on these paths only,
// so that ops meet the differences often. "d", "e" and "d/f" are meant as
// directories but take any type.
var dvNames = []string{"a", "b", "c", "d", "e", "d/a", "d/b", "d/f", "d/f/a", "e/a", "e/b"}

// dvKind is the type of a name in a tree.
type dvKind int

const (
	dvNone dvKind = iota
	dvFile
	dvDir
	dvSymlink
	dvOther // fifo: only divergences make them
)

func dvKindAt(root, p string) dvKind {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, filepath.FromSlash(p)), &st); err != nil {
		return dvNone
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return dvFile
	case unix.S_IFDIR:
		return dvDir
	case unix.S_IFLNK:
		return dvSymlink
	}
	return dvOther
}

// The three ways a slave replica receives the ops.
const (
	viaApply    = "S (Apply)"
	viaReapply  = "R (Reapply)"
	viaTolerant = "T (tolerant Apply)"
)

type dvSlave struct {
	via  string
	root string
	r    *Replayer
}

// dvIter is one seed's run.
type dvIter struct {
	t     *testing.T
	seed  uint64
	rng   *rand.Rand
	stats *dvStats

	dir     string // holds M, the slaves and the sentinel
	mRoot   string
	m       *Replayer
	slaves  []*dvSlave
	outside string // the sentinel

	diverged []string // the divergences made, in order
	history  []string // the ops sent (that succeeded on M), in order
	stamps   int64
	omitOK   bool // stamp may omit a time (not while building: the trees must be equal)
	nextH    uint64
	open     []uint64 // handles open on M
}

func newDvIter(t *testing.T, base string, seed uint64, stats *dvStats) *dvIter {
	it := &dvIter{
		t:     t,
		seed:  seed,
		rng:   rand.New(rand.NewPCG(seed, 0x7464_6673_636c_7373)),
		stats: stats,
		dir:   filepath.Join(base, strconv.FormatUint(seed, 10)),
	}
	it.mRoot = filepath.Join(it.dir, "M")
	it.outside = filepath.Join(it.dir, "outside")
	return it
}

// dvOptions are the Replayer options of every replica: owners are applied when
// the test runs as root, as the slave does.
func dvOptions() Options {
	return Options{Chown: os.Geteuid() == 0, Logger: slog.New(slog.DiscardHandler)}
}

func (it *dvIter) must(what string, err error) {
	it.t.Helper()
	if err != nil {
		it.t.Fatalf("seed %d (TDFS_TEST_SEED=%d): %s: %v", it.seed, it.seed, what, err)
	}
}

func (it *dvIter) run() {
	t := it.t
	t.Helper()
	it.must("mkdir", os.MkdirAll(it.mRoot, 0o755))
	// The sentinel sits where the slaves' "../outside" symlinks lead.
	it.must("mkdir", os.MkdirAll(filepath.Join(it.outside, "sub"), 0o755))
	it.must("write", os.WriteFile(filepath.Join(it.outside, "f"), []byte("sentinel"), 0o644))
	it.must("write", os.WriteFile(filepath.Join(it.outside, "sub", "a"), []byte("sentinel"), 0o644))
	it.must("chtimes", os.Chtimes(filepath.Join(it.outside, "sub"), timeAt(100, 1), timeAt(100, 1)))
	it.must("chtimes", os.Chtimes(it.outside, timeAt(100, 2), timeAt(100, 2)))
	sentinel := snapshot(t, it.outside)

	var err error
	it.m, err = New(it.mRoot, dvOptions())
	it.must("New M", err)
	for _, via := range []string{viaApply, viaReapply, viaTolerant} {
		root := filepath.Join(it.dir, via[:1])
		it.must("mkdir", os.Mkdir(root, 0o755))
		r, err := New(root, dvOptions())
		it.must("New "+via, err)
		it.slaves = append(it.slaves, &dvSlave{via: via, root: root, r: r})
	}
	defer func() {
		for _, r := range append([]*Replayer{it.m}, it.r()...) {
			if err := r.Close(); err != nil {
				t.Errorf("seed %d: close: %v", it.seed, err)
			}
		}
		os.RemoveAll(it.dir)
	}()

	// Equal starting trees, to the root's mtime, which ops below the root
	// never set.
	for _, root := range []string{it.mRoot, it.slaves[0].root, it.slaves[1].root, it.slaves[2].root} {
		it.must("chtimes", os.Chtimes(root, timeAt(100, 3), timeAt(100, 3)))
	}
	it.build()
	// The harness must start from equal trees, or it would blame the
	// replayer for its own mistakes.
	if d, err := treecmp.Diff(it.mRoot, it.slaves[0].root, treecmp.Options{}); err != nil || d != "" {
		t.Fatalf("seed %d: the built trees differ before any divergence (%v):\n%s", it.seed, err, d)
	}

	it.diverge()
	it.omitOK = true
	for _, s := range it.slaves {
		if s.via == viaTolerant {
			s.r.SetTolerant(true)
		}
	}
	for range 40 {
		it.send(it.genOp())
	}
	it.stats.seeds++

	if d := diffTrees(sentinel, snapshot(t, it.outside)); len(d) > 0 {
		t.Errorf("seed %d (TDFS_TEST_SEED=%d): the sentinel next to the replicas changed:\n%s\ndivergence: %s\nops:\n\t%s",
			it.seed, it.seed, strings.Join(d, "\n"), it.divergence(), strings.Join(it.history, "\n\t"))
	}
	var names []string
	entries, err := os.ReadDir(it.dir)
	it.must("readdir", err)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"M", "R", "S", "T", "outside"}; !slices.Equal(names, want) {
		t.Errorf("seed %d (TDFS_TEST_SEED=%d): the directory of the replicas holds %q, want %q", it.seed, it.seed, names, want)
	}
}

func (it *dvIter) r() []*Replayer {
	var rs []*Replayer
	for _, s := range it.slaves {
		rs = append(rs, s.r)
	}
	return rs
}

// build makes the same random tree on every replica through Apply.
func (it *dvIter) build() {
	for range 10 + it.rng.IntN(10) {
		var ops []wire.Op
		switch it.rng.IntN(8) {
		case 0, 1, 2:
			ops = append(ops, &wire.Mkdir{Path: it.anyName(), Mode: it.dirMode(), Uid: it.uid(), Gid: it.gid(), Mtime: it.stamp(), DirMtime: it.stamp()})
		case 3, 4, 5:
			// Create under a handle, write, release: the usual life of a file.
			h := it.handle()
			ops = append(ops,
				&wire.Create{Path: it.anyName(), Handle: h, Flags: wire.OpenExcl, Mode: it.fileMode(), Uid: it.uid(), Gid: it.gid(), Mtime: it.stamp(), DirMtime: it.stamp()},
				&wire.Write{Handle: h, Off: int64(it.rng.IntN(3000)), Data: it.data(), Mtime: it.stamp()},
				&wire.Write{Handle: h, Off: 0, Data: it.data(), Mtime: it.stamp()},
				&wire.Release{Handle: h})
		case 6:
			if it.rng.IntN(2) == 0 {
				ops = append(ops, &wire.Symlink{Path: it.anyName(), Target: it.symlinkTarget(), Uid: it.uid(), Gid: it.gid(), Mtime: it.stamp(), DirMtime: it.stamp()})
			} else {
				ops = append(ops, &wire.Link{OldPath: it.pick(dvFile), NewPath: it.pick(dvNone), DirMtime: it.stamp()})
			}
		case 7:
			ops = append(ops, &wire.Setxattr{Path: it.pick(dvFile, dvDir), Name: it.xattrName(), Value: it.data()})
		}
		for _, op := range ops {
			if err := it.m.Apply(op); err != nil {
				break // the rest of a file's life needs its create
			}
			for _, s := range it.slaves {
				it.must(fmt.Sprintf("build: %s: %s", s.via, describe(op)), s.r.Apply(op))
			}
		}
	}
}

// diverge makes the slaves differ from M, directly on disk, the same way
// on each. The actions are chosen from M's tree and data, then done on
// every slave; one that cannot be done (an earlier action took its name
// away) is skipped on all of them.
func (it *dvIter) diverge() {
	type action struct {
		desc string
		do   func(root string) error
	}
	var actions []action
	for range 1 + it.rng.IntN(3) {
		p := it.pick(dvFile, dvDir, dvSymlink)
		q := it.anyName()
		depth := strings.Count(p, "/")
		var a action
		switch it.rng.IntN(13) {
		case 0:
			p = it.pick(dvFile, dvSymlink)
			a = action{"remove file " + p, func(root string) error {
				return os.Remove(dvAbs(root, p))
			}}
		case 1:
			p = it.pick(dvDir)
			a = action{"remove directory " + p + " and all beneath", func(root string) error {
				return os.RemoveAll(dvAbs(root, p))
			}}
		case 2:
			p = it.pick(dvFile)
			a = action{"replace file " + p + " with an empty directory", func(root string) error {
				if err := os.Remove(dvAbs(root, p)); err != nil {
					return err
				}
				return os.Mkdir(dvAbs(root, p), 0o755)
			}}
		case 3:
			p = it.pick(dvDir)
			data := it.data()
			a = action{"replace directory " + p + " with a file", func(root string) error {
				if err := os.RemoveAll(dvAbs(root, p)); err != nil {
					return err
				}
				return os.WriteFile(dvAbs(root, p), data, 0o644)
			}}
		case 4, 5:
			// Inside the root: a name of the namespace, relative or from
			// the root's parent.
			target := []string{"a", "d", "d/f", "../d", "e/../a", "missing"}[it.rng.IntN(6)]
			a = action{fmt.Sprintf("replace %s with a symlink to %q", p, target), func(root string) error {
				return dvReplaceWithSymlink(root, p, target)
			}}
		case 6:
			// Out of the root: into the sentinel, or to "/".
			up := strings.Repeat("../", depth+1)
			target := []string{up + "outside", up + "outside/f", up + "outside/sub", "/"}[it.rng.IntN(4)]
			a = action{fmt.Sprintf("replace %s with a symlink out of the root, to %q", p, target), func(root string) error {
				return dvReplaceWithSymlink(root, p, target)
			}}
		case 7:
			if it.rng.IntN(3) == 0 {
				q = "renamed" // a name no op uses
			}
			a = action{fmt.Sprintf("rename %s to %s", p, q), func(root string) error {
				if err := dvSafe(root, q, false); err != nil {
					return err
				}
				return os.Rename(dvAbs(root, p), dvAbs(root, q))
			}}
		case 8:
			p = it.pick(dvFile)
			size := int64(it.rng.IntN(2000))
			a = action{fmt.Sprintf("truncate file %s to %d bytes", p, size), func(root string) error {
				if dvKindAt(root, p) != dvFile {
					return errors.New("not a regular file")
				}
				return os.Truncate(dvAbs(root, p), size)
			}}
		case 9:
			p = it.pick(dvFile)
			data := it.data()
			a = action{fmt.Sprintf("rewrite file %s with %d other bytes", p, len(data)), func(root string) error {
				if dvKindAt(root, p) != dvFile {
					return errors.New("not a regular file")
				}
				return os.WriteFile(dvAbs(root, p), data, 0o644)
			}}
		case 10:
			if it.rng.IntN(3) != 0 {
				continue // wiping everything hides the other differences: make it rarer
			}
			a = action{"wipe everything", func(root string) error {
				entries, err := os.ReadDir(root)
				if err != nil {
					return err
				}
				for _, e := range entries {
					// RemoveAll removes a symlink, never what it points to.
					if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
						return err
					}
				}
				return nil
			}}
		case 11:
			// Two names of one inode where the master has two files:
			// what copies between them must not take for a refusal.
			p, q = it.pick(dvFile), it.pick(dvFile)
			a = action{fmt.Sprintf("replace file %s with a hard link to file %s", p, q), func(root string) error {
				if p == q || dvKindAt(root, p) != dvFile || dvKindAt(root, q) != dvFile {
					return errors.New("not two regular files")
				}
				if err := dvSafe(root, q, true); err != nil {
					return err
				}
				if err := os.Remove(dvAbs(root, p)); err != nil {
					return err
				}
				return os.Link(dvAbs(root, q), dvAbs(root, p))
			}}
		case 12:
			a = action{"replace " + p + " with a fifo", func(root string) error {
				if err := os.RemoveAll(dvAbs(root, p)); err != nil {
					return err
				}
				return unix.Mkfifo(dvAbs(root, p), 0o644)
			}}
		}
		actions = append(actions, a)
	}
	for _, a := range actions {
		// Every action names its target by path: it must not go through
		// a symlink an earlier action made, or the harness itself would
		// change what is outside the replica.
		do := func(root string, desc string) error {
			for _, p := range dvPathsIn(desc) {
				if err := dvSafe(root, p, false); err != nil {
					return err
				}
			}
			return a.do(root)
		}
		if err := do(it.slaves[0].root, a.desc); err != nil {
			continue // the replicas are equal: it fails on every one
		}
		for _, s := range it.slaves[1:] {
			it.must("diverge "+s.via+": "+a.desc, do(s.root, a.desc))
		}
		it.diverged = append(it.diverged, a.desc)
	}
}

// dvPathsIn returns the names of the namespace an action's description
// mentions, i.e. the paths it acts on.
func dvPathsIn(desc string) []string {
	var out []string
	for f := range strings.FieldsSeq(desc) {
		if slices.Contains(dvNames, f) || f == "renamed" {
			out = append(out, f)
		}
	}
	return out
}

func dvAbs(root, p string) string { return filepath.Join(root, filepath.FromSlash(p)) }

// dvSafe refuses a path whose parent components are not all real
// directories (missing is fine), and with mustExist one that is missing.
func dvSafe(root, p string, mustExist bool) error {
	parts := strings.Split(p, "/")
	for i := 1; i < len(parts); i++ {
		switch k := dvKindAt(root, strings.Join(parts[:i], "/")); k {
		case dvDir, dvNone:
		default:
			return fmt.Errorf("%s: a parent is not a directory", p)
		}
	}
	if mustExist && dvKindAt(root, p) == dvNone {
		return fmt.Errorf("%s: missing", p)
	}
	return nil
}

func dvReplaceWithSymlink(root, p, target string) error {
	if dvKindAt(root, p) == dvNone {
		return errors.New("nothing to replace")
	}
	if err := os.RemoveAll(dvAbs(root, p)); err != nil {
		return err
	}
	return os.Symlink(target, dvAbs(root, p))
}

func (it *dvIter) divergence() string {
	if len(it.diverged) == 0 {
		return "(none: every action chosen was skipped)"
	}
	return strings.Join(it.diverged, "; ")
}

// send applies op to M and, if M applied it, to every slave, and checks
// how each slave fails.
func (it *dvIter) send(op wire.Op) {
	if err := it.m.Apply(op); err != nil {
		it.stats.droppedOnM++
		return
	}
	it.noteHandles(op)
	it.history = append(it.history, showOp(op))
	it.stats.sent++
	for _, s := range it.slaves {
		switch s.via {
		case viaApply:
			err := s.r.Apply(op)
			if err == nil {
				continue
			}
			it.stats.note(s.via, op, err)
			it.check(s, "Apply", op, err)
			// As after a crash that left the op unknown: Reapply it.
			if rerr := s.r.Reapply(op); rerr != nil {
				it.stats.note(s.via+" then Reapply", op, rerr)
				it.check(s, "Reapply after the failed Apply", op, rerr)
			}
		case viaReapply:
			if err := s.r.Reapply(op); err != nil {
				it.stats.note(s.via, op, err)
				it.check(s, "Reapply", op, err)
			}
		case viaTolerant:
			if err := s.r.Apply(op); err != nil {
				it.stats.note(s.via, op, err)
				it.fail(s, "Apply in tolerant mode returned an error", op, err)
			}
		}
	}
}

func (it *dvIter) check(s *dvSlave, what string, op wire.Op, err error) {
	if c := Classify(err); c != ClassDiverged {
		it.fail(s, fmt.Sprintf("%s: Classify = %v, want %v", what, c, ClassDiverged), op, err)
	}
}

func (it *dvIter) fail(s *dvSlave, what string, op wire.Op, err error) {
	key := fmt.Sprintf("%s | %s | %v | class %v", s.via, strings.SplitN(what, ":", 2)[0], op.Type(), Classify(err))
	it.stats.failure(key, fmt.Sprintf(
		"seed %d (rerun: TDFS_TEST_SEED=%d go test -run ClassifyDivergedProperty ./replayer/)\n"+
			"\treplica %s: %s\n\top: %s\n\terror: %v\n\tdivergence: %s\n\tslave tree now: %s\n\tops sent before it:\n\t\t%s",
		it.seed, it.seed, s.via, what, showOp(op), err, it.divergence(), dvListing(s.root),
		strings.Join(it.history[:len(it.history)-1], "\n\t\t")))
}

// showOp formats op with every field, for a failure to be replayed: its
// String names only the paths and handle.
func showOp(op wire.Op) string {
	v := reflect.ValueOf(op)
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		return fmt.Sprintf("%T%+v", op, v.Elem().Interface())
	}
	return fmt.Sprintf("%T%+v", op, op)
}

// dvListing describes a tree in one line: path and type.
func dvListing(root string) string {
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		k := "file"
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			k = "symlink->" + target
		case d.IsDir():
			k = "dir"
		case !d.Type().IsRegular():
			k = "fifo"
		}
		out = append(out, rel+"("+k+")")
		return nil
	})
	return strings.Join(out, " ")
}

// noteHandles follows the handles open on M.
func (it *dvIter) noteHandles(op wire.Op) {
	switch o := op.(type) {
	case *wire.Create:
		if o.Handle != 0 {
			it.open = append(it.open, o.Handle)
		}
	case *wire.Open:
		if o.Handle != 0 {
			it.open = append(it.open, o.Handle)
		}
	case *wire.Release:
		it.open = slices.DeleteFunc(it.open, func(h uint64) bool { return h == o.Handle })
	}
}

// genOp makes a random op for M's tree.
func (it *dvIter) genOp() wire.Op {
	rng := it.rng
	// Few handles at once, as a master mostly has: release first.
	if len(it.open) >= 4 {
		return &wire.Release{Handle: it.openHandle()}
	}
	switch rng.IntN(17) {
	case 0, 1:
		h := uint64(0)
		if rng.IntN(4) != 0 {
			h = it.handle()
		}
		flags := []uint32{wire.OpenExcl, wire.OpenTrunc, 0}[rng.IntN(3)]
		return &wire.Create{Path: it.pick(dvNone, dvFile), Handle: h, Flags: flags, Mode: it.fileMode(), Uid: it.uid(), Gid: it.gid(), Mtime: it.stamp(), DirMtime: it.stamp()}
	case 2:
		h := uint64(0)
		if rng.IntN(5) != 0 {
			h = it.handle()
		}
		flags := []uint32{0, wire.OpenTrunc}[rng.IntN(2)]
		return &wire.Open{Path: it.pick(dvFile), Handle: h, Flags: flags, Mtime: it.stamp()}
	case 3, 4:
		if len(it.open) == 0 {
			return &wire.Open{Path: it.pick(dvFile), Handle: it.handle(), Mtime: it.stamp()}
		}
		return &wire.Write{Handle: it.openHandle(), Off: int64(rng.IntN(5000)), Data: it.data(), Mtime: it.stamp()}
	case 5:
		modes := []uint32{0, fallocKeepSize, fallocPunchHole | fallocKeepSize, fallocZeroRange, fallocZeroRange | fallocKeepSize}
		return &wire.Fallocate{Handle: it.openHandle(), Mode: modes[rng.IntN(len(modes))], Off: int64(rng.IntN(5000)), Len: int64(1 + rng.IntN(4000)), Mtime: it.stamp()}
	case 6:
		if rng.IntN(2) == 0 {
			o := it.setattr()
			o.Handle = it.openHandle()
			return o
		}
		o := it.setattr()
		o.Path = it.pick(dvFile, dvDir, dvSymlink)
		if rng.IntN(8) == 0 {
			o.Path = "" // the root
		}
		return o
	case 7:
		return &wire.Release{Handle: it.openHandle()}
	case 8:
		return &wire.Mkdir{Path: it.pick(dvNone, dvDir), Mode: it.dirMode(), Uid: it.uid(), Gid: it.gid(), Mtime: it.stamp(), DirMtime: it.stamp()}
	case 9:
		return &wire.Unlink{Path: it.pick(dvFile, dvSymlink), DirMtime: it.stamp()}
	case 10:
		return &wire.Rmdir{Path: it.pick(dvDir), DirMtime: it.stamp()}
	case 11, 12:
		flags := []uint32{0, 0, wire.RenameNoReplace, wire.RenameExchange}[rng.IntN(4)]
		return &wire.Rename{OldPath: it.pick(dvFile, dvDir, dvSymlink), NewPath: it.anyName(), Flags: flags, OldDirMtime: it.stamp(), NewDirMtime: it.stamp()}
	case 13:
		if rng.IntN(2) == 0 {
			return &wire.Link{OldPath: it.pick(dvFile, dvSymlink), NewPath: it.pick(dvNone), DirMtime: it.stamp()}
		}
		return &wire.Symlink{Path: it.pick(dvNone, dvSymlink), Target: it.symlinkTarget(), Uid: it.uid(), Gid: it.gid(), Mtime: it.stamp(), DirMtime: it.stamp()}
	case 14:
		if rng.IntN(3) == 0 {
			return &wire.Removexattr{Path: it.pick(dvFile, dvDir), Name: it.xattrName()}
		}
		flags := []uint32{0, wire.XattrCreate, wire.XattrReplace}[rng.IntN(3)]
		return &wire.Setxattr{Path: it.pick(dvFile, dvDir), Name: it.xattrName(), Value: it.data(), Flags: flags}
	default:
		return it.copyRange()
	}
}

// copyRange makes a CopyRange that M can apply: the source holds the
// range. The destination offset is often near the source's, so that a
// slave whose source and destination are one file sees overlapping ranges.
func (it *dvIter) copyRange() wire.Op {
	rng := it.rng
	dst := it.openHandle()
	o := &wire.CopyRange{Handle: dst, Mtime: it.stamp()}
	var size int64
	if len(it.open) > 0 && rng.IntN(2) == 0 {
		o.SrcHandle = it.openHandle()
		var st unix.Stat_t
		if fd, ok := it.m.handles[o.SrcHandle]; ok && unix.Fstat(fd, &st) == nil {
			size = st.Size
		}
	} else {
		o.SrcPath = it.pick(dvFile)
		var st unix.Stat_t
		if unix.Lstat(dvAbs(it.mRoot, o.SrcPath), &st) == nil {
			size = st.Size
		}
	}
	if size == 0 {
		o.Len = int64(1 + rng.IntN(100)) // M fails: dropped
		return o
	}
	o.SrcOff = rng.Int64N(size)
	o.Len = 1 + rng.Int64N(min(size-o.SrcOff, 3000))
	if rng.IntN(2) == 0 {
		o.Off = max(0, o.SrcOff+rng.Int64N(2*o.Len+1)-o.Len)
	} else {
		o.Off = rng.Int64N(6000)
	}
	return o
}

func (it *dvIter) setattr() *wire.Setattr {
	rng := it.rng
	o := &wire.Setattr{Mtime: it.stamp()}
	if rng.IntN(2) == 0 {
		o.Valid |= wire.SetMode
		// Directories and files alike: every mode keeps the owner's rwx,
		// so that the test can clean up after itself without root.
		o.Mode = []uint32{0o700, 0o755, 0o750, 0o775, 0o777, 0o1777}[rng.IntN(6)]
	}
	if rng.IntN(3) == 0 {
		o.Valid |= wire.SetSize
		o.Size = uint64(rng.IntN(6000))
	}
	if rng.IntN(4) == 0 {
		o.Valid |= wire.SetUid | wire.SetGid
		o.Uid, o.Gid = it.uid(), it.gid()
	}
	if rng.IntN(3) == 0 {
		o.Valid |= wire.SetAtime
		o.Atime = it.stamp()
	}
	if rng.IntN(2) == 0 {
		o.Valid |= wire.SetMtime
	}
	return o
}

// pick returns a name that has one of the kinds in M, mostly, and any
// name of the namespace otherwise.
func (it *dvIter) pick(kinds ...dvKind) string {
	if it.rng.IntN(5) != 0 {
		var fit []string
		for _, p := range dvNames {
			if slices.Contains(kinds, dvKindAt(it.mRoot, p)) {
				fit = append(fit, p)
			}
		}
		if len(fit) > 0 {
			return fit[it.rng.IntN(len(fit))]
		}
	}
	return it.anyName()
}

func (it *dvIter) anyName() string { return dvNames[it.rng.IntN(len(dvNames))] }

func (it *dvIter) handle() uint64 { it.nextH++; return it.nextH }

// openHandle returns a handle open on M, or one that is not (M fails).
func (it *dvIter) openHandle() uint64 {
	if len(it.open) == 0 {
		return it.nextH + 1
	}
	return it.open[it.rng.IntN(len(it.open))]
}

// stamp is a made-up time, now and then none.
func (it *dvIter) stamp() wire.Time {
	if it.omitOK && it.rng.IntN(8) == 0 {
		return wire.Time{Omit: true}
	}
	it.stamps++
	return wire.Time{Sec: 1_000_000_000 + it.stamps*1000, Nsec: uint32(it.stamps*7_777_777) % 1e9}
}

func (it *dvIter) data() []byte {
	b := make([]byte, 1+it.rng.IntN(40))
	for i := range b {
		b[i] = byte('a' + it.rng.IntN(26))
	}
	return b
}

// Modes never carry set-id bits: M, which refuses them, would drop the op.
func (it *dvIter) fileMode() uint32 {
	return []uint32{0o644, 0o600, 0o640, 0o755, 0o700, 0o1755}[it.rng.IntN(6)]
}

func (it *dvIter) dirMode() uint32 {
	return []uint32{0o755, 0o700, 0o750, 0o1777}[it.rng.IntN(4)]
}

func (it *dvIter) uid() uint32 {
	if os.Geteuid() == 0 && it.rng.IntN(3) == 0 {
		return 1234
	}
	return uint32(os.Geteuid())
}

func (it *dvIter) gid() uint32 {
	if os.Geteuid() == 0 && it.rng.IntN(3) == 0 {
		return 1234
	}
	return uint32(os.Getegid())
}

func (it *dvIter) xattrName() string { return []string{"user.a", "user.b"}[it.rng.IntN(2)] }

// symlinkTarget is opaque to the replayer; some lead out of the root.
func (it *dvIter) symlinkTarget() string {
	return []string{"a", "d", "d/f", "missing", "../outside", "../outside/f", "/"}[it.rng.IntN(7)]
}

// rootNamesState describes which top-level names of the namespace exist
// in "/", which some divergences point at: following such a symlink would
// make one.
func rootNamesState() string {
	var b strings.Builder
	for _, n := range append(slices.Clone(dvNames[:5]), "f", "renamed", "missing") {
		_, err := os.Lstat("/" + n)
		fmt.Fprintf(&b, "%s:%v ", n, err == nil)
	}
	return b.String()
}

// dvStats counts what the runs exercised and keeps one example of each
// distinct failure.
type dvStats struct {
	seeds, sent, droppedOnM int
	errs                    map[string]int // "replica | op type | class" -> count
	failures                map[string]int
	examples                map[string]string
	order                   []string
}

func newDvStats() *dvStats {
	return &dvStats{errs: map[string]int{}, failures: map[string]int{}, examples: map[string]string{}}
}

func (s *dvStats) note(via string, op wire.Op, err error) {
	s.errs[fmt.Sprintf("%s | %v | %v", via, op.Type(), Classify(err))]++
}

func (s *dvStats) failure(key, example string) {
	if s.failures[key] == 0 {
		s.examples[key] = example
		s.order = append(s.order, key)
	}
	s.failures[key]++
}

// full says enough failures were seen to stop early.
func (s *dvStats) full() bool {
	n := 0
	for _, c := range s.failures {
		n += c
	}
	return n >= 200
}

func (s *dvStats) report(t *testing.T, took time.Duration) {
	t.Helper()
	var keys []string
	for k := range s.errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var lines []string
	for _, k := range keys {
		lines = append(lines, fmt.Sprintf("%6d  %s", s.errs[k], k))
	}
	t.Logf("%d seeds in %v: %d ops sent, %d dropped because they failed on M; slave errors (count, replica | op | class):\n%s",
		s.seeds, took.Round(time.Millisecond), s.sent, s.droppedOnM, strings.Join(lines, "\n"))
	for _, k := range s.order {
		t.Errorf("MISCLASSIFIED (%d times): %s\nfirst example: %s", s.failures[k], k, s.examples[k])
	}
}
