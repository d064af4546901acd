package mirrorfs_test

// Resync passes with live ops: a random workload through the mount, and
// the cases of the watch made deterministic with the walk's test hooks.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/mirrorfs"
	"github.com/tdfs/tdfs/wire"
)

// workload changes the tree through the mount, one op at a time, with
// ops of every kind; progress counts ops done.
type workload struct {
	mnt  string
	rng  *rand.Rand
	ops  int
	mu   sync.Mutex
	done int
	fin  bool
	cond *sync.Cond
	open map[string]*os.File // files held open for writing
	log  []string
}

func newWorkload(mnt string, seed uint64, ops int) *workload {
	w := &workload{mnt: mnt, rng: rand.New(rand.NewPCG(seed, 42)), ops: ops, open: map[string]*os.File{}}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// paths lists the entries of the mount (files and dirs separately).
func (w *workload) paths() (files, dirs []string) {
	dirs = []string{""}
	filepath.WalkDir(w.mnt, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == w.mnt {
			return nil
		}
		rel, _ := filepath.Rel(w.mnt, p)
		if d.IsDir() {
			dirs = append(dirs, rel)
		} else if d.Type().IsRegular() {
			files = append(files, rel)
		}
		return nil
	})
	return files, dirs
}

func (w *workload) run() {
	defer func() {
		for _, f := range w.open {
			f.Close()
		}
		w.mu.Lock()
		w.fin = true
		w.cond.Broadcast()
		w.mu.Unlock()
	}()
	for i := 0; i < w.ops; i++ {
		files, dirs := w.paths()
		pick := func(xs []string) string {
			if len(xs) == 0 {
				return ""
			}
			return xs[w.rng.IntN(len(xs))]
		}
		m := func(rel string) string { return filepath.Join(w.mnt, rel) }
		fresh := func() string { return filepath.Join(pick(dirs), fmt.Sprintf("w%d-%d", i, w.rng.IntN(1000))) }
		f, d := pick(files), pick(dirs)
		var err error
		var what string
		switch k := w.rng.IntN(16); k {
		case 0, 1: // new file with data
			p := fresh()
			what = "create " + p
			err = os.WriteFile(m(p), make([]byte, w.rng.IntN(300<<10)), 0o644)
		case 2: // overwrite a range
			if f == "" {
				continue
			}
			what = "write " + f
			var h *os.File
			if h, err = os.OpenFile(m(f), os.O_WRONLY, 0); err == nil {
				b := make([]byte, w.rng.IntN(200<<10))
				for j := range b {
					b[j] = byte(i)
				}
				_, err = h.WriteAt(b, int64(w.rng.IntN(400<<10)))
				h.Close()
			}
		case 3: // truncate
			if f == "" {
				continue
			}
			what = "truncate " + f
			err = os.Truncate(m(f), int64(w.rng.IntN(300<<10)))
		case 4, 5: // rename a file anywhere
			if f == "" {
				continue
			}
			p := fresh()
			what = "rename " + f + " " + p
			err = os.Rename(m(f), m(p))
		case 6: // rename a directory
			if d == "" {
				continue
			}
			p := fresh()
			what = "rename dir " + d + " " + p
			err = os.Rename(m(d), m(p))
		case 7:
			p := fresh()
			what = "mkdir " + p
			err = os.Mkdir(m(p), 0o755)
		case 8:
			if d == "" {
				continue
			}
			what = "rmdir " + d
			err = os.Remove(m(d))
		case 9:
			if f == "" {
				continue
			}
			what = "unlink " + f
			err = os.Remove(m(f))
		case 10:
			if f == "" {
				continue
			}
			p := fresh()
			what = "link " + f + " " + p
			err = os.Link(m(f), m(p))
		case 11:
			p := fresh()
			what = "symlink " + p
			err = os.Symlink("t", m(p))
		case 12:
			if f == "" {
				continue
			}
			what = "chmod " + f
			err = os.Chmod(m(f), 0o600|os.FileMode(w.rng.IntN(0o77)))
		case 13:
			if f == "" {
				continue
			}
			what = "setxattr " + f
			err = unix.Setxattr(m(f), "user.w", []byte(fmt.Sprint(i)), 0)
		case 14: // hold a file open for writing, write through it later
			if f == "" || len(w.open) > 4 {
				continue
			}
			what = "hold " + f
			var h *os.File
			if h, err = os.OpenFile(m(f), os.O_WRONLY, 0); err == nil {
				w.open[fmt.Sprint(i)] = h
			}
		case 15: // write through, or close, a held file
			for k, h := range w.open {
				what = "write held " + k
				if w.rng.IntN(3) == 0 {
					err = h.Close()
					delete(w.open, k)
				} else {
					_, err = h.WriteAt([]byte(fmt.Sprint("held", i)), int64(w.rng.IntN(200<<10)))
				}
				break
			}
		}
		w.log = append(w.log, fmt.Sprintf("%s: %v", what, err))
		w.mu.Lock()
		w.done++
		w.cond.Broadcast()
		w.mu.Unlock()
	}
}

// await waits until the workload has done n ops, or has finished.
func (w *workload) await(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.done < n && !w.fin {
		w.cond.Wait()
	}
}

func (w *workload) finished() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for !w.fin {
		w.cond.Wait()
	}
}

// Live writes, renames, creates and unlinks while the pass runs: once
// both are over, the slave equals the backing dir. The walk waits for a
// few workload ops after each directory, so they interleave.
func TestResyncLiveWorkload(t *testing.T) {
	type tcase struct {
		name      string
		seed      uint64
		staleTree bool
	}
	cases := []tcase{
		{"empty slave", 11, false},
		{"stale slave", 12, true},
		{"stale slave 2", 13, true},
	}
	// TDFS_RESYNC_STRESS=n adds n more seeds (for hunting rare orders).
	if n, _ := strconv.Atoi(os.Getenv("TDFS_RESYNC_STRESS")); n > 0 {
		for i := range n {
			cases = append(cases, tcase{fmt.Sprintf("stress %d", i), uint64(1000 + i), i%2 == 0})
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resetHooks(t)
			r := newRig(t, 1, 64<<10, func(back string) {
				makeTree(t, back, tc.seed, treeOpts{dirs: 15, files: 50, maxSize: 400 << 10})
			})
			s := r.slave(0, true, func(root string) {
				if tc.staleTree {
					// Another tree entirely, with names in common.
					makeTree(t, root, tc.seed+100, treeOpts{dirs: 10, files: 30, maxSize: 200 << 10})
				}
			})
			w := newWorkload(r.mnt, tc.seed, 250)
			var mu sync.Mutex
			seen := 0
			mirrorfs.SetResyncWalkHook(func(string) {
				mu.Lock()
				seen += 6
				n := seen
				mu.Unlock()
				w.await(n)
			})
			go w.run()
			res, err := r.resync(0, s, wire.PassOptions{Pass: 1, Rebase: true})
			w.finished()
			if err != nil {
				t.Fatalf("Resync: %v", err)
			}
			s.caughtUp()
			sameTree(t, r.back, s.root)
			s.check(t)
			if t.Failed() {
				t.Logf("workload:\n%s", strings.Join(w.log, "\n"))
				dumpEvents(t, r.recs[0])
			}
			t.Logf("result %+v; ops the slave skipped while the pass ran: %d", res.PassProgress, len(s.opErrs))
		})
	}
}

// The cross-rename of step 4, deterministically: once the walk has listed
// a, a directory is renamed from z (not walked yet) into a. The slave,
// which lacks it, skips the rename; only the watch puts it right.
func TestResyncCrossRenameIntoWalkedPart(t *testing.T) {
	for _, watch := range []bool{true, false} {
		t.Run(fmt.Sprintf("watch=%v", watch), func(t *testing.T) {
			resetHooks(t)
			mirrorfs.SetResyncNoWatch(!watch)
			r := newRig(t, 1, 1<<20, func(back string) {
				must(t, os.MkdirAll(filepath.Join(back, "a"), 0o755))
				must(t, os.WriteFile(filepath.Join(back, "a/x"), []byte("x"), 0o644))
				must(t, os.MkdirAll(filepath.Join(back, "z/sub/deep"), 0o755))
				must(t, os.WriteFile(filepath.Join(back, "z/sub/file"), []byte("content"), 0o644))
				must(t, os.WriteFile(filepath.Join(back, "z/sub/deep/f"), []byte("deep"), 0o644))
			})
			s := r.slave(0, true, nil)
			var once sync.Once
			mirrorfs.SetResyncWalkHook(func(dir string) {
				if dir == "a" {
					once.Do(func() { must(t, os.Rename(r.m("z/sub"), r.m("a/sub"))) })
				}
			})
			if _, err := r.resync(0, s, wire.PassOptions{Pass: 1, Rebase: true}); err != nil {
				t.Fatal(err)
			}
			s.caughtUp()
			d := treeDiff(t, r.back, s.root)
			if watch {
				if d != "" {
					t.Errorf("trees differ:\n%s", d)
				}
				listed := 0
				for _, it := range itemsOf[*wire.ResyncDir](r.recs[0].items()) {
					if it.Path == "a" && it.Final {
						listed++
					}
				}
				if listed != 2 {
					t.Errorf("a listed %d times, want twice (the walk, then again for a/sub)", listed)
				}
			} else if d == "" {
				t.Error("without the watch the slave should lack a/sub: the test shows nothing")
			}
		})
	}
}

// A directory listed in several items gets names added, renamed and
// removed between its items.
func TestResyncDirectoryInSeveralItems(t *testing.T) {
	for _, watch := range []bool{true, false} {
		t.Run(fmt.Sprintf("watch=%v", watch), func(t *testing.T) {
			resetHooks(t)
			mirrorfs.SetResyncNoWatch(!watch)
			mirrorfs.SetResyncMaxEntries(4)
			r := newRig(t, 1, 1<<20, func(back string) {
				must(t, os.Mkdir(filepath.Join(back, "big"), 0o755))
				for i := 0; i < 20; i++ {
					must(t, os.WriteFile(filepath.Join(back, fmt.Sprintf("big/f%02d", i)), []byte(fmt.Sprint(i)), 0o644))
				}
				must(t, os.MkdirAll(filepath.Join(back, "big/s1/in"), 0o755))
				must(t, os.MkdirAll(filepath.Join(back, "big/s9/in"), 0o755))
			})
			s := r.slave(0, true, nil)
			var once sync.Once
			mirrorfs.SetResyncChunkHook(func(dir string) {
				if dir != "big" {
					return
				}
				once.Do(func() {
					must(t, os.WriteFile(r.m("big/a00"), []byte("new, sent range"), 0o644))
					must(t, os.WriteFile(r.m("big/zz"), []byte("new, later range"), 0o644))
					must(t, os.Rename(r.m("big/f10"), r.m("big/b0")))
					must(t, os.Mkdir(r.m("big/c0"), 0o755))
					must(t, os.Rename(r.m("big/s9"), r.m("big/a9")))
					must(t, os.Remove(r.m("big/f02")))
				})
			})
			if _, err := r.resync(0, s, wire.PassOptions{Pass: 1, Rebase: true}); err != nil {
				t.Fatal(err)
			}
			s.caughtUp()
			d := treeDiff(t, r.back, s.root)
			if watch && d != "" {
				t.Errorf("trees differ:\n%s", d)
			}
			if !watch && d == "" {
				t.Error("without the watch the names added between items should be missing: the test shows nothing")
			}
			if n := len(itemsOf[*wire.ResyncDir](r.recs[0].items())); n < 6 {
				t.Errorf("%d directory items: big was not listed in several", n)
			}
		})
	}
}

// Files open for writing when the pass begins, on a slave where their
// paths hold something else (a directory; a copy instead of a hard
// link), keep being written during and after the pass: the handles are
// opened, then bound again once the files are listed, and every later
// write lands (no op fails once the pass is over).
func TestResyncOpenHandles(t *testing.T) {
	resetHooks(t)
	r := newRig(t, 1, 256<<10, func(back string) {
		must(t, os.WriteFile(filepath.Join(back, "h1"), []byte("h1"), 0o644))
		must(t, os.MkdirAll(filepath.Join(back, "d"), 0o755))
		must(t, os.WriteFile(filepath.Join(back, "d/h2"), []byte("h2"), 0o644))
		must(t, os.WriteFile(filepath.Join(back, "h3"), []byte("h3"), 0o644))
		must(t, os.Link(filepath.Join(back, "h3"), filepath.Join(back, "d/h3link")))
	})
	s := r.slave(0, true, func(root string) {
		must(t, os.MkdirAll(filepath.Join(root, "h1/in"), 0o755))
		must(t, os.MkdirAll(filepath.Join(root, "d"), 0o755))
		must(t, os.WriteFile(filepath.Join(root, "h3"), []byte("h3"), 0o644))
		must(t, os.WriteFile(filepath.Join(root, "d/h3link"), []byte("h3"), 0o644))
	})
	var hs []*os.File
	for _, p := range []string{"h1", "d/h2", "d/h3link"} {
		f, err := os.OpenFile(r.m(p), os.O_WRONLY, 0)
		must(t, err)
		hs = append(hs, f)
		t.Cleanup(func() { f.Close() }) // before the unmount, whatever happens
	}
	writes := 0
	write := func() {
		for i, f := range hs {
			_, err := f.WriteAt([]byte(fmt.Sprintf("<%d:%d>", i, writes)), int64(writes*10))
			must(t, err)
		}
		writes++
	}
	write()
	mirrorfs.SetResyncWalkHook(func(string) { write() })
	if _, err := r.resync(0, s, wire.PassOptions{Pass: 1, Rebase: true}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		write()
	}
	for _, f := range hs {
		must(t, f.Close())
	}
	s.caughtUp() // the Releases too
	sameTree(t, r.back, s.root)
	s.check(t)
	if n := len(itemsOf[*wire.ResyncHandles](r.recs[0].items())); n < 2 {
		t.Errorf("%d ResyncHandles items, want the first and the rebinding ones", n)
	}
}

// Two passes at once, for two slaves, with live ops.
func TestResyncTwoSlavesAtOnce(t *testing.T) {
	resetHooks(t)
	r := newRig(t, 2, 128<<10, func(back string) {
		makeTree(t, back, 31, treeOpts{dirs: 10, files: 40, maxSize: 300 << 10})
	})
	s0 := r.slave(0, true, nil)
	s1 := r.slave(1, true, func(root string) {
		makeTree(t, root, 32, treeOpts{dirs: 10, files: 40, maxSize: 300 << 10})
	})
	w := newWorkload(r.mnt, 33, 150)
	var mu sync.Mutex
	seen := 0
	mirrorfs.SetResyncWalkHook(func(string) {
		mu.Lock()
		seen += 3
		n := seen
		mu.Unlock()
		w.await(n)
	})
	go w.run()
	errs := make(chan error, 2)
	for i, s := range []*refSlave{s0, s1} {
		go func() {
			_, err := r.resync(i, s, wire.PassOptions{Pass: uint64(10 + i), Rebase: true})
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	w.finished()
	for _, s := range []*refSlave{s0, s1} {
		s.caughtUp()
		sameTree(t, r.back, s.root)
		s.check(t)
	}
}
