package mirrorfs

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tdfs/tdfs/wire"
)

// serialSink fails when two Appends overlap.
type serialSink struct {
	fakeSink
	in      atomic.Int32
	overlap atomic.Bool
}

func (s *serialSink) Append(seq uint64, op wire.Op) {
	if s.in.Add(1) != 1 {
		s.overlap.Store(true)
	}
	s.fakeSink.Append(seq, op)
	s.in.Add(-1)
}

func TestSequencerDenseAndSerial(t *testing.T) {
	sink := &serialSink{}
	seq := &sequencer{sink: sink}
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				seq.emit(&wire.Write{Handle: uint64(g + 1), Off: int64(i), Data: []byte{byte(i)}})
			}
		})
	}
	wg.Wait()
	sink.check(t)
	if sink.overlap.Load() {
		t.Error("Append calls overlapped")
	}
	if got := seq.lastSeq(); got != goroutines*each {
		t.Errorf("lastSeq %d, want %d", got, goroutines*each)
	}
	// Each goroutine's ops keep its order.
	next := map[uint64]int64{}
	for _, r := range sink.all() {
		w := r.op.(*wire.Write)
		if w.Off != next[w.Handle] {
			t.Fatalf("handle %d: op at %d numbered before %d", w.Handle, w.Off, next[w.Handle])
		}
		next[w.Handle]++
	}
}

func TestSequencerStartsAtOne(t *testing.T) {
	sink := &fakeSink{}
	seq := &sequencer{sink: sink}
	if got := seq.lastSeq(); got != 0 {
		t.Errorf("lastSeq before any op %d, want 0", got)
	}
	if got := seq.emit(&wire.Sync{}); got != 1 {
		t.Errorf("first seq %d, want 1", got)
	}
	if got := sink.all(); len(got) != 1 || got[0].seq != 1 {
		t.Errorf("sink saw %+v", got)
	}
}
