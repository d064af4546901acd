package mirrorfs

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// replay applies the recorded ops to an in-memory tree of regular files
// (path -> contents), following handles across renames, as a slave
// would. It covers what TestConcurrentWriters does.
func replay(t *testing.T, recs []rec) map[string][]byte {
	t.Helper()
	files := map[string]*[]byte{}
	handles := map[uint64]*[]byte{}
	for _, r := range recs {
		switch o := r.op.(type) {
		case *wire.Create:
			b, ok := files[o.Path]
			if !ok || o.Flags&syscall.O_TRUNC != 0 {
				b = new([]byte)
				files[o.Path] = b
			}
			handles[o.Handle] = b
		case *wire.Open:
			handles[o.Handle] = files[o.Path]
		case *wire.Write:
			b := handles[o.Handle]
			if b == nil {
				t.Fatalf("seq %d: write through unknown handle %d", r.seq, o.Handle)
			}
			if end := o.Off + int64(len(o.Data)); end > int64(len(*b)) {
				*b = append(*b, make([]byte, end-int64(len(*b)))...)
			}
			copy((*b)[o.Off:], o.Data)
		case *wire.Rename:
			for p, b := range files {
				if p == o.OldPath || len(p) > len(o.OldPath) && p[:len(o.OldPath)+1] == o.OldPath+"/" {
					delete(files, p)
					files[o.NewPath+p[len(o.OldPath):]] = b
				}
			}
		case *wire.Release:
			delete(handles, o.Handle)
		}
	}
	out := map[string][]byte{}
	for p, b := range files {
		out[p] = *b
	}
	return out
}

func TestConcurrentWriters(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	const (
		own     = 4  // goroutines with a file each
		sharers = 3  // goroutines writing one shared file through their own handles, overlapping
		renames = 20 // files created and renamed meanwhile
		writes  = 40
		chunk   = 700
	)
	e.write("shared", nil)
	if err := os.Mkdir(e.m("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	fill := func(g, j int) []byte { return bytes.Repeat([]byte{byte('a' + g), byte('0' + j%10)}, chunk/2) }
	errs := make(chan error, own+sharers+1)
	var wg sync.WaitGroup
	for g := range own {
		wg.Go(func() {
			f, err := os.Create(e.m(fmt.Sprintf("f%d", g)))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for j := range writes {
				if _, err := f.WriteAt(fill(g, j), int64(j*chunk)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for g := range sharers {
		wg.Go(func() {
			f, err := os.OpenFile(e.m("shared"), os.O_WRONLY, 0)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for j := range writes {
				// Overlapping writes: the replay only matches the
				// backing file if writes to one inode are numbered in
				// the order they reached it.
				if _, err := f.WriteAt(fill(own+g, j), int64((j%5)*chunk+g*chunk/2)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range renames {
			p := fmt.Sprintf("d/r%d", i)
			if err := os.WriteFile(e.m(p), []byte(p), 0o644); err != nil {
				errs <- err
				return
			}
			if err := os.Rename(e.m(p), e.m(fmt.Sprintf("d/s%d", i))); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	e.settle()
	recs := e.sink.all()
	e.sink.check(t)

	// Per handle, each goroutine's writes appear in the order it made
	// them. The j-th write carries the digit j%10 (see fill); the kernel
	// may split a write at a page boundary, so a digit may repeat.
	filled := map[uint64]bool{}
	for _, c := range ofType[*wire.Create](recs) {
		filled[c.Handle] = c.Path[0] == 'f'
	}
	for _, o := range ofType[*wire.Open](recs) {
		filled[o.Handle] = o.Path == "shared"
	}
	prev := map[uint64]byte{}
	for _, w := range ofType[*wire.Write](recs) {
		if !filled[w.Handle] {
			continue
		}
		i := bytes.IndexFunc(w.Data, func(r rune) bool { return r >= '0' && r <= '9' })
		if i < 0 {
			t.Fatalf("handle %d: write at %d carries no digit", w.Handle, w.Off)
		}
		d := w.Data[i] - '0'
		p, seen := prev[w.Handle]
		if !seen && d != 0 || seen && d != p && d != (p+1)%10 {
			t.Fatalf("handle %d: write of round %d numbered after round %d (off %d)", w.Handle, d, p, w.Off)
		}
		prev[w.Handle] = d
	}
	// Applying the ops in seq order rebuilds the backing dir.
	got := replay(t, recs)
	want := map[string][]byte{}
	for _, p := range []string{"shared", "f0", "f1", "f2", "f3"} {
		want[p] = nil
	}
	for i := range renames {
		want[fmt.Sprintf("d/s%d", i)] = nil
	}
	if len(got) != len(want) {
		t.Errorf("replay holds %d files, want %d", len(got), len(want))
	}
	for p := range want {
		b, err := os.ReadFile(e.b(p))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[p], b) {
			t.Errorf("%s: replay has %d bytes, backing %d, or they differ", p, len(got[p]), len(b))
		}
	}
}

// mutations runs one syscall of each mutating kind; after each, check is
// told which ops it emitted.
func mutations(t *testing.T, e *env, check func(what string, recs []rec)) {
	t.Helper()
	step := func(what string, fn func() error) {
		t.Helper()
		mark := e.sink.mark()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		check(what, withoutReleases(e.sink.since(mark)))
	}
	var f *os.File
	step("mkdir", func() error { return os.Mkdir(e.m("d"), 0o755) })
	step("create", func() (err error) { f, err = os.Create(e.m("d/f")); return err })
	step("write", func() error { _, err := f.Write([]byte("data")); return err })
	step("fallocate", func() error { return unix.Fallocate(int(f.Fd()), 0, 0, 8192) })
	step("ftruncate", func() error { return f.Truncate(10) })
	step("close", f.Close)
	step("open", func() (err error) { f, err = os.OpenFile(e.m("d/f"), os.O_WRONLY, 0); return err })
	step("close again", f.Close)
	step("chmod", func() error { return os.Chmod(e.m("d/f"), 0o600) })
	step("setxattr", func() error { return unix.Setxattr(e.m("d/f"), "user.x", []byte("1"), 0) })
	step("removexattr", func() error { return unix.Removexattr(e.m("d/f"), "user.x") })
	step("link", func() error { return os.Link(e.m("d/f"), e.m("d/g")) })
	step("symlink", func() error { return os.Symlink("f", e.m("d/l")) })
	step("mkfifo", func() error { return unix.Mkfifo(e.m("d/p"), 0o600) })
	step("rename", func() error { return os.Rename(e.m("d/g"), e.m("d/h")) })
	step("unlink", func() error { return os.Remove(e.m("d/h")) })
	step("fsync", func() error {
		f, err := os.OpenFile(e.m("d/f"), os.O_RDONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
	for _, p := range []string{"d/f", "d/l", "d/p"} {
		step("unlink "+p, func() error { return os.Remove(e.m(p)) })
	}
	step("rmdir", func() error { return os.Remove(e.m("d")) })
}

func TestSyncModes(t *testing.T) {
	for _, mode := range []wire.SyncMode{wire.ModeAsync, wire.ModeFsync, wire.ModeSync} {
		t.Run(mode.String(), func(t *testing.T) {
			e := newEnv(t, mode)
			mutations(t, e, func(what string, recs []rec) {
				if len(recs) == 0 && what != "close" && what != "close again" {
					t.Errorf("%s emitted nothing", what)
				}
				var mine uint64 // the highest seq this syscall emitted
				for _, r := range recs {
					mine = max(mine, r.seq)
				}
				waited := false
				for _, w := range e.sink.waitCalls() {
					if w.seq >= mine && mine != 0 {
						waited = true
					}
				}
				isFsync := what == "fsync"
				switch {
				case mode == wire.ModeAsync && len(e.sink.waitCalls()) != 0:
					t.Fatalf("%s: async mode called Wait", what)
				case mode == wire.ModeFsync && isFsync != waited:
					t.Fatalf("%s: fsync mode waited=%v", what, waited)
				case mode == wire.ModeSync && mine != 0 && !waited:
					t.Fatalf("%s returned before Wait covered seq %d", what, mine)
				}
				if isFsync && recs[len(recs)-1].op.Type() != wire.OpSync {
					t.Errorf("fsync emitted %v, want a sync", types(recs))
				}
			})
		})
	}
}

// TestWaitHoldsNoLock blocks the sink's first Wait and checks that other
// mutating ops still complete meanwhile.
func TestWaitHoldsNoLock(t *testing.T) {
	e := newEnv(t, wire.ModeSync)
	// Different directories: while MKDIR is answered the kernel holds its
	// parent's lock, so ops in the same directory wait for the kernel,
	// not for us.
	for _, d := range []string{"d1", "d2"} {
		if err := os.Mkdir(e.m(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	e.sink.mu.Lock()
	e.sink.waitHook = func(uint64) {
		first := false
		once.Do(func() { first = true })
		if first {
			close(entered)
			<-release
		}
	}
	e.sink.mu.Unlock()
	firstDone := make(chan error, 1)
	go func() { firstDone <- os.Mkdir(e.m("d1/a"), 0o755) }()
	<-entered
	secondDone := make(chan error, 1)
	go func() {
		if err := os.Mkdir(e.m("d2/b"), 0o755); err != nil {
			secondDone <- err
			return
		}
		secondDone <- os.WriteFile(e.m("d2/b/f"), []byte("x"), 0o644)
	}()
	finished := false
	select {
	case err := <-secondDone:
		finished = true
		if err != nil {
			t.Error(err)
		}
	case <-time.After(20 * time.Second):
		t.Error("ops blocked while another op waited for the sink: Wait is called under a lock")
	}
	close(release)
	if err := <-firstDone; err != nil {
		t.Error(err)
	}
	if !finished {
		<-secondDone
	}
}

// TestRenameVersusPathOps renames a directory while another goroutine
// changes a file in it, and checks that every path op names the directory
// as it was called when the op was numbered.
func TestRenameVersusPathOps(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	if err := os.MkdirAll(e.m("x/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	const rounds = 50
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Go(func() {
		names := [2]string{"x", "y"}
		for i := range rounds {
			if err := os.Rename(e.m(names[i%2]), e.m(names[(i+1)%2])); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Go(func() {
		for i := range rounds {
			// Whichever name the directory has now; ENOENT when it
			// moved under us is fine.
			for _, d := range []string{"x", "y"} {
				err := os.Chmod(e.m(path.Join(d, "sub")), 0o700+os.FileMode(i%8))
				if err == nil || os.IsNotExist(err) {
					continue
				}
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Replay the directory's name and check each chmod names it.
	name := "x"
	for _, r := range e.sink.all() {
		switch o := r.op.(type) {
		case *wire.Rename:
			if o.OldPath != name {
				t.Fatalf("seq %d renames %q, but the directory is %q", r.seq, o.OldPath, name)
			}
			name = o.NewPath
		case *wire.Setattr:
			if o.Path != name+"/sub" {
				t.Fatalf("seq %d chmods %q, but the directory is %q", r.seq, o.Path, name)
			}
		}
	}
}
