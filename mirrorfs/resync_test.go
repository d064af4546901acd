package mirrorfs_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/mirrorfs"
	"github.com/tdfs/tdfs/wire"
)

// requireFUSE is the package's own (helpers_test.go).
var requireFUSE = mirrorfs.RequireFUSE

// rig is a mirror mounted over a backing dir, with a recorder per slave.
type rig struct {
	t    *testing.T
	dir  string
	back string
	mnt  string
	recs []*recorder
	srv  *mirrorfs.Server
	run  wire.RunID
}

// newRig fills the backing dir with setup, then mounts it.
func newRig(t *testing.T, slaves int, window int64, setup func(back string)) *rig {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		must(t, os.Chmod(d, 0o755))
	}
	r := &rig{t: t, dir: dir, back: filepath.Join(dir, "back"), mnt: filepath.Join(dir, "mnt")}
	must(t, os.Mkdir(r.back, 0o755))
	must(t, os.Mkdir(r.mnt, 0o755))
	if setup != nil {
		setup(r.back)
	}
	var sink fanout
	for i := 0; i < slaves; i++ {
		rec := newRecorder(window)
		r.recs = append(r.recs, rec)
		sink = append(sink, rec)
	}
	r.run = wire.RunID{1, 2, 3, byte(len(t.Name()))}
	srv, err := mirrorfs.Mount(r.mnt, mirrorfs.Options{Backing: r.back, Sink: sink, Run: r.run})
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	r.srv = srv
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
			if err := unix.Unmount(r.mnt, unix.MNT_DETACH); err != nil {
				t.Errorf("lazy unmount: %v", err)
			}
			return
		}
		srv.Wait()
		for _, rec := range r.recs {
			rec.check(t)
		}
	})
	return r
}

// slave makes slave i's directory (filled by setup) and starts applying.
func (r *rig) slave(i int, rebase bool, setup func(root string)) *refSlave {
	r.t.Helper()
	// TDFS_RESYNC_REAL_SLAVE=1: items go to the real slave side,
	// replayer.Resync, instead of the reference applier.
	return r.slaveWith(i, rebase, os.Getenv("TDFS_RESYNC_REAL_SLAVE") == "1", setup)
}

// slaveWith is slave, applying items with replayer.Resync when real.
func (r *rig) slaveWith(i int, rebase, real bool, setup func(root string)) *refSlave {
	r.t.Helper()
	root := filepath.Join(r.dir, fmt.Sprintf("slave%d", i))
	must(r.t, os.Mkdir(root, 0o755))
	if setup != nil {
		setup(root)
	}
	s := newRefSlave(r.t, root, r.recs[i], rebase)
	s.useReal = real
	s.start()
	return s
}

// bothSlaves runs f once with the reference applier and once with the
// real slave side (replayer.Resync).
func bothSlaves(t *testing.T, f func(t *testing.T, real bool)) {
	for _, real := range []bool{false, true} {
		t.Run(map[bool]string{false: "reference", true: "replayer"}[real], func(t *testing.T) { f(t, real) })
	}
}

// resync runs a pass for slave i and checks the reservations it made.
func (r *rig) resync(i int, s *refSlave, o wire.PassOptions) (wire.PassResult, error) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := r.srv.RunPass(ctx, o, r.recs[i], s.replies)
	if err == nil {
		rec := r.recs[i]
		rec.mu.Lock()
		if rec.reserved != rec.emitted+rec.released {
			r.t.Errorf("pass %d reserved %d bytes, handed %d to its items and released %d", o.Pass, rec.reserved, rec.emitted, rec.released)
		}
		rec.mu.Unlock()
	}
	return res, err
}

func (r *rig) m(rel string) string { return filepath.Join(r.mnt, rel) }

// itemsOf returns the items of type T among its.
func itemsOf[T wire.ResyncItem](its []wire.ResyncItem) []T {
	var out []T
	for _, it := range its {
		if x, ok := it.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

// resetHooks puts the test hooks back when t ends.
func resetHooks(t *testing.T) {
	t.Cleanup(func() {
		mirrorfs.SetResyncWalkHook(nil)
		mirrorfs.SetResyncChunkHook(nil)
		mirrorfs.SetResyncNoFileHandles(false)
		mirrorfs.SetResyncMaxEntries(0)
		mirrorfs.SetResyncNoWatch(false)
	})
}

// regularFiles counts the distinct regular files in a tree, and those
// with content.
func regularFiles(t *testing.T, root string) (all, nonEmpty int) {
	seen := map[uint64]bool{}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !seen[st.Ino] {
			seen[st.Ino] = true
			all++
			if fi.Size() > 0 {
				nonEmpty++
			}
		}
		return nil
	})
	return all, nonEmpty
}

// treeCounts counts the directories of the tree at root, root included,
// and its entries, root not included.
func treeCounts(t *testing.T, root string) (dirs, entries int) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs++
		}
		if p != root {
			entries++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("count %s: %v", root, err)
	}
	return dirs, entries
}

// An empty slave gets everything; a second pass finds nothing to send.
func TestResyncEmptySlaveThenIdentical(t *testing.T) {
	resetHooks(t)
	r := newRig(t, 1, 1<<20, func(back string) {
		makeTree(t, back, 1, treeOpts{dirs: 12, files: 60, maxSize: 600 << 10})
	})
	s := r.slave(0, true, nil)
	var progress []wire.PassProgress
	res, err := r.resync(0, s, wire.PassOptions{Pass: 1, Rebase: true,
		Progress: func(p wire.PassProgress) { progress = append(progress, p) }})
	if err != nil {
		t.Fatalf("Resync: %v", err)
	}
	s.caughtUp()
	sameTree(t, r.back, s.root)
	s.check(t)

	all, nonEmpty := regularFiles(t, r.back)
	dirs, entries := treeCounts(t, r.back)
	if res.FilesSent != uint64(nonEmpty) || res.Files != uint64(all) || res.Dirs != uint64(dirs) || res.Entries != uint64(entries) {
		t.Errorf("result %+v; the tree has %d files (%d not empty), %d directories, %d entries", res.PassProgress, all, nonEmpty, dirs, entries)
	}
	if res.TotalEntries != 0 && res.TotalEntries != res.Entries {
		t.Errorf("pre-count %d entries, the walk %d", res.TotalEntries, res.Entries)
	}
	if len(progress) == 0 || progress[len(progress)-1] != res.PassProgress {
		t.Errorf("last progress %v, result %+v", progress, res.PassProgress)
	}
	begin := itemsOf[*wire.ResyncBegin](r.recs[0].items())
	if len(begin) != 1 || *begin[0] != (wire.ResyncBegin{Pass: 1, Rebase: true, Run: r.run}) {
		t.Errorf("begin items %+v, want pass 1, rebase, run %x", begin, r.run)
	}

	// Pass 2: nothing differs, nothing is sent.
	before := len(r.recs[0].items())
	hashes := s.count("hashes")
	res, err = r.resync(0, s, wire.PassOptions{Pass: 2, Rebase: true})
	if err != nil {
		t.Fatalf("second Resync: %v", err)
	}
	s.caughtUp()
	its := r.recs[0].items()[before:]
	if n := len(itemsOf[*wire.ResyncData](its)); n != 0 {
		t.Errorf("identical trees: %d data items", n)
	}
	if n := len(itemsOf[*wire.ResyncDir](its)); n < dirs {
		t.Errorf("identical trees: %d listings for %d directories", n, dirs)
	}
	if s.count("hashes") != hashes || res.FilesSent != 0 || res.Differences != 0 {
		t.Errorf("identical trees: %d files hashed, result %+v", s.count("hashes")-hashes, res.PassProgress)
	}
	sameTree(t, r.back, s.root)
	s.check(t)
}

// One changed block in a large file: one data item, for that block.
func TestResyncOneChangedBlock(t *testing.T) {
	resetHooks(t)
	const blk = wire.ResyncBlockSize
	r := newRig(t, 1, 1<<20, func(back string) {
		data := make([]byte, 32*blk+100)
		rng := rand.New(rand.NewPCG(3, 4))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		must(t, os.WriteFile(filepath.Join(back, "big"), data, 0o644))
		must(t, os.WriteFile(filepath.Join(back, "small"), []byte("small"), 0o644))
	})
	s := r.slave(0, true, nil)
	if _, err := r.resync(0, s, wire.PassOptions{Pass: 1, Rebase: true}); err != nil {
		t.Fatal(err)
	}
	s.caughtUp()
	sameTree(t, r.back, s.root)

	f, err := os.OpenFile(filepath.Join(s.root, "big"), os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt([]byte{0xff, 0xfe}, 7*blk+5)
	must(t, err)
	must(t, f.Close())

	before := len(r.recs[0].items())
	res, err := r.resync(0, s, wire.PassOptions{Pass: 2, Rebase: true})
	if err != nil {
		t.Fatal(err)
	}
	s.caughtUp()
	its := r.recs[0].items()[before:]
	data := itemsOf[*wire.ResyncData](its)
	if len(data) != 1 || data[0].Off != 7*blk || data[0].Len != blk || len(data[0].Data) != blk {
		for _, d := range data {
			t.Logf("data at %d, %d bytes", d.Off, d.Len)
		}
		t.Fatalf("%d data items, want one for block 7", len(data))
	}
	if n := len(itemsOf[*wire.ResyncClose](its)); n != 1 {
		t.Errorf("%d closes, want 1", n)
	}
	if res.FilesSent != 1 || res.BytesSent != blk || res.BytesCompared < 32*blk {
		t.Errorf("result %+v", res.PassProgress)
	}
	sameTree(t, r.back, s.root)
	s.check(t)
}

// A slave whose tree differs in every way the comparison knows is
// repaired: extras removed (nested), kinds, modes, owners, xattrs, symlink
// targets, hard links, sizes and contents put right.
func TestResyncRepairsEverything(t *testing.T) {
	resetHooks(t)
	r := newRig(t, 1, 1<<20, func(back string) {
		makeTree(t, back, 5, treeOpts{dirs: 8, files: 40, maxSize: 300 << 10})
		must(t, os.MkdirAll(filepath.Join(back, "kind/dir"), 0o755))
		must(t, os.WriteFile(filepath.Join(back, "kind/file"), []byte("file"), 0o644))
		must(t, os.Symlink("there", filepath.Join(back, "kind/link")))
		must(t, os.WriteFile(filepath.Join(back, "kind/a"), []byte("a"), 0o644))
		must(t, os.Link(filepath.Join(back, "kind/a"), filepath.Join(back, "kind/b")))
	})
	s := r.slave(0, true, nil)
	if _, err := r.resync(0, s, wire.PassOptions{Pass: 1, Rebase: true}); err != nil {
		t.Fatal(err)
	}
	s.caughtUp()
	sameTree(t, r.back, s.root)

	// Plant differences on the slave.
	sl := func(p string) string { return filepath.Join(s.root, p) }
	must(t, os.MkdirAll(sl("extra/deep/er"), 0o755))
	must(t, os.WriteFile(sl("extra/deep/er/f"), []byte("x"), 0o644))
	must(t, os.Symlink("nowhere", sl("extra-link")))
	must(t, os.RemoveAll(sl("kind/dir")))
	must(t, os.WriteFile(sl("kind/dir"), []byte("now a file"), 0o644))
	must(t, os.Remove(sl("kind/file")))
	must(t, os.MkdirAll(sl("kind/file/sub"), 0o755))
	must(t, os.Remove(sl("kind/link")))
	must(t, os.Symlink("elsewhere", sl("kind/link")))
	must(t, os.Remove(sl("kind/b")))
	must(t, os.WriteFile(sl("kind/b"), []byte("a"), 0o644)) // a copy, no longer a link
	changed := 0
	filepath.Walk(s.root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || strings.Contains(p, "extra") || strings.Contains(p, "kind") {
			return err
		}
		switch changed++; changed % 5 {
		case 0:
			must(t, os.Chmod(p, 0o640))
		case 1:
			must(t, unix.Lsetxattr(p, "user.slave", []byte("x"), 0))
		case 2:
			must(t, os.Truncate(p, fi.Size()+1000))
		case 3:
			must(t, os.Truncate(p, fi.Size()/2))
		case 4:
			if os.Geteuid() == 0 {
				must(t, os.Lchown(p, 4321, 4321))
			}
		}
		return nil
	})
	must(t, os.RemoveAll(sl("d00")))

	res, err := r.resync(0, s, wire.PassOptions{Pass: 2, Rebase: true})
	if err != nil {
		t.Fatal(err)
	}
	s.caughtUp()
	sameTree(t, r.back, s.root)
	s.check(t)
	if res.Differences == 0 {
		t.Errorf("no differences counted: %+v", res.PassProgress)
	}
}

// On a filesystem without file handles the pass holds descriptors.
func TestResyncWithoutFileHandles(t *testing.T) {
	resetHooks(t)
	mirrorfs.SetResyncNoFileHandles(true)
	r := newRig(t, 1, 1<<20, func(back string) {
		makeTree(t, back, 21, treeOpts{dirs: 6, files: 30, maxSize: 300 << 10})
	})
	s := r.slave(0, true, func(root string) {
		makeTree(t, root, 22, treeOpts{dirs: 6, files: 30, maxSize: 300 << 10})
	})
	if _, err := r.resync(0, s, wire.PassOptions{Pass: 1, Rebase: true}); err != nil {
		t.Fatal(err)
	}
	s.caughtUp()
	sameTree(t, r.back, s.root)
	s.check(t)
}

// Verify reports what was planted and changes nothing, even while a file
// is being written.
func TestResyncVerify(t *testing.T) {
	resetHooks(t)
	r := newRig(t, 1, 1<<20, func(back string) {
		makeTree(t, back, 41, treeOpts{dirs: 6, files: 30, maxSize: 300 << 10})
		must(t, os.WriteFile(filepath.Join(back, "content"), []byte("the master's content"), 0o644))
		must(t, os.WriteFile(filepath.Join(back, "missing"), []byte("m"), 0o644))
		must(t, os.WriteFile(filepath.Join(back, "mode"), []byte("m"), 0o644))
		must(t, os.WriteFile(filepath.Join(back, "xattr"), []byte("x"), 0o644))
		must(t, os.Symlink("right", filepath.Join(back, "symlink")))
		must(t, os.WriteFile(filepath.Join(back, "hot"), make([]byte, 300<<10), 0o644))
	})
	s := r.slave(0, true, nil)
	if _, err := r.resync(0, s, wire.PassOptions{Pass: 1, Rebase: true}); err != nil {
		t.Fatal(err)
	}
	s.caughtUp()
	sameTree(t, r.back, s.root)

	sl := func(p string) string { return filepath.Join(s.root, p) }
	// Same size and mtime: only the content comparison sees it.
	var st unix.Stat_t
	must(t, unix.Lstat(sl("content"), &st))
	must(t, os.WriteFile(sl("content"), []byte("THE MASTER'S CONTENT"), 0o644))
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, sl("content"), []unix.Timespec{st.Atim, st.Mtim}, 0))
	must(t, os.Remove(sl("missing")))
	must(t, os.WriteFile(sl("extra"), []byte("e"), 0o644))
	must(t, os.Chmod(sl("mode"), 0o600))
	must(t, unix.Lsetxattr(sl("xattr"), "user.planted", []byte("p"), 0))
	must(t, os.Remove(sl("symlink")))
	must(t, os.Symlink("wrong", sl("symlink")))
	// Keep the parent's mtime as it was, or every planted name also shows
	// as a difference of the root.
	var rst unix.Stat_t
	must(t, unix.Lstat(filepath.Join(r.back), &rst))
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, s.root, []unix.Timespec{rst.Atim, rst.Mtim}, 0))

	// A file written through the mount during the verify: no spurious
	// content difference.
	hot, err := os.OpenFile(r.m("hot"), os.O_WRONLY, 0)
	must(t, err)
	stop := make(chan struct{})
	hotDone := make(chan struct{})
	go func() {
		defer close(hotDone)
		for i := 0; i < 5000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := hot.WriteAt([]byte(fmt.Sprint(i)), int64(i%300)<<10); err != nil {
				t.Error(err)
				return
			}
		}
	}()

	s.caughtUp()
	before := snapshot(t, s.root)
	itemsBefore := len(r.recs[0].items())
	res, err := r.resync(0, s, wire.PassOptions{Pass: 2, Verify: true})
	close(stop)
	<-hotDone
	must(t, hot.Close())
	if err != nil {
		t.Fatal(err)
	}
	s.caughtUp()
	after := snapshot(t, s.root)
	// What the slave applied of the hot writes changes "hot" only.
	delete(before, "hot")
	delete(after, "hot")
	if d := diffTrees(before, after); len(d) > 0 {
		t.Errorf("verify changed the slave:\n%s", strings.Join(d, "\n"))
	}
	its := r.recs[0].items()[itemsBefore:]
	for _, it := range its {
		switch it.(type) {
		case *wire.ResyncData, *wire.ResyncClose, *wire.ResyncHandles:
			t.Errorf("verify emitted %T", it)
		}
	}
	got := map[string][]string{}
	for _, d := range res.Diffs {
		got[d.Path] = append(got[d.Path], d.What)
	}
	for p, want := range map[string]string{
		"content": "content", "missing": "missing", "extra": "extra", "mode": "mode",
		"xattr": "xattr user.planted", "symlink": "symlink target",
	} {
		if !slices.ContainsFunc(got[p], func(w string) bool { return strings.HasPrefix(w, want) }) {
			t.Errorf("%s: differences %q, want %q", p, got[p], want)
		}
	}
	for _, w := range got["hot"] {
		if w == "content" {
			t.Errorf("hot: a spurious content difference (it was being written)")
		}
	}
	if res.Differences != uint64(len(res.Diffs))+res.Truncated {
		t.Errorf("%d differences counted, %d listed", res.Differences, len(res.Diffs))
	}
	t.Logf("differences: %v", got)
	s.check(t)

	// A repair (no rebase: the slave is in sync but for what verify
	// found) with Full: the content that kept its size and mtime is
	// compared and fixed too.
	res, err = r.resync(0, s, wire.PassOptions{Pass: 3, Full: true})
	if err != nil {
		t.Fatal(err)
	}
	s.caughtUp()
	sameTree(t, r.back, s.root)
	s.check(t)
	if b := itemsOf[*wire.ResyncBegin](r.recs[0].items()); !b[len(b)-1].Full {
		t.Error("Full not passed on to ResyncBegin")
	}
}

// Cancelling a pass returns the context's error and leaves the mount
// fine for the next pass.
func TestResyncCancel(t *testing.T) {
	resetHooks(t)
	r := newRig(t, 1, 1<<20, func(back string) {
		makeTree(t, back, 51, treeOpts{dirs: 6, files: 20, maxSize: 100 << 10})
	})
	s := r.slave(0, true, nil)
	ctx, cancel := context.WithCancel(context.Background())
	mirrorfs.SetResyncWalkHook(func(string) { cancel() })
	_, err := r.srv.RunPass(ctx, wire.PassOptions{Pass: 1, Rebase: true}, r.recs[0], s.replies)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Resync after cancel: %v", err)
	}
	mirrorfs.SetResyncWalkHook(nil)
	// A fresh slave state for the next pass: the cancelled one never ended.
	s.caughtUp()
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	s.closeFiles()
	for len(s.replies) > 0 {
		<-s.replies
	}
	if _, err := r.resync(0, s, wire.PassOptions{Pass: 2, Rebase: true}); err != nil {
		t.Fatal(err)
	}
	s.caughtUp()
	sameTree(t, r.back, s.root)
}

// A reply that does not belong to the pass ends it with ErrBadReply.
func TestResyncBadReply(t *testing.T) {
	resetHooks(t)
	r := newRig(t, 1, 1<<20, nil)
	replies := make(chan wire.ResyncReply, 1)
	replies <- &wire.ResyncDirDone{Pass: 99, DirID: 1}
	_, err := r.srv.RunPass(context.Background(), wire.PassOptions{Pass: 1, Rebase: true}, r.recs[0], replies)
	if !errors.Is(err, mirrorfs.ErrBadReply) {
		t.Fatalf("got %v, want ErrBadReply", err)
	}
	if _, err := r.srv.RunPass(context.Background(), wire.PassOptions{Rebase: true, Verify: true}, r.recs[0], replies); !errors.Is(err, mirrorfs.ErrBadOptions) {
		t.Fatalf("rebase and verify: %v", err)
	}
}

// A pass reads every file and directory it sends, and must not move their
// atimes: applications see those through the mount.
func TestResyncKeepsAtimes(t *testing.T) {
	resetHooks(t)
	old := unix.Timespec{Sec: 1000}
	r := newRig(t, 1, 1<<20, func(back string) {
		makeTree(t, back, 3, treeOpts{dirs: 4, files: 20, maxSize: 300 << 10})
	})
	s := r.slave(0, true, nil)
	// Atimes older than mtimes, set just before the pass (after listing
	// everything: a listing moves a directory's atime): relatime would
	// update them on any read.
	var paths []string
	err := filepath.WalkDir(r.back, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSymlink == 0 {
			paths = append(paths, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{old, {Nsec: unix.UTIME_OMIT}}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
	res, err := r.resync(0, s, wire.PassOptions{Pass: 1, Rebase: true})
	if err != nil {
		t.Fatalf("Resync: %v", err)
	}
	s.caughtUp()
	if res.FilesSent == 0 {
		t.Fatal("nothing sent: the test reads nothing")
	}
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Atim != old {
			t.Errorf("%s: atime %v after a pass, want %v", p, st.Atim, old)
		}
	}
}
