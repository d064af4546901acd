package mirrorfs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// The course of a pass: begin, the walks, end (steps 1, 2 and 5; see
// resync.go), and progress reports.

// run runs the pass: the walker here, the replies and the sending on
// goroutines of their own.
func (p *pass) run(ctx context.Context, replies <-chan wire.ResyncReply) (wire.PassResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	p.mu.Lock()
	p.cancel = cancel
	p.mu.Unlock()
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Go(func() { p.precount(ctx) })
	if p.o.Progress != nil {
		wg.Go(func() { p.reportProgress(ctx) })
	}
	if err := p.begin(ctx); err != nil {
		return wire.PassResult{}, err
	}
	// From here the watch is registered: take it off whatever happens.
	defer func() {
		p.mnt.lockTree()
		p.mnt.unwatch(p.w)
		p.mnt.unlockTree()
	}()
	wg.Go(func() {
		if err := p.readReplies(ctx, replies); err != nil {
			p.fail(err)
		}
	})
	if !p.o.Verify {
		wg.Go(func() {
			if err := p.sendLoop(ctx); err != nil {
				p.fail(err)
			}
		})
	}
	if err := p.walkAll(ctx); err != nil {
		p.fail(err)
		return wire.PassResult{}, p.result(err)
	}
	res := p.snapshot()
	if p.o.Progress != nil {
		cancel()
		wg.Wait()
		p.o.Progress(res.PassProgress)
	}
	return res, nil
}

// result returns the error the pass ended with: the first recorded one,
// which says more than the context error it caused elsewhere.
func (p *pass) result(err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed != nil {
		return p.failed
	}
	return err
}

// begin emits ResyncBegin (and ResyncHandles) under the exclusive
// namespace lock and registers the pass's watch there.
func (p *pass) begin(ctx context.Context) error {
	// A first guess at the handles' size; retried with the real size.
	want := sizeBegin + sizeHandlesHead + int64(p.mnt.writtenFiles())*sizeHandleRef("")*4
	for try := 0; ; try++ {
		if err := p.reserve(ctx, want); err != nil {
			return err
		}
		p.mnt.lockTree()
		var refs []wire.HandleRef
		if p.o.Rebase {
			refs = p.mnt.openHandles()
		}
		need := int64(sizeBegin)
		for i := 0; i < len(refs); i += wire.MaxResyncHandles {
			need += sizeHandlesHead
			for _, r := range refs[i:min(len(refs), i+wire.MaxResyncHandles)] {
				need += sizeHandleRef(r.Path)
			}
		}
		if need > want && try < 5 {
			p.mnt.unlockTree()
			p.refund(want)
			want = need
			continue
		}
		if need > want {
			p.mnt.unlockTree()
			p.refund(want)
			return fmt.Errorf("mirrorfs: resync: handles keep changing while the pass begins")
		}
		p.w.startMain()
		if !p.noWatch {
			p.mnt.watch(p.w)
		}
		p.emit(&wire.ResyncBegin{Pass: p.o.Pass, Rebase: p.o.Rebase, Verify: p.o.Verify, Full: p.o.Full, Run: p.m.run}, sizeBegin)
		used, hs := p.emitHandles(refs)
		left := want - sizeBegin - used
		// Nothing is listed yet: the slave may open these on files the
		// listings replace.
		p.w.suspectHandles(hs)
		p.mnt.unlockTree()
		p.refund(left)
		return nil
	}
}

// walkAll walks the tree, then the pending roots, until nothing is left,
// waits for the replies and emits ResyncEnd.
func (p *pass) walkAll(ctx context.Context) error {
	restarts := 0
	whole := true // the main walk is due (begin started it)
	for {
		var err error
		if whole {
			whole = false
			err = p.walk(ctx, "", nil)
		}
		for err == nil {
			parent, names, ok := p.w.popPending()
			if !ok {
				break
			}
			err = p.walk(ctx, parent, names)
		}
		if err == nil && p.w.needsRestart() {
			err = errRestart
		}
		if errors.Is(err, errRestart) {
			if restarts++; restarts > maxRestarts {
				return fmt.Errorf("%w (%d restarts)", ErrUnstable, restarts-1)
			}
			p.log.Info("mirrorfs: resync: too many paths to walk again; restarting the walk from the root", "restart", restarts)
			p.w.startMain()
			whole = true
			continue
		}
		if err != nil {
			return err
		}
		done, err := p.end(ctx)
		if err != nil || done {
			return err
		}
		// Something was queued meanwhile: walk it.
	}
}

// errRestart ends a walk whose pending roots overflowed.
var errRestart = errors.New("restart the walk")

// quietLocked reports whether no reply is outstanding; p.mu held.
func (p *pass) quietLocked() bool {
	return p.waiting == 0 && p.busy == 0 && len(p.sendq) == 0 && p.hashedOpen == 0
}

// end waits until no reply is outstanding and, if no walk is pending,
// emits ResyncEnd under the exclusive namespace lock. done is false when
// something was queued meanwhile.
func (p *pass) end(ctx context.Context) (done bool, err error) {
	if err := p.waitFor(ctx, p.quietLocked); err != nil {
		return false, err
	}
	if err := p.reserve(ctx, sizeEnd); err != nil {
		return false, err
	}
	p.mnt.lockTree()
	defer p.mnt.unlockTree()
	p.mu.Lock()
	// quiet first: a reply processed before it was counted as busy, and
	// whatever it queued (a verify's re-check) is visible now.
	if !p.quietLocked() || !p.w.idle() {
		p.mu.Unlock()
		p.refund(sizeEnd)
		return false, nil
	}
	p.ended = true
	p.notifyLocked()
	p.mu.Unlock()
	p.emit(&wire.ResyncEnd{Pass: p.o.Pass}, sizeEnd)
	p.mnt.unwatch(p.w)
	return true, nil
}

// progress returns the counters so far.
func (p *pass) progress() wire.PassProgress {
	return wire.PassProgress{
		Dirs: p.dirs.Load(), Files: p.files.Load(), Entries: p.entries.Load(),
		TotalEntries:  p.total.Load(),
		FilesSent:     p.filesSent.Load(),
		BytesSent:     p.bytesSent.Load(),
		BytesCompared: p.bytesCompared.Load(),
		Differences:   p.differs.Load(),
	}
}

// snapshot returns the result so far.
func (p *pass) snapshot() wire.PassResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	return wire.PassResult{PassProgress: p.progress(), Diffs: append([]wire.Difference(nil), p.diffs...), Truncated: p.trunc}
}

// reportProgress calls Progress about once a second until ctx ends.
func (p *pass) reportProgress(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.o.Progress(p.progress())
		}
	}
}
