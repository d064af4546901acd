package main

import (
	"errors"
	"fmt"
	"sync"

	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/quictransport/wire"
	"github.com/tdfs/tdfs/replayer"
)

// handler adapts the replayer and the state file to the transport.
type handler struct {
	r        *replayer.Replayer
	stateDir string

	mu    sync.Mutex
	run   wire.RunID // the run whose ops the replayer's handles belong to
	state replayer.State
}

var _ quictransport.Handler = (*handler)(nil)

func (h *handler) Apply(run wire.RunID, seq uint64, op wire.Op) error {
	h.mu.Lock()
	if run != h.run {
		// Handles are ids of one master run: drop the previous run's.
		h.r.ResetHandles()
		h.run = run
	}
	h.mu.Unlock()
	err := h.r.Apply(op)
	if errors.Is(err, replayer.ErrUnknownHandle) {
		// The file was opened before this process started (a restart in
		// the middle of a run): the writes cannot be placed. Say so,
		// rather than retry forever.
		return fmt.Errorf("%w: %w (this slave restarted while the file was open on the master)", quictransport.ErrNeedsResync, err)
	}
	return err
}

func (h *handler) Sync(run wire.RunID, seq uint64) error {
	if err := h.r.Sync(); err != nil {
		return err
	}
	st := replayer.State{Run: run, Durable: seq}
	if err := replayer.SaveState(h.stateDir, st); err != nil {
		return err
	}
	h.mu.Lock()
	h.state = st
	h.mu.Unlock()
	return nil
}

func (h *handler) State() (wire.RunID, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state.Run, h.state.Durable
}

func (h *handler) durable() uint64 {
	_, d := h.State()
	return d
}
