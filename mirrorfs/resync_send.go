package mirrorfs

import (
	"context"
	"fmt"
	"math"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Sending what differs (step 3 of a pass, continued): one file at a
// time, each block read and emitted under the file's locks, then
// ResyncClose. Reservations are made without any lock held and given back
// (Release) when a block turns out to be beyond the end.

// sendLoop sends the files compared, one at a time.
func (p *pass) sendLoop(ctx context.Context) error {
	for {
		var f *fileState
		err := p.waitFor(ctx, func() bool { return len(p.sendq) > 0 || p.ended })
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		p.mu.Lock()
		if p.ended {
			p.mu.Unlock()
			return nil
		}
		f = p.sendq[0]
		p.mu.Unlock()
		err = p.send(ctx, f)
		p.mu.Lock()
		p.sendq = p.sendq[1:]
		p.mu.Unlock()
		p.resolve(f)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// send sends what differs of f, then ResyncClose.
func (p *pass) send(ctx context.Context, f *fileState) error {
	if f.gone {
		// Removed since the listing, on both sides (every name of it was
		// unlinked by ops the slave applied too): let the slave forget
		// the FileID, changing nothing.
		return p.sendGone(ctx, f)
	}
	sent := false
	// stale is the first byte within the slave's copy (as it was at the
	// listing: ops since reached both copies alike) found beyond the
	// master's end when its block was sent (a whole block past the end,
	// or the tail of a short last block): the slave's copy there may
	// hold stale bytes, which an extension of the file before the Close
	// would leave in place (see resync_replies.go).
	stale := uint64(math.MaxUint64)
	send := func(b uint64) (bool, error) {
		n, err := p.sendBlock(ctx, f, b)
		if end := b*wire.ResyncBlockSize + uint64(n); n < wire.ResyncBlockSize && end < f.slaveSize {
			stale = min(stale, end)
		}
		sent = sent || n > 0
		return n > 0, err
	}
	for _, r := range f.marked {
		for b := r.from; b < r.to; b++ {
			if _, err := send(b); err != nil {
				return err
			}
		}
	}
	// The blocks the slave did not describe (its copy was shorter), up to
	// the master's end at the listing: blocks added since reached the
	// slave through ops, as they did the master.
	for b := f.next; b < wire.BlockCount(uint64(f.size)); b++ {
		ok, err := send(b)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
	}
	if sent {
		p.filesSent.Add(1)
	}
	// Close, under a lock where the file does not reach past stale: at
	// the Close's position, the slave's copy is the master's up to the
	// size it sets. (Bounded: stale grows with every block sent again,
	// and stays below the slave's size.)
	for {
		done, err := p.closeOrSend(ctx, f, &stale)
		if err != nil || done {
			return err
		}
	}
}

// closeOrSend, under one hold of the file's locks, sends the block
// holding byte *stale again if the file now reaches it, else emits
// ResyncClose with the file's size and mtime.
func (p *pass) closeOrSend(ctx context.Context, f *fileState, stale *uint64) (done bool, err error) {
	res := sizeData(wire.ResyncBlockSize)
	if err := p.reserve(ctx, res); err != nil {
		return false, err
	}
	unlock, ok := p.lockFile(f)
	if !ok {
		p.refund(res)
		return true, nil
	}
	defer unlock()
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		p.refund(res)
		return false, fmt.Errorf("mirrorfs: resync: fstat %q: %w", f.path, err)
	}
	if *stale < f.slaveSize && int64(*stale) < st.Size {
		b := *stale / wire.ResyncBlockSize
		n, err := p.emitBlock(f, b, res)
		*stale = b*wire.ResyncBlockSize + uint64(n) // > *stale: the file reaches past it
		if n == wire.ResyncBlockSize {
			*stale = (b + 1) * wire.ResyncBlockSize
		}
		return false, err
	}
	p.emit(&wire.ResyncClose{Pass: p.o.Pass, FileID: f.id, Size: uint64(st.Size), Mtime: wire.Time{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)}}, sizeClose)
	p.refund(res - sizeClose)
	return true, nil
}

// sendBlock sends block b of f as it is now; n == 0 when b lies beyond
// the end (or the pass ended).
func (p *pass) sendBlock(ctx context.Context, f *fileState, b uint64) (int, error) {
	res := sizeData(wire.ResyncBlockSize)
	if err := p.reserve(ctx, res); err != nil {
		return 0, err
	}
	unlock, ok := p.lockFile(f)
	if !ok {
		p.refund(res)
		return 0, nil
	}
	defer unlock()
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		p.refund(res)
		return 0, fmt.Errorf("mirrorfs: resync: fstat %q: %w", f.path, err)
	}
	off := int64(b) * wire.ResyncBlockSize
	if off >= st.Size {
		p.refund(res)
		return 0, nil
	}
	return p.emitBlock(f, b, res)
}

// emitBlock emits block b of f (which exists) as data, or as a hole when
// it is a hole or all zeros, with res bytes reserved, and returns its
// length. Callers hold lockFile.
func (p *pass) emitBlock(f *fileState, b uint64, res int64) (int, error) {
	// A fresh buffer: the sink keeps the item's Data.
	buf := make([]byte, wire.ResyncBlockSize)
	n, _, zero, _, err := p.readBlock(f.fd, b, buf)
	if err != nil || n == 0 {
		p.refund(res)
		if err == nil {
			err = fmt.Errorf("block %d vanished under the lock: %w", b, unix.EIO)
		}
		return 0, fmt.Errorf("mirrorfs: resync: send %q: %w", f.path, err)
	}
	it := &wire.ResyncData{Pass: p.o.Pass, FileID: f.id, Off: int64(b) * wire.ResyncBlockSize, Len: int64(n)}
	if zero {
		p.emit(it, sizeData(0))
		p.refund(res - sizeData(0))
		return n, nil
	}
	it.Data = buf[:n]
	p.emit(it, res)
	p.bytesSent.Add(uint64(n))
	return n, nil
}

// sendGone ends the transfer of a file gone from the master: the slave
// forgets the FileID, keeping its copy's size and mtime.
func (p *pass) sendGone(ctx context.Context, f *fileState) error {
	if err := p.reserve(ctx, sizeClose); err != nil {
		return err
	}
	p.mnt.rlockTree()
	defer p.mnt.runlockTree()
	p.mu.Lock()
	ended := p.ended
	p.mu.Unlock()
	if ended {
		p.refund(sizeClose)
		return nil
	}
	p.emit(&wire.ResyncClose{Pass: p.o.Pass, FileID: f.id, Size: f.slaveSize, Mtime: wire.Time{Omit: true}}, sizeClose)
	return nil
}
