package replayer

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Handles are the master's ids for files it opened for writing
// (docs/design.md, Handles). The slave keeps the matching file open under the
// same id, so a Write lands in the file the master wrote to whatever happened
// to its name since. The map holds raw fds: they are only used with *at and
// pwrite-style system calls, never as streams.

// handle returns the fd open under h.
func (r *Replayer) handle(h uint64) (int, error) {
	fd, ok := r.handles[h]
	if !ok {
		return -1, fmt.Errorf("%w %d", ErrUnknownHandle, h)
	}
	return fd, nil
}

// keep files fd under h. A handle id still in use belongs to a file the
// master has released (it reuses ids only after release), so the old fd is
// closed first.
func (r *Replayer) keep(h uint64, fd int) {
	delete(r.gone, h)
	if old, ok := r.handles[h]; ok {
		if err := unix.Close(old); err != nil {
			r.log.Warn("replayer: closing a reused handle", "handle", h, "err", err)
		}
	}
	r.handles[h] = fd
}

// release closes the fd open under h.
func (r *Replayer) release(h uint64) error {
	fd, err := r.handle(h)
	if err != nil {
		return err
	}
	delete(r.handles, h)
	if err := unix.Close(fd); err != nil {
		return fmt.Errorf("close handle %d: %w", h, err)
	}
	return nil
}

// closeHandles closes every handle and returns what went wrong.
func (r *Replayer) closeHandles() []error {
	var errs []error
	for h, fd := range r.handles {
		if err := unix.Close(fd); err != nil {
			errs = append(errs, fmt.Errorf("close handle %d: %w", h, err))
		}
	}
	clear(r.handles)
	clear(r.gone)
	r.unlistedGone = false
	return errs
}

// ResetHandles closes every open handle: a new master run starts, and the
// old run's handle ids mean nothing in it.
func (r *Replayer) ResetHandles() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resetHandles()
}

// resetHandles is ResetHandles with mu held.
func (r *Replayer) resetHandles() {
	r.notifyAllReleased()
	for _, err := range r.closeHandles() {
		r.log.Warn("replayer: reset handles", "err", err)
	}
}

// NumHandles reports how many handles are open.
func (r *Replayer) NumHandles() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.handles)
}

// goneHandleOp reports whether op goes through a handle whose file has no
// name (restored as gone, or left out of a rebase's ResyncHandles): then
// it succeeds and changes nothing, and a Release forgets the handle.
//
// That is exactly the master's effect as anyone can see it: the file was
// unlinked on the master while open (on the slave its inode went with the
// process that held it), nothing can ever name it again, and its blocks
// are freed at the last close. Writing its bytes somewhere would only
// cost space.
func (r *Replayer) goneHandleOp(op wire.Op) bool {
	h, ok := viaHandle(op)
	if !ok {
		return false
	}
	if _, gone := r.gone[h]; !gone {
		if _, open := r.handles[h]; open || !r.unlistedGone {
			return false
		}
	}
	if _, release := op.(*wire.Release); release {
		delete(r.gone, h)
		r.notifyReleased(h)
	}
	return true
}

// noteHandle tells Options.OnHandle about the handle op opened or
// released (handles_persist.go).
func (r *Replayer) noteHandle(op wire.Op) {
	if h, ok := opensHandle(op); ok {
		r.notifyOpen(h)
	} else if o, ok := op.(*wire.Release); ok {
		r.notifyReleased(o.Handle)
	}
}

// viaHandle returns the handle op acts through (wire.HandleOp), if any.
// For a CopyRange it is the destination: a nameless source is an error.
func viaHandle(op wire.Op) (uint64, bool) {
	if o, ok := op.(wire.HandleOp); ok {
		return o.ViaHandle()
	}
	return 0, false
}

// opensHandle returns the handle op opens (wire.OpenerOp), if any.
func opensHandle(op wire.Op) (uint64, bool) {
	if o, ok := op.(wire.OpenerOp); ok {
		return o.OpensHandle()
	}
	return 0, false
}
