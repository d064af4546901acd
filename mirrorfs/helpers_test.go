package mirrorfs

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// rec is one op as the fake sink saw it.
type rec struct {
	seq uint64
	op  wire.Op
}

// waitRec is one Sink.Wait call.
type waitRec struct {
	seq      uint64 // the seq waited for
	appended uint64 // ops appended when Wait was called
}

// fakeSink records ops. Append round-trips every op through the codec:
// that is the deep copy the Sink contract asks for (Write.Data aliases a
// FUSE buffer) and proves each op is valid on the wire.
type fakeSink struct {
	skip  int // ops all leaves out
	mu    sync.Mutex
	ops   []rec
	waits []waitRec
	errs  []string
	// waitHook, if set, runs inside Wait without mu held.
	waitHook func(seq uint64)
}

func (s *fakeSink) Append(seq uint64, op wire.Op) {
	body := wire.AppendOp(nil, seq, op)
	gotSeq, cp, err := wire.ParseOp(body)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil:
		s.errs = append(s.errs, fmt.Sprintf("seq %d %v: does not decode: %v (%+v)", seq, op.Type(), err, op))
		return
	case gotSeq != seq:
		s.errs = append(s.errs, fmt.Sprintf("seq %d decodes as %d", seq, gotSeq))
	case seq != uint64(len(s.ops))+1:
		s.errs = append(s.errs, fmt.Sprintf("seq %d after %d ops: not dense", seq, len(s.ops)))
	}
	s.ops = append(s.ops, rec{seq: seq, op: cp})
}

func (s *fakeSink) Wait(seq uint64) error {
	s.mu.Lock()
	n := uint64(len(s.ops))
	s.waits = append(s.waits, waitRec{seq: seq, appended: n})
	if seq > n {
		s.errs = append(s.errs, fmt.Sprintf("Wait(%d) with only %d ops appended", seq, n))
	}
	hook := s.waitHook
	s.mu.Unlock()
	if hook != nil {
		hook(seq)
	}
	return nil
}

// all returns a copy of every op recorded so far, but the first skip
// (newEnv skips the root Setattr every mount starts with, after checking it).
func (s *fakeSink) all() []rec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]rec(nil), s.ops[min(s.skip, len(s.ops)):]...)
}

// mark returns how many ops have been recorded, for since.
func (s *fakeSink) mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ops)
}

// since returns the ops recorded after mark.
func (s *fakeSink) since(mark int) []rec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]rec(nil), s.ops[mark:]...)
}

func (s *fakeSink) waitCalls() []waitRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]waitRec(nil), s.waits...)
}

// check fails t if any op was not dense or did not decode.
func (s *fakeSink) check(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.errs {
		t.Errorf("sink: %s", e)
	}
}

// ofType returns the ops of type T among recs, in seq order.
func ofType[T wire.Op](recs []rec) []T {
	var out []T
	for _, r := range recs {
		if o, ok := r.op.(T); ok {
			out = append(out, o)
		}
	}
	return out
}

// withoutReleases drops Release ops: the kernel sends RELEASE after
// close(2) returned, so it may land anywhere after the close.
func withoutReleases(recs []rec) []rec {
	var out []rec
	for _, r := range recs {
		if r.op.Type() != wire.OpRelease {
			out = append(out, r)
		}
	}
	return out
}

// types lists the op types of recs, for messages and exact comparisons.
func types(recs []rec) []wire.OpType {
	out := make([]wire.OpType, len(recs))
	for i, r := range recs {
		out[i] = r.op.Type()
	}
	return out
}

// requireFUSE skips t, loudly, when /dev/fuse cannot be used, unless
// TDFS_REQUIRE_FUSE=1 makes that a failure.
func requireFUSE(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err == nil {
		f.Close()
		return
	}
	if os.Getenv("TDFS_REQUIRE_FUSE") == "1" {
		t.Fatalf("TDFS_REQUIRE_FUSE=1 but /dev/fuse is unusable: %v", err)
	}
	t.Skipf("SKIPPING FUSE TEST %s: /dev/fuse is unusable (%v); set TDFS_REQUIRE_FUSE=1 to make this a failure", t.Name(), err)
}

// env is a mirror mounted for one test.
type env struct {
	t    *testing.T
	back string
	mnt  string
	sink *fakeSink
	srv  *Server
}

// newEnv mounts a mirror of an empty backing dir in mode. The mount is
// unmounted, and the sink checked for density and decodability, when the
// test ends.
func newEnv(t *testing.T, mode wire.SyncMode) *env {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	// Let other users reach the mount (TestNewNodesBelongToCaller and
	// the default_permissions test act as uid 1234): MkdirTemp makes
	// 0700 directories.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	back, mnt := filepath.Join(dir, "back"), filepath.Join(dir, "mnt")
	for _, d := range []string{back, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return mountEnv(t, mode, back, mnt)
}

// mountEnv is newEnv with the backing dir and the mount point given (both
// must exist).
func mountEnv(t *testing.T, mode wire.SyncMode, back, mnt string) *env {
	t.Helper()
	e := &env{t: t, back: back, mnt: mnt, sink: &fakeSink{}}
	srv, err := Mount(e.mnt, Options{Backing: e.back, Sink: e.sink, Mode: mode})
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	e.srv = srv
	// Op 1 is always a RunStart, op 2 the root directory's attributes.
	e.sink.mu.Lock()
	if _, ok := e.sink.ops[0].op.(*wire.RunStart); !ok {
		t.Fatalf("first op %+v, want a run start", e.sink.ops[0].op)
	}
	first := e.sink.ops[1].op.(*wire.Setattr)
	e.sink.skip = 2
	e.sink.mu.Unlock()
	var st unix.Stat_t
	if err := unix.Stat(e.back, &st); err != nil {
		t.Fatal(err)
	}
	if first.Path != "" || first.Mode != st.Mode&0o7777 || first.Uid != st.Uid || first.Mtime != (wire.Time{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)}) ||
		first.Valid != wire.SetMode|wire.SetUid|wire.SetGid|wire.SetMtime {
		t.Fatalf("first op %+v, want the root's attributes", *first)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
			// Leave nothing behind even so.
			if err := unix.Unmount(e.mnt, unix.MNT_DETACH); err != nil {
				t.Errorf("lazy unmount: %v", err)
			}
			return
		}
		srv.Wait()
		e.sink.check(t)
	})
	return e
}

// m returns the path of rel on the mount, b on the backing dir.
func (e *env) m(rel string) string { return filepath.Join(e.mnt, rel) }
func (e *env) b(rel string) string { return filepath.Join(e.back, rel) }

// mtime returns the backing dir's mtime of rel, not following symlinks.
func (e *env) mtime(rel string) wire.Time {
	e.t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(e.b(rel), &st); err != nil {
		e.t.Fatalf("lstat backing %q: %v", rel, err)
	}
	return wireTime(st.Mtim)
}

// eventually polls cond until it holds, failing t after a deadline. Used
// for what the kernel sends asynchronously (RELEASE after close).
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s; ops: %v", what, types(e.sink.all()))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// settle waits until every handle with write access has been released,
// so later assertions do not see a stray Release.
func (e *env) settle() {
	e.t.Helper()
	e.eventually("all handles released", func() bool {
		open := map[uint64]bool{}
		for _, r := range e.sink.all() {
			switch o := r.op.(type) {
			case *wire.Create:
				if o.Handle != 0 {
					open[o.Handle] = true
				}
			case *wire.Open:
				open[o.Handle] = true
			case *wire.Release:
				delete(open, o.Handle)
			}
		}
		return len(open) == 0
	})
}

// write creates rel on the mount with data and waits for its release.
func (e *env) write(rel string, data []byte) {
	e.t.Helper()
	if err := os.WriteFile(e.m(rel), data, 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.settle()
}

// one returns the only op of type T in recs, failing t otherwise.
func one[T wire.Op](t *testing.T, recs []rec) T {
	t.Helper()
	got := ofType[T](recs)
	if len(got) != 1 {
		var zero T
		t.Fatalf("want exactly one %T, got %d; ops: %v", zero, len(got), types(recs))
	}
	return got[0]
}

// asUser runs fn on a thread whose filesystem uid and gid are uid and gid,
// so the mount sees fn's syscalls coming from that caller. fn runs on
// another goroutine: it must report with t.Errorf, not t.Fatal.
func asUser(t *testing.T, uid, gid int, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// setfsuid(2) changes only the calling thread. The goroutine
		// exits still locked unless the ids were put back, which makes
		// the runtime discard the thread instead of reusing it.
		runtime.LockOSThread()
		if _, err := unix.SetfsgidRetGid(gid); err != nil {
			t.Errorf("setfsgid: %v", err)
			return
		}
		if _, err := unix.SetfsuidRetUid(uid); err != nil {
			t.Errorf("setfsuid: %v", err)
			return
		}
		fn()
		unix.SetfsuidRetUid(0)
		unix.SetfsgidRetGid(0)
		u, _ := unix.SetfsuidRetUid(-1)
		g, _ := unix.SetfsgidRetGid(-1)
		if u == 0 && g == 0 {
			runtime.UnlockOSThread()
		}
	}()
	<-done
}
