package mirrorfs

import (
	"sync"
	"sync/atomic"

	"github.com/tdfs/tdfs/wire"
)

// Sink receives numbered ops. mirrorfs declares it; the QUIC fan-out
// implements it.
type Sink interface {
	// Append hands over op number seq. Calls come one at a time in seq
	// order (1, 2, 3, ... no gaps) while mirrorfs holds its sequencing
	// lock: Append must copy what it keeps (Write.Data and Setxattr.Value
	// alias FUSE request buffers) and must not block on the network.
	Append(seq uint64, op wire.Op)
	// Wait returns once every healthy slave has made ops up to seq
	// durable, or has been marked degraded (the sink bounds the wait by
	// its --sync-timeout). An error says the durability the master was
	// asked for (--min-slaves) was not reached: the caller gets EIO.
	// Called without any mirrorfs lock held.
	Wait(seq uint64) error
}

// sequencer numbers ops densely and hands them to the sink in that order.
type sequencer struct {
	mu   sync.Mutex // held across numbering and Sink.Append
	sink Sink
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
