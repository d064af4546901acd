package mirrorfs

import (
	"sync"
	"sync/atomic"

	"github.com/tdfs/tdfs/wire"
)

// sequencer numbers ops densely and hands them to the sink in that order.
type sequencer struct {
	mu   sync.Mutex // held across numbering and OpSink.Append
	sink wire.OpSink
	last atomic.Uint64 // highest seq handed to the sink; read without mu
}

// emit numbers op and hands it to the sink. Callers hold whatever locks
// exclude the ops that conflict with op, so the number is consistent with
// the order in which conflicting ops took effect.
func (s *sequencer) emit(op wire.Op) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := s.last.Load() + 1
	s.sink.Append(seq, op)
	s.last.Store(seq)
	return seq
}

// lastSeq returns the highest seq handed to the sink so far.
func (s *sequencer) lastSeq() uint64 { return s.last.Load() }
