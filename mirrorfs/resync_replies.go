package mirrorfs

import (
	"context"
	"fmt"
	"slices"

	"github.com/tdfs/tdfs/wire"
)

// Contents (step 3 of a pass). The slave answers ResyncHashes for the
// files whose size or mtime differ on its side (Verify: for every file,
// with the root alone) and ResyncDirDone when it has applied a directory's
// Final item. Replies are read by one goroutine that never waits for the
// sink (readReplies): comparing only reads the master's files, so the
// replies always drain and a slave blocked on sending them cannot stall
// the pass. Sending what differs waits for the sink on another goroutine
// (sendLoop).
//
// Why a block compared at position Tc against the slave's hash from
// position T <= Tc (the directory's item) is equal on the slave too when
// the hashes agree: every op on the file between T and Tc was applied to
// both copies, and each (write, truncate, fallocate) sets a range to the
// same bytes whatever was there, so equal blocks stay equal. The one
// exception is the end of file: an op that extends a file zero-fills from
// the old end, and the old ends may differ, so the slave's stale bytes
// beyond the master's end would stay when the master extends the file.
// So the comparison marks every block beyond the master's end as
// different, and ResyncClose goes out only under a lock where the file
// does not reach the first stale byte found while sending (in a block
// beyond the end, or the tail of a short last block where the slave's
// copy was longer): a block the file grew into is sent again first.
// After the Close both copies have the same size.
// Sending a marked block later, at Ts, sends the master's content as of
// Ts under the same locks: correct whatever happened in between.

// readReplies reads the slave's replies until the pass ends.
func (p *pass) readReplies(ctx context.Context, replies <-chan wire.ResyncReply) error {
	buf := make([]byte, wire.ResyncBlockSize)
	for {
		var r wire.ResyncReply
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case r, ok = <-replies:
		}
		p.mu.Lock()
		ended := p.ended
		if ok && !ended {
			p.busy++
		}
		p.mu.Unlock()
		if ended {
			return nil // late replies for files that no longer matter
		}
		if !ok {
			return ErrRepliesClosed
		}
		err := p.handleReply(r, buf)
		p.mu.Lock()
		p.busy--
		p.notifyLocked()
		p.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

func (p *pass) handleReply(r wire.ResyncReply, buf []byte) error {
	switch r := r.(type) {
	case *wire.ResyncHashes:
		if r.Pass != p.o.Pass {
			return fmt.Errorf("%w: hashes of pass %d in pass %d", ErrBadReply, r.Pass, p.o.Pass)
		}
		return p.onHashes(r, buf)
	case *wire.ResyncDirDone:
		if r.Pass != p.o.Pass {
			return fmt.Errorf("%w: directory done of pass %d in pass %d", ErrBadReply, r.Pass, p.o.Pass)
		}
		return p.onDirDone(r)
	case nil:
		return fmt.Errorf("%w: nil reply", ErrBadReply)
	}
	return fmt.Errorf("%w: %T", ErrBadReply, r)
}

// onHashes compares a file with what the slave described.
func (p *pass) onHashes(r *wire.ResyncHashes, buf []byte) error {
	f, err := p.hashesFor(r)
	if err != nil {
		return err
	}
	if err := p.openFile(f); err != nil {
		return err
	}
	f.slaveSize = max(f.slaveSize, r.Size)
	if p.o.Verify {
		if len(r.Hashes) != 0 || r.More {
			return fmt.Errorf("%w: verify hashes for file %d carry blocks", ErrBadReply, r.FileID)
		}
		f.last = true
		err := p.verify(f, r.Root, buf)
		p.resolve(f)
		return err
	}
	if err := p.compareHashes(f, r, buf); err != nil {
		return err
	}
	if r.More {
		return nil
	}
	f.last = true
	p.mu.Lock()
	p.sendq = append(p.sendq, f)
	p.notifyLocked()
	p.mu.Unlock()
	return nil
}

// hashesFor returns the file r describes (counted as hashed from now on),
// or why r does not fit it.
func (p *pass) hashesFor(r *wire.ResyncHashes) (*fileState, error) {
	p.mu.Lock()
	f := p.byID[r.FileID]
	if f != nil && !f.hashed {
		f.hashed = true
		p.hashedOpen++
	}
	p.mu.Unlock()
	switch {
	case f == nil:
		return nil, fmt.Errorf("%w: hashes for file %d, which is not waiting for any", ErrBadReply, r.FileID)
	case f.last:
		return nil, fmt.Errorf("%w: hashes for file %d after its last", ErrBadReply, r.FileID)
	case r.First != f.next:
		return nil, fmt.Errorf("%w: hashes for file %d from block %d, expected %d", ErrBadReply, r.FileID, r.First, f.next)
	case r.First+uint64(len(r.Hashes)) > wire.BlockCount(r.Size):
		return nil, fmt.Errorf("%w: %d hashes for file %d of %d bytes", ErrBadReply, r.First+uint64(len(r.Hashes)), r.FileID, r.Size)
	}
	return f, nil
}

// compareHashes marks the blocks of f that differ from the slave's hashes
// in r, until f is found gone.
func (p *pass) compareHashes(f *fileState, r *wire.ResyncHashes, buf []byte) error {
	for i, h := range r.Hashes {
		if f.gone {
			break
		}
		b := r.First + uint64(i)
		differs, err := p.compareBlock(f, b, h, buf)
		if err != nil {
			return err
		}
		if differs {
			f.mark(b)
		}
	}
	f.next = r.First + uint64(len(r.Hashes))
	return nil
}

// compareBlock reports whether block b of f differs from the slave's hash
// h, as of now. A block beyond the master's end differs (see above).
func (p *pass) compareBlock(f *fileState, b uint64, h wire.Hash, buf []byte) (bool, error) {
	unlock, ok := p.lockFile(f)
	if !ok {
		return false, nil
	}
	defer unlock()
	n, got, _, _, err := p.readBlock(f.fd, b, buf)
	if err != nil {
		return false, fmt.Errorf("mirrorfs: resync: compare %q: %w", f.path, err)
	}
	p.bytesCompared.Add(uint64(n))
	return n == 0 || got != h, nil
}

// verify compares f's root with the slave's, block by block under the
// locks; a file that changed since its listing is checked again later.
func (p *pass) verify(f *fileState, root wire.Hash, buf []byte) error {
	if f.gone {
		return nil // removed since the listing: nothing to compare
	}
	rh := wire.NewRootHasher()
	for b := uint64(0); ; b++ {
		unlock, ok := p.lockFile(f)
		if !ok {
			return nil
		}
		n, h, _, st, err := p.readBlock(f.fd, b, buf)
		unlock()
		if err != nil {
			return fmt.Errorf("mirrorfs: resync: verify %q: %w", f.path, err)
		}
		if st.Ctim != f.ctime || st.Size != f.size {
			p.recheck(f)
			return nil
		}
		if n == 0 {
			break
		}
		p.bytesCompared.Add(uint64(n))
		rh.Add(h)
	}
	if rh.Sum() != root {
		p.difference(wire.Difference{Path: f.path, What: "content"})
	}
	return nil
}

// recheck queues f's directory to be listed again (the slave then hashes
// the file anew), a bounded number of times.
func (p *pass) recheck(f *fileState) {
	p.mu.Lock()
	n, known := p.retries[f.path]
	again := n < maxRetries && (known || len(p.retries) < maxRetryPaths)
	if again {
		p.retries[f.path] = n + 1
	}
	p.mu.Unlock()
	if again {
		p.w.add(f.path)
		return
	}
	p.difference(wire.Difference{Path: f.path, What: "content not compared: the file kept changing"})
}

// difference records one difference. A verify lists each once, though a
// directory listed again reports its differences again.
func (p *pass) difference(d wire.Difference) {
	if !p.o.Verify {
		p.differs.Add(1)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.seenDiff[d]; dup {
		return
	}
	p.differs.Add(1)
	if len(p.diffs) < maxDiffs {
		p.diffs = append(p.diffs, d)
		p.seenDiff[d] = struct{}{}
	} else {
		p.trunc++
	}
}

// onDirDone: the slave has applied a directory's Final item. Files listed
// up to it that got no hashes are equal on the slave.
func (p *pass) onDirDone(r *wire.ResyncDirDone) error {
	p.mu.Lock()
	var at uint64
	if r.Part {
		q := p.parts[r.DirID]
		if len(q) == 0 {
			p.mu.Unlock()
			return fmt.Errorf("%w: part of directory %d, which has no item waiting to be done", ErrBadReply, r.DirID)
		}
		at = q[0]
		if len(q) == 1 {
			delete(p.parts, r.DirID)
		} else {
			p.parts[r.DirID] = q[1:]
		}
	} else {
		d := p.dirByID[r.DirID]
		if d == nil || len(p.parts[r.DirID]) > 0 {
			p.mu.Unlock()
			return fmt.Errorf("%w: directory %d is not waiting to be done", ErrBadReply, r.DirID)
		}
		delete(p.dirByID, r.DirID)
		at = d.finalAt
	}
	p.waiting--
	// Replies come in item order: every file listed up to item at that
	// has no hashes yet never will.
	var done []*fileState
	for len(p.fifo) > 0 && p.fifo[0].at <= at {
		if f := p.fifo[0]; !f.hashed && !f.resolved {
			p.resolveLocked(f)
			done = append(done, f)
		}
		p.fifo[0] = nil
		p.fifo = p.fifo[1:]
	}
	if cap(p.fifo) > 1024 && len(p.fifo) < cap(p.fifo)/4 {
		p.fifo = slices.Clone(p.fifo) // let go of the array's consumed front
	}
	p.notifyLocked()
	p.mu.Unlock()
	for _, f := range done {
		f.release()
	}
	for _, df := range r.Diffs {
		p.difference(df)
	}
	return nil
}

// resolve is done with f.
func (p *pass) resolve(f *fileState) {
	p.mu.Lock()
	p.resolveLocked(f)
	p.notifyLocked()
	p.mu.Unlock()
	f.release()
}

func (p *pass) resolveLocked(f *fileState) {
	if f.resolved {
		return
	}
	f.resolved = true
	delete(p.byID, f.id)
	if f.hashed {
		p.hashedOpen--
	}
	if f.ident.fd >= 0 {
		p.fds--
	}
}
