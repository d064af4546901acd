package quictransport

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tdfs/tdfs/journal"
)

// journaler writes the master's ops to its Journal, a few ms behind
// Append, and truncates what every slave made durable. Writing here keeps
// the journal's copy, checksum and write(2) out of the FUSE path.
//
// Goroutines: its flusher (run, started by Master.Run) and the senders
// (flush, before they send an op the journal has not handed to the kernel
// yet) write the journal; Append only queues, and writes it itself only
// when the ops not journaled yet overflow the backlog on their own.
//
// Locks: wmu serialises the journal's writers and guards what only they
// touch (dirty, batch, errLogged, and every call into the Journal).
// journaled, pending, flushed and low move with the backlog and are
// guarded by the Master's mu (mu here, which also guards bl). wmu is taken
// before mu, and mu is never held while writing.
type journaler struct {
	j    *journal.Journal // nil: no journal, and every method does nothing
	log  *slog.Logger
	mu   *sync.Mutex // the Master's
	bl   *backlog    // the Master's, under mu
	kick chan struct{}

	wmu       sync.Mutex
	dirty     bool     // appended since the last Flush
	batch     []*entry // appendLocked's scratch
	errLogged bool

	// Under mu.
	//
	// journaled is the last seq handed to Journal.Append. Entries after
	// it are never dropped from memory: Append journals them itself
	// instead when they alone overflow the backlog (trimLocked).
	journaled uint64
	pending   int64 // bytes appended since the flusher was last kicked
	// flushed is the last seq handed to the kernel: no op beyond it is
	// sent, so after a kill -9 of the master no slave holds an op its
	// journal lacks.
	flushed uint64
	low     uint64 // seq the journal may be truncated through
}

// journalKickBytes: Append wakes the flusher once this many bytes of ops
// wait for the journal (smaller ones wait for its tick, or for a sender).
const journalKickBytes = 256 << 10

// init sets jn up for the Master whose mu and bl are given, whose ops
// run through head already.
func (jn *journaler) init(j *journal.Journal, log *slog.Logger, mu *sync.Mutex, bl *backlog, head uint64) {
	jn.j, jn.log, jn.mu, jn.bl = j, log, mu, bl
	jn.kick = make(chan struct{}, 1)
	jn.flushed, jn.journaled = head, head
}

// kickFlush asks the flusher to write the journal's buffer now.
func (jn *journaler) kickFlush() {
	select {
	case jn.kick <- struct{}{}:
	default:
	}
}

// queuedLocked books an op of size bytes that Append queued, waking the
// flusher once enough wait. Called with mu held.
func (jn *journaler) queuedLocked(size int64) {
	if jn.j == nil {
		return
	}
	if jn.pending += size; jn.pending >= journalKickBytes {
		jn.pending = 0
		jn.kickFlush()
	}
}

// trimLocked trims the backlog to its limit after Append pushed op seq,
// dropping no op the journal lacks: when those alone overflow the
// backlog, it journals them here, as a slow disk would make the writer
// wait anyway. It reports whether anything was dropped. Called with mu
// held, which it releases while writing (no other Append runs meanwhile:
// the caller serialises them).
func (jn *journaler) trimLocked(seq uint64) bool {
	if jn.j == nil {
		return jn.bl.trim(seq)
	}
	dropped := jn.bl.trim(jn.journaled)
	for jn.bl.bytes > jn.bl.limit && len(jn.bl.entries) > 1 && jn.bl.first() > jn.journaled {
		jn.mu.Unlock()
		jn.flush()
		jn.mu.Lock()
		dropped = jn.bl.trim(jn.journaled) || dropped
	}
	return dropped
}

// sendableLocked reports whether op seq may be sent: the journal has
// handed it to the kernel (after a kill -9 of the master, no slave is
// ahead of its journal). Called with mu held.
func (jn *journaler) sendableLocked(seq uint64) bool {
	return jn.j == nil || seq <= jn.flushed
}

// truncatableLocked bounds low, the seq every slave made durable, by what
// the journal has yet to write, and records it as how far the journal may
// be truncated. Called with mu held.
func (jn *journaler) truncatableLocked(low uint64) uint64 {
	if jn.j != nil {
		low = min(low, jn.journaled) // the journal still needs the rest
	}
	jn.low = low
	return low
}

// run is the flusher: it hands the journal's buffered records to the
// kernel soon after they are appended (a kill -9 of the master then loses
// at most a few milliseconds of them), and truncates what every slave
// made durable, until ctx is done.
func (jn *journaler) run(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	lastTrunc := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-jn.kick:
		}
		jn.mu.Lock()
		low := jn.low
		jn.mu.Unlock()
		jn.flush()
		jn.wmu.Lock()
		if time.Since(lastTrunc) > time.Second {
			lastTrunc = time.Now()
			if err := jn.j.TruncateThrough(low); err != nil {
				jn.log.Warn("journal: truncation failed", "through", low, "err", err)
			}
		}
		jn.wmu.Unlock()
	}
}

// close writes what is queued and syncs the journal, once the flusher and
// the senders have stopped.
func (jn *journaler) close() {
	if jn.j == nil {
		return
	}
	jn.flush()
	jn.wmu.Lock()
	defer jn.wmu.Unlock()
	if err := jn.j.Sync(); err != nil {
		jn.log.Error("journal: final sync failed", "err", err)
	}
}

// flush appends to the journal the ops Append queued since the last call,
// hands its buffered records to the kernel, and records how far that
// goes.
func (jn *journaler) flush() {
	jn.wmu.Lock()
	last := jn.appendLocked()
	if jn.dirty {
		if err := jn.j.Flush(); err != nil {
			jn.failedLocked(err)
		}
		jn.dirty = false
	}
	jn.wmu.Unlock()
	jn.mu.Lock()
	jn.flushed = max(jn.flushed, last)
	jn.mu.Unlock()
}

// appendLocked appends every op held in memory after journaled, in
// batches (mu is taken per batch, not per record, and never while
// writing), and returns the last seq appended. Called with wmu held.
func (jn *journaler) appendLocked() uint64 {
	for {
		jn.mu.Lock()
		// Ops dropped before they were journaled (the backlog was reset by
		// an out-of-order Append) are skipped: the journal's Append then
		// reports the gap, and it starts anew.
		next := max(jn.journaled+1, jn.bl.first())
		batch := jn.batch[:0]
		for seq := next; seq <= jn.bl.head && len(batch) < 256; seq++ {
			e, _ := jn.bl.get(seq)
			batch = append(batch, e)
		}
		last := jn.journaled
		jn.mu.Unlock()
		if len(batch) == 0 {
			return last
		}
		for _, e := range batch {
			// e.body is intact: no sender frames an op before it is
			// journaled and flushed (sendableLocked).
			if err := jn.j.Append(e.seq, e.body); err != nil {
				jn.failedLocked(err)
				if err = jn.j.Append(e.seq, e.body); err != nil {
					jn.log.Error("journal append failed after a reset", "seq", e.seq, "err", err)
				}
			}
		}
		jn.dirty = true
		jn.mu.Lock()
		jn.journaled = batch[len(batch)-1].seq
		jn.mu.Unlock()
		clear(batch)
		jn.batch = batch
	}
}

// failedLocked handles a failed journal write (a full disk, say): the
// journal starts anew at the next op; slaves that needed what it held are
// resynchronised by comparison. Called with wmu held.
func (jn *journaler) failedLocked(err error) {
	if !jn.errLogged {
		jn.errLogged = true
		jn.log.Error("journal write failed: starting it anew; slaves that needed what it held will be resynchronised by comparison",
			"err", err)
	}
	if rerr := jn.j.Reset(); rerr != nil {
		jn.log.Error("journal reset failed", "err", rerr)
	}
}
