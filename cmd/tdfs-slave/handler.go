package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/quictransport/wire"
	"github.com/tdfs/tdfs/replayer"
)

// dirtyFile, in the state dir, exists while the replica holds applied ops
// that are not yet recorded as durable. Found at startup, it means the
// slave was killed or crashed in between: the tree holds some unknown
// prefix of the ops after the durable seq, and applying them again could
// corrupt it (a rename applied twice moves the wrong file), so the slave
// asks for a resync instead of resuming.
const dirtyFile = "dirty"

// handler adapts the replayer and the state dir to the transport.
type handler struct {
	r        *replayer.Replayer
	stateDir string

	mu       sync.Mutex
	run      wire.RunID // the run whose ops the replayer's handles belong to
	state    replayer.State
	dirty    bool  // dirtyFile exists
	unusable error // why this replica cannot follow any master, or nil
}

var _ quictransport.Handler = (*handler)(nil)

// newHandler reads the state dir and checks that the replica's tree is in
// a known state.
func newHandler(r *replayer.Replayer, dir, stateDir string) (*handler, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	st, err := replayer.LoadState(stateDir)
	if err != nil {
		return nil, err
	}
	h := &handler{r: r, stateDir: stateDir, state: st}
	switch _, err := os.Stat(filepath.Join(stateDir, dirtyFile)); {
	case err == nil:
		h.dirty = true
		h.unusable = fmt.Errorf("this slave stopped without syncing after applying ops beyond seq %d "+
			"(killed or crashed): its tree holds an unknown part of them", st.Durable)
	case !os.IsNotExist(err):
		return nil, err
	}
	if st.Run == (wire.RunID{}) && h.unusable == nil {
		empty, err := isEmpty(dir)
		if err != nil {
			return nil, err
		}
		if !empty {
			h.unusable = fmt.Errorf("%w: it is not empty but has no replication state in %s "+
				"(another --state, or a copy made by hand): the trees may differ", quictransport.ErrUnverified, stateDir)
		}
	}
	return h, nil
}

func (h *handler) Apply(run wire.RunID, seq uint64, op wire.Op) error {
	h.mu.Lock()
	if run != h.run {
		// Handles are ids of one master run: drop the previous run's.
		h.r.ResetHandles()
		h.run = run
	}
	if !h.dirty {
		// Durable before the op can change anything.
		if err := writeDurable(filepath.Join(h.stateDir, dirtyFile), []byte("applied ops not yet durable\n")); err != nil {
			h.mu.Unlock()
			return fmt.Errorf("state dir: %w", err)
		}
		h.dirty = true
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
	defer h.mu.Unlock()
	h.state = st
	if errors.Is(h.unusable, quictransport.ErrUnverified) {
		// A master vouched for this replica and it now records where it
		// stands: from here on it is an ordinary replica.
		h.unusable = nil
	}
	if h.dirty {
		// Everything applied is durable and recorded: nothing to fear
		// from a crash now. (Apply runs on the same goroutine as Sync,
		// so no op slipped in between.)
		if err := os.Remove(filepath.Join(h.stateDir, dirtyFile)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("state dir: %w", err)
		}
		h.dirty = false
	}
	return nil
}

func (h *handler) State() (wire.RunID, uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state.Run, h.state.Durable, h.unusable
}

func (h *handler) durable() uint64 {
	_, d, _ := h.State()
	return d
}

// writeDurable writes a small file and makes it and its name durable.
func writeDurable(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func isEmpty(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if len(names) > 0 {
		return false, nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	return true, nil
}
