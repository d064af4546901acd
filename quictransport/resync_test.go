package quictransport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// ---- a fake Tree ----

// fakeTree is a Tree whose passes send a fixed script: ResyncBegin, dirs
// final ResyncDir items (each naming one symlink whose target is pad
// bytes), the wait for a ResyncDirDone per dir, ResyncEnd. It records
// every pass, and what it can check from its side of the sink.
type fakeTree struct {
	dirs int
	pad  int
	// gate, when set, holds every pass after its ResyncBegin until closed.
	gate chan struct{}
	// fail is the number of passes (from the next) that return an error
	// after their ResyncBegin.
	fail atomic.Int32
	// app, when set, is the only writer of ops: the tree emits under its
	// lock (as mirrorfs emits under the locks that exclude conflicting
	// ops), so it knows each item's position exactly, and it appends one
	// op before every ResyncDir so that items and ops interleave.
	app *appender
	// h, when set, is the slave's handler: the tree tracks how many bytes
	// of items it emitted beyond those the handler has handled.
	h *fakeHandler

	// waiting: the tree is blocked in Reserve or on replies.
	waiting atomic.Bool

	mu        sync.Mutex
	calls     []wire.PassOptions
	positions []uint64 // of every item emitted, with app
	emitted   int64    // bytes reserved and emitted, all passes
	maxAhead  int64    // most bytes emitted beyond those h handled
	done      int      // passes that returned nil
	changed   chan struct{}
}

var _ Tree = (*fakeTree)(nil)

func newFakeTree(dirs, pad int) *fakeTree {
	return &fakeTree{dirs: dirs, pad: pad, changed: make(chan struct{})}
}

func (ft *fakeTree) notifyLocked() {
	close(ft.changed)
	ft.changed = make(chan struct{})
}

func (ft *fakeTree) RunPass(ctx context.Context, o wire.PassOptions, sink wire.PassSink, replies <-chan wire.ResyncReply) (wire.PassResult, error) {
	ft.mu.Lock()
	rec := o
	rec.Progress = nil
	ft.calls = append(ft.calls, rec)
	ft.notifyLocked()
	ft.mu.Unlock()
	var res wire.PassResult
	if err := ft.emit(ctx, sink, &wire.ResyncBegin{Pass: o.Pass, Rebase: o.Rebase, Verify: o.Verify}); err != nil {
		return res, err
	}
	if ft.gate != nil {
		select {
		case <-ft.gate:
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	if ft.fail.Load() > 0 {
		ft.fail.Add(-1)
		return res, errors.New("fake tree: cannot read the backing dir")
	}
	for i := 1; i <= ft.dirs; i++ {
		if ft.app != nil {
			ft.app.add()
		}
		d := &wire.ResyncDir{Pass: o.Pass, DirID: uint64(i), Path: fmt.Sprintf("d%d", i), Final: true, Attr: wire.Attr{Mode: 0o755},
			Entries: []wire.Entry{{Name: "l", Kind: wire.KindSymlink, Attr: wire.Attr{Mode: 0o777}, Target: strings.Repeat("t", ft.pad)}}}
		if err := ft.emit(ctx, sink, d); err != nil {
			return res, err
		}
		res.Dirs++
		if o.Progress != nil {
			o.Progress(res.PassProgress)
		}
	}
	for got := 0; got < ft.dirs; got++ {
		ft.waiting.Store(true)
		var r wire.ResyncReply
		select {
		case r = <-replies:
		case <-ctx.Done():
			ft.waiting.Store(false)
			return res, ctx.Err()
		}
		ft.waiting.Store(false)
		d, ok := r.(*wire.ResyncDirDone)
		if !ok || d.Pass != o.Pass {
			return res, fmt.Errorf("fake tree: unexpected reply %#v in pass %d", r, o.Pass)
		}
		res.Diffs = append(res.Diffs, d.Diffs...)
		res.Differences += uint64(len(d.Diffs))
	}
	if err := ft.emit(ctx, sink, &wire.ResyncEnd{Pass: o.Pass}); err != nil {
		return res, err
	}
	ft.mu.Lock()
	ft.done++
	ft.notifyLocked()
	ft.mu.Unlock()
	return res, nil
}

func (ft *fakeTree) emit(ctx context.Context, sink wire.PassSink, it wire.ResyncItem) error {
	n := itemSize(it)
	ft.waiting.Store(true)
	err := sink.Reserve(ctx, n)
	ft.waiting.Store(false)
	if err != nil {
		return err
	}
	var pos uint64
	if ft.app != nil {
		ft.app.mu.Lock()
		pos = ft.app.g.seq
	}
	sink.Emit(it, n)
	if ft.app != nil {
		ft.app.mu.Unlock()
	}
	var handled int64
	if ft.h != nil {
		ft.h.mu.Lock()
		handled = ft.h.itemBytes
		ft.h.mu.Unlock()
	}
	ft.mu.Lock()
	ft.emitted += n
	ft.positions = append(ft.positions, pos)
	if ft.h != nil {
		ft.maxAhead = max(ft.maxAhead, ft.emitted-handled)
	}
	ft.mu.Unlock()
	return nil
}

// passes returns the passes asked of the tree so far.
func (ft *fakeTree) passes() []wire.PassOptions {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return append([]wire.PassOptions(nil), ft.calls...)
}

// waitDone waits until n passes completed.
func (ft *fakeTree) waitDone(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ft.mu.Lock()
		ok, ch, calls := ft.done >= n, ft.changed, len(ft.calls)
		ft.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %d passes to complete (%d started)", timeout, n, calls)
		}
	}
}

// ---- an op writer that knows the positions of items ----

// appender is the only writer of a master's ops in a test where a fake
// Tree emits concurrently: its lock stands for mirrorfs's.
type appender struct {
	mu         sync.Mutex
	m          *Master
	g          *opGen
	want       map[uint64][]byte
	large, big int
}

func (a *appender) add() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	seq, op := a.g.next(a.large, a.big)
	a.want[seq] = wire.AppendOp(nil, seq, op)
	a.m.Append(seq, op)
	return seq
}

func (a *appender) head() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.g.seq
}

func (a *appender) wanted() map[uint64][]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[uint64][]byte, len(a.want))
	for k, v := range a.want {
		out[k] = v
	}
	return out
}

// The fake Tree's script encodes to what the slave's codec accepts, and
// itemSize measures it the same whatever the position.
func TestFakeTreeItemsEncode(t *testing.T) {
	ft := newFakeTree(1, 900)
	var items []wire.ResyncItem
	sink := sinkFunc(func(it wire.ResyncItem, n int64) {
		if n != itemSize(it) {
			t.Errorf("reserved %d for an item of %d bytes", n, itemSize(it))
		}
		items = append(items, it)
	})
	replies := make(chan wire.ResyncReply, 1)
	replies <- &wire.ResyncDirDone{Pass: 3, DirID: 1, Diffs: []wire.Difference{{Path: "d1/l", What: "missing"}}}
	res, err := ft.RunPass(context.Background(), wire.PassOptions{Pass: 3, Verify: true}, sink, replies)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 3 || len(res.Diffs) != 1 || res.Diffs[0].What != "missing" {
		t.Fatalf("items %v, result %+v", items, res)
	}
	for _, it := range items {
		for _, at := range []uint64{0, 1 << 40} {
			after, got, err := wire.ParseResyncItem(wire.AppendResyncItem(nil, at, it))
			if err != nil || after != at || got.ResyncKind() != it.ResyncKind() {
				t.Fatalf("%T does not round-trip: %v", it, err)
			}
		}
	}
}

// sinkFunc is a wire.PassSink that never blocks.
type sinkFunc func(it wire.ResyncItem, n int64)

func (f sinkFunc) Reserve(ctx context.Context, n int64) error { return ctx.Err() }
func (f sinkFunc) Emit(it wire.ResyncItem, n int64)           { f(it, n) }
func (f sinkFunc) Release(n int64)                            {}
