package mirrorfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// fenceSink is a fakeSink that also answers the fence (SyncedWaiter):
// WaitSynced records the seq it was asked for, then waits until release
// is closed (or ctx ends) and returns fail.
type fenceSink struct {
	*fakeSink
	fmu     sync.Mutex
	calls   []uint64
	called  chan struct{} // closed and replaced on every call
	release chan struct{}
	fail    error
}

var _ SyncedWaiter = (*fenceSink)(nil)

func newFenceSink() *fenceSink {
	return &fenceSink{fakeSink: &fakeSink{}, called: make(chan struct{}), release: make(chan struct{})}
}

func (s *fenceSink) WaitSynced(ctx context.Context, seq uint64) error {
	s.fmu.Lock()
	s.calls = append(s.calls, seq)
	close(s.called)
	s.called = make(chan struct{})
	release, fail := s.release, s.fail
	s.fmu.Unlock()
	select {
	case <-release:
		return fail
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SyncedSlaves answers a fixed count: 2.
func (s *fenceSink) SyncedSlaves(uint64) int { return 2 }

// answerAtOnce releases the calls waiting and makes later ones return
// fail at once.
func (s *fenceSink) answerAtOnce(fail error) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	select {
	case <-s.release:
	default:
		close(s.release)
	}
	s.fail = fail
}

func (s *fenceSink) fenceCalls() []uint64 {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return append([]uint64(nil), s.calls...)
}

// newFenceEnv is newEnv with a sink that answers the fence.
func newFenceEnv(t *testing.T, mode wire.SyncMode) (*env, *fenceSink) {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	fs := newFenceSink()
	fs.skip = 2 // the RunStart and the root's attributes
	e := &env{t: t, back: filepath.Join(dir, "back"), mnt: filepath.Join(dir, "mnt"), sink: fs.fakeSink}
	for _, d := range []string{e.back, e.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := Mount(e.mnt, Options{Backing: e.back, Sink: fs, Mode: mode})
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	e.srv = srv
	t.Cleanup(func() {
		fs.answerAtOnce(errors.New("test over")) // no read stays blocked
		if err := srv.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
			if err := unix.Unmount(e.mnt, unix.MNT_DETACH); err != nil {
				t.Errorf("lazy unmount: %v", err)
			}
			return
		}
		srv.Wait()
		e.sink.check(t)
	})
	return e, fs
}

type getxattrResult struct {
	val string
	err error
}

// readSyncedAsync reads SyncedXattr of path the way getfattr does: a size
// probe, then a read with a buffer of that size.
func readSyncedAsync(path string) <-chan getxattrResult {
	ch := make(chan getxattrResult, 1)
	go func() {
		sz, err := unix.Getxattr(path, SyncedXattr, nil)
		if err != nil {
			ch <- getxattrResult{err: err}
			return
		}
		buf := make([]byte, sz)
		n, err := unix.Getxattr(path, SyncedXattr, buf)
		ch <- getxattrResult{val: string(buf[:max(n, 0)]), err: err}
	}()
	return ch
}

// Reading user.tdfs.synced numbers a Sync after every op that came before
// it, blocks until the sink says every slave is durable there, and returns
// that seq; it never reaches the backing dir and emits nothing else. The
// same in every sync mode.
func TestSyncedXattrFence(t *testing.T) {
	for _, mode := range []wire.SyncMode{wire.ModeAsync, wire.ModeFsync, wire.ModeSync} {
		t.Run(mode.String(), func(t *testing.T) {
			e, fs := newFenceEnv(t, mode)
			e.write("f", []byte("deploy me"))
			if err := os.Mkdir(e.m("d"), 0o755); err != nil {
				t.Fatal(err)
			}
			before := e.srv.LastSeq()
			mark := e.sink.mark()
			waits := len(e.sink.waitCalls())

			// The size probe answers at once, without a fence.
			if sz, err := unix.Getxattr(e.m("f"), SyncedXattr, nil); err != nil || sz != syncedMaxLen {
				t.Fatalf("size probe: %d, %v; want %d", sz, err, syncedMaxLen)
			}
			if calls := fs.fenceCalls(); len(calls) != 0 {
				t.Fatalf("the size probe waited for the slaves: %v", calls)
			}

			fs.fmu.Lock()
			called := fs.called
			fs.fmu.Unlock()
			res := readSyncedAsync(e.m("d"))
			select {
			case <-called:
			case r := <-res:
				t.Fatalf("getxattr returned %+v without waiting for the slaves", r)
			case <-time.After(30 * time.Second):
				t.Fatal("getxattr never asked the sink")
			}
			calls := fs.fenceCalls()
			recs := e.sink.since(mark)
			if len(calls) != 1 || len(recs) != 1 || recs[0].op.Type() != wire.OpSync || calls[0] != recs[0].seq || calls[0] <= before {
				t.Fatalf("fence for %v, ops %v numbered after %d: want one Sync, fenced at its seq", calls, types(recs), before)
			}
			select {
			case r := <-res:
				t.Fatalf("getxattr returned %+v while the sink held it", r)
			default:
			}

			fs.answerAtOnce(nil)
			var r getxattrResult
			select {
			case r = <-res:
			case <-time.After(30 * time.Second):
				t.Fatal("getxattr did not return once the slaves were durable")
			}
			if r.err != nil || r.val != strconv.FormatUint(calls[0], 10) {
				t.Fatalf("getxattr: %q, %v; want %d", r.val, r.err, calls[0])
			}
			if n := len(e.sink.waitCalls()); n != waits {
				t.Errorf("the fence called Sink.Wait %d times", n-waits)
			}
			// Nothing but that Sync was emitted, nothing is on disk.
			if got := types(e.sink.since(mark)); len(got) != 1 {
				t.Errorf("ops after the fence: %v", got)
			}
			if _, err := unix.Lgetxattr(e.b("d"), SyncedXattr, nil); !errors.Is(err, unix.ENODATA) {
				t.Errorf("backing dir getxattr: %v, want ENODATA", err)
			}
		})
	}
}

// The name is neither listed nor settable nor removable, even when the
// backing file carries it; reading it still answers the fence, not the
// stored value.
func TestSyncedXattrReserved(t *testing.T) {
	e, fs := newFenceEnv(t, wire.ModeFsync)
	fs.answerAtOnce(nil)
	e.write("f", nil)
	if err := unix.Setxattr(e.m("f"), "user.kept", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(e.b("f"), SyncedXattr, []byte("stale"), 0); err != nil {
		t.Fatal(err)
	}
	mark := e.sink.mark()
	for _, err := range []error{
		unix.Setxattr(e.m("f"), SyncedXattr, []byte("1"), 0),
		unix.Removexattr(e.m("f"), SyncedXattr),
	} {
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("set/remove of %s: %v, want EPERM", SyncedXattr, err)
		}
	}
	if got := e.sink.since(mark); len(got) != 0 {
		t.Errorf("refused set/remove emitted %v", types(got))
	}
	buf := make([]byte, 4096)
	n, err := unix.Listxattr(e.m("f"), buf)
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Split(strings.TrimSuffix(string(buf[:n]), "\x00"), "\x00")
	if strings.Contains(string(buf[:n]), SyncedXattr) || !strings.Contains(string(buf[:n]), "user.kept") {
		t.Errorf("listxattr %q: want user.kept without %s", names, SyncedXattr)
	}
	// A probe may overestimate, never underestimate.
	if sz, err := unix.Listxattr(e.m("f"), nil); err != nil || sz < n {
		t.Errorf("listxattr probe %d, %v; the list is %d bytes", sz, err, n)
	}
	r := <-readSyncedAsync(e.m("f"))
	if r.err != nil || r.val == "stale" {
		t.Errorf("getxattr %q, %v: want the fence's seq", r.val, r.err)
	}
	if v, err := strconv.ParseUint(r.val, 10, 64); err != nil || v != e.srv.LastSeq() {
		t.Errorf("getxattr %q: want the last seq %d", r.val, e.srv.LastSeq())
	}
}

// The sink's failure is ETIMEDOUT; a sink without a fence makes the name
// unsupported (ENOTSUP).
func TestSyncedXattrErrors(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		e, fs := newFenceEnv(t, wire.ModeAsync)
		fs.answerAtOnce(errors.New("slave 127.0.0.1:1 is durable at seq 0"))
		if r := <-readSyncedAsync(e.mnt); !errors.Is(r.err, syscall.ETIMEDOUT) {
			t.Fatalf("getxattr %q, %v; want ETIMEDOUT", r.val, r.err)
		}
	})
	t.Run("no fence", func(t *testing.T) {
		e := newEnv(t, wire.ModeFsync)
		if _, err := unix.Getxattr(e.mnt, SyncedXattr, make([]byte, 20)); !errors.Is(err, syscall.ENOTSUP) {
			t.Fatalf("getxattr: %v; want ENOTSUP", err)
		}
		if got := e.sink.all(); len(got) != 0 {
			t.Errorf("ops emitted without a fence: %v", types(got))
		}
	})
}

// TestSyncedSlavesXattr: the second name answers the same fence with the
// number of slaves that hold the ops ("SEQ N"), and is as reserved.
func TestSyncedSlavesXattr(t *testing.T) {
	e, fs := newFenceEnv(t, wire.ModeFsync)
	e.write("f", []byte("x"))
	fs.answerAtOnce(nil)
	buf := make([]byte, syncedMaxLen)
	n, err := unix.Getxattr(e.m("f"), SyncedSlavesXattr, buf)
	calls := fs.fenceCalls()
	if err != nil || len(calls) != 1 || string(buf[:n]) != strconv.FormatUint(calls[0], 10)+" 2" {
		t.Fatalf("getxattr %s: %q, %v (fenced %v); want \"SEQ 2\"", SyncedSlavesXattr, buf[:max(n, 0)], err, calls)
	}
	if err := unix.Setxattr(e.m("f"), SyncedSlavesXattr, []byte("1 1"), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("setxattr: %v, want EPERM", err)
	}
	list := make([]byte, 4096)
	if n, err := unix.Listxattr(e.m("f"), list); err != nil || strings.Contains(string(list[:n]), "tdfs") {
		t.Errorf("listxattr: %q, %v", list[:max(n, 0)], err)
	}
}
