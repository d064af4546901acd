package mirrorfs_test

// The recording sink of the resync tests: ops and items in one log, in
// the order the slave must apply them, with the sink's flow control.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tdfs/tdfs/wire"
)

// event is one op or one item, in the order the slave must apply them.
type event struct {
	seq  uint64 // op number; for an item, the last op numbered before it
	op   wire.Op
	item wire.ResyncItem
	n    int64 // bytes reserved for the item
}

// recorder is the mount's Sink and a pass's wire.PassSink at once. One log
// holds both, in the order of the calls: Emit runs under the mirror's
// locks and Append under its sequencer, so an item lands after every op
// numbered before it and before every op it conflicts with.
type recorder struct {
	mu       sync.Mutex
	events   []event
	last     uint64
	changed  chan struct{}
	window   int64 // bytes of items that may be reserved and not yet applied
	held     int64
	reserved int64 // in total
	emitted  int64 // in total (sum of n)
	released int64 // in total
	errs     []string
}

func newRecorder(window int64) *recorder {
	return &recorder{window: window, changed: make(chan struct{})}
}

func (r *recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Append round-trips op through the codec: the deep copy the Sink
// contract asks for, and a check that the op is valid on the wire.
func (r *recorder) Append(seq uint64, op wire.Op) {
	got, cp, err := wire.ParseOp(wire.AppendOp(nil, seq, op))
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err != nil:
		r.errs = append(r.errs, fmt.Sprintf("op %d %v does not decode: %v", seq, op.Type(), err))
		return
	case got != seq || seq != r.last+1:
		r.errs = append(r.errs, fmt.Sprintf("op %d after %d", seq, r.last))
	}
	r.last = seq
	r.events = append(r.events, event{seq: seq, op: cp})
	r.notifyLocked()
}

func (r *recorder) Wait(uint64) error { return nil }

// Reserve waits for room in the window (an item larger than the window
// waits for an empty one).
func (r *recorder) Reserve(ctx context.Context, n int64) error {
	if n <= 0 {
		r.mu.Lock()
		r.errs = append(r.errs, fmt.Sprintf("Reserve(%d)", n))
		r.mu.Unlock()
		return nil
	}
	for {
		r.mu.Lock()
		if r.held == 0 || r.held+n <= r.window {
			r.held += n
			r.reserved += n
			r.mu.Unlock()
			return nil
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Emit round-trips the item through the codec, as the transport would
// send it: it must decode, within the frame limit, and its encoding must
// fit what was reserved for it. The decoded copy is what the slave gets.
func (r *recorder) Emit(it wire.ResyncItem, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	body := wire.AppendResyncItem(nil, r.last, it)
	after, cp, err := wire.ParseResyncItem(body)
	switch {
	case err != nil:
		r.errs = append(r.errs, fmt.Sprintf("item %T does not decode: %v", it, err))
		cp = it
	case after != r.last:
		r.errs = append(r.errs, fmt.Sprintf("item position %d decodes as %d", r.last, after))
	}
	if int64(len(body)) > n {
		r.errs = append(r.errs, fmt.Sprintf("item %T of %d bytes emitted with %d reserved", it, len(body), n))
	}
	if len(body) > wire.MaxFrameLen {
		r.errs = append(r.errs, fmt.Sprintf("item %T of %d bytes exceeds a frame", it, len(body)))
	}
	r.emitted += n
	r.events = append(r.events, event{seq: r.last, item: cp, n: n})
	r.notifyLocked()
}

func (r *recorder) Release(n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n <= 0 || n > r.held {
		r.errs = append(r.errs, fmt.Sprintf("Release(%d) with %d held", n, r.held))
	}
	r.held -= n
	r.released += n
	r.notifyLocked()
}

// release gives back an applied item's bytes.
func (r *recorder) release(n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held -= n
	r.notifyLocked()
}

// next returns event i, waiting for it.
func (r *recorder) next(ctx context.Context, i int) (event, error) {
	for {
		r.mu.Lock()
		if i < len(r.events) {
			ev := r.events[i]
			r.mu.Unlock()
			return ev, nil
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return event{}, ctx.Err()
		}
	}
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// items returns the items recorded so far.
func (r *recorder) items() []wire.ResyncItem {
	r.mu.Lock()
	defer r.mu.Unlock()
	var its []wire.ResyncItem
	for _, e := range r.events {
		if e.item != nil {
			its = append(its, e.item)
		}
	}
	return its
}

func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		t.Errorf("recorder: %s", e)
	}
}

// fanout hands every op to several recorders (one per slave).
type fanout []*recorder

func (f fanout) Append(seq uint64, op wire.Op) {
	for _, r := range f {
		r.Append(seq, op)
	}
}

func (f fanout) Wait(uint64) error { return nil }

// dumpEvents writes the recorded events to a file in the directory named
// by TDFS_RESYNC_DUMP, if set: what a failing run did, for a human.
func dumpEvents(t *testing.T, r *recorder) {
	dir := os.Getenv("TDFS_RESYNC_DUMP")
	if dir == "" {
		return
	}
	p := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".events")
	f, err := os.Create(p)
	if err != nil {
		t.Logf("dump: %v", err)
		return
	}
	defer f.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, e := range r.events {
		switch it := e.item.(type) {
		case nil:
			if w, ok := e.op.(*wire.Write); ok {
				fmt.Fprintf(f, "%d op %d write handle %d at %d, %d bytes, mtime %v\n", i, e.seq, w.Handle, w.Off, len(w.Data), w.Mtime)
			} else {
				fmt.Fprintf(f, "%d op %d %T %+v\n", i, e.seq, e.op, e.op)
			}
		case *wire.ResyncData:
			fmt.Fprintf(f, "%d after %d: data file %d at %d, %d (%d bytes)\n", i, e.seq, it.FileID, it.Off, it.Len, len(it.Data))
		case *wire.ResyncDir:
			fmt.Fprintf(f, "%d after %d: dir %d %q final %v\n", i, e.seq, it.DirID, it.Path, it.Final)
			for _, en := range it.Entries {
				fmt.Fprintf(f, "\t%q kind %d size %d mtime %v file %d link %d\n", en.Name, en.Kind, en.Attr.Size, en.Attr.Mtime, en.FileID, en.LinkID)
			}
		default:
			fmt.Fprintf(f, "%d after %d: %T %+v\n", i, e.seq, it, it)
		}
	}
	t.Logf("events written to %s", p)
}
