package slave

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/replayer"
	"github.com/tdfs/tdfs/wire"
)

// legacyDirtyFile is the dirty marker of state files of version 2 (a file
// of its own; now State.Dirty): found at startup, the replica is dirty,
// and the first save of the state removes it.
const legacyDirtyFile = "dirty"

// Replica adapts the replayer and the state dir to the transport: it alone
// knows where the replica stands (package doc).
type Replica struct {
	r        *replayer.Replayer
	stateDir string
	log      *slog.Logger
	prog     *progress
	store    stateStore

	mu      sync.Mutex
	state   State      // as last saved (Dirty included)
	run     wire.RunID // the run of the last RunStart applied
	applied uint64
	// dirty: the replica holds applied ops that are not yet recorded
	// durable. Saved (State.Dirty) before the first such op changes the
	// tree, cleared at the next Sync. Found at startup, it means the
	// slave stopped without syncing. If its host kept running (same boot
	// id), the page cache kept every op it applied, and the progress log
	// says which: the slave resumes after the last one, its open files
	// reopened. After a crash of the host the tree holds an unknown part
	// of those ops: the slave asks for a resync.
	dirty bool
	// legacyDirty: the dirty marker file of a version 2 state dir is
	// there until the first save.
	legacyDirty bool
	resyncing   bool // the tree is of unknown state until a pass ends
	// reapply is the op a dead predecessor, or a failed attempt, may have
	// left half done: it is applied idempotently.
	reapply uint64
	// skipped is the replayer's count of ops tolerant mode skipped, as
	// last seen: one more means the tree left the op stream's prefix.
	skipped uint64
	// verifying: the pass in progress is a Verify pass (its end does not
	// end a resync).
	verifying bool
	// For status and metrics: when the last op was applied, and the ops
	// applied by this process, by type.
	lastOp time.Time
	ops    map[wire.OpType]uint64
	// handles open now (for the progress log's compaction at each sync).
	handles map[uint64]replayer.HandleRecord
	// What Open opened, for Close (nil when made by New).
	suspects *SuspectFile
	// durable is the durable seq reported: the state file's, but the
	// position of a rebase from its ResyncBegin on (ops before it are
	// not wanted any more; resyncing says the tree is of unknown state).
	durable uint64

	// pub is where the replica stands, published at the end of every
	// call that moves it, so that State (the transport's acks, status)
	// never waits for an op being applied.
	pubMu sync.Mutex
	pub   quictransport.SlaveState
}

var _ quictransport.Handler = (*Replica)(nil)

// Open opens the replica dir and its state dir (made if need be): the
// suspect log, a Replayer with options o (its Suspects set here), and
// where the replica stands. Close closes them all.
func Open(dir, stateDir string, o replayer.Options) (*Replica, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	suspects, inos, all, err := OpenSuspects(stateDir)
	if err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	o.Suspects = suspects
	r, err := replayer.New(dir, o)
	if err != nil {
		suspects.Close()
		return nil, err
	}
	r.SetSuspects(inos, all)
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	h, err := New(r, dir, stateDir, log)
	if err != nil {
		r.Close()
		suspects.Close()
		return nil, fmt.Errorf("state dir: %w", err)
	}
	h.suspects = suspects
	return h, nil
}

// New reads the state dir and works out where the replica r stands;
// Close leaves r to the caller.
func New(r *replayer.Replayer, dir, stateDir string, log *slog.Logger) (*Replica, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	st, err := LoadState(stateDir)
	if err != nil {
		return nil, err
	}
	prog, rec, err := openProgress(stateDir)
	if err != nil {
		return nil, err
	}
	h := &Replica{r: r, stateDir: stateDir, log: log, prog: prog, state: st, run: st.Run, applied: st.Durable,
		durable: st.Durable, resyncing: st.Resyncing, handles: map[uint64]replayer.HandleRecord{},
		store: stateStore{dir: stateDir, gen: st.gen}}
	defer h.publishLocked()
	if h.legacyDirty, err = exists(filepath.Join(stateDir, legacyDirtyFile)); err != nil {
		return nil, err
	}
	switch {
	case st.Dirty || h.legacyDirty:
		h.dirty = true
		h.state.Dirty = true
		h.recover(rec)
	case rec.Valid && len(rec.Handles) > 0 && !h.resyncing:
		// A clean stop while the master held files open: the tree is
		// as of the durable point, and those files are still there.
		// Writes through any that cannot be reopened ask for a resync.
		h.reopen(rec)
	}
	r.SetHandleHook(h.onHandle)
	return h, nil
}

// recover resumes after a stop without sync (kill -9, crash).
func (h *Replica) recover(rec progressState) {
	st := h.state
	switch {
	case !rec.Valid || !rec.SameBoot:
		// After a crash of the host, a file may hold its old bytes under
		// its new size and mtime (the kernel wrote the inode, not yet the
		// data): the pass compares the contents of every file.
		h.resyncing = true
		if err := h.r.SuspectAll(); err != nil {
			h.log.Warn("suspect log", "err", err)
		}
		h.log.Warn("this slave's host restarted (or its progress log is gone) after applying ops it had not made "+
			"durable: its tree will be compared with the master's, every file's contents included, and repaired",
			"durable", st.Durable)
		return
	case rec.Applied < st.Durable:
		// Nothing beyond the durable point was recorded: nothing to redo.
		return
	}
	if !h.reopen(rec) {
		h.resyncing = true
		return
	}
	h.applied, h.reapply = rec.Applied, rec.Applied+1
	h.log.Info("resuming after a stop without sync: the progress log says how far the tree got",
		"durable", st.Durable, "applied", rec.Applied)
}

// reopen reopens the files the master held open when this slave
// stopped (their handles are in the progress log). It reports whether it
// could; if not, writes through them cannot be placed.
func (h *Replica) reopen(rec progressState) bool {
	if len(rec.Handles) == 0 {
		return true
	}
	recs := rec.HandleList()
	restored, gone, err := h.r.RestoreHandles(recs)
	if err != nil {
		h.log.Warn("cannot reopen the files the master holds open", "err", err)
		return false
	}
	for _, r := range recs {
		h.handles[r.Handle] = r
	}
	h.log.Info("reopened the files the master holds open", "handles_reopened", restored, "handles_gone", gone)
	return true
}

// onHandle records handle changes in the progress log, so a restart can
// reopen the files the master holds open.
func (h *Replica) onHandle(handle uint64, rec *replayer.HandleRecord) {
	if rec == nil {
		delete(h.handles, handle)
		if err := h.prog.handleReleased(handle); err != nil {
			h.log.Warn("progress log", "err", err)
		}
		return
	}
	h.handles[handle] = *rec
	if err := h.prog.handleOpened(*rec); err != nil {
		h.log.Warn("progress log", "err", err)
	}
}

// exists reports whether p exists.
func exists(p string) (bool, error) {
	switch _, err := os.Lstat(p); {
	case err == nil:
		return true, nil
	case os.IsNotExist(err):
		return false, nil
	default:
		return false, err
	}
}

// markDirty records dirty durably before the tree changes beyond what the
// state says.
func (h *Replica) markDirty() error {
	if h.dirty {
		return nil
	}
	st := h.state
	st.Dirty = true
	if err := h.save(st); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	h.dirty = true
	return nil
}

// save records st durably and makes it the state as last saved.
func (h *Replica) save(st State) error {
	if err := h.store.save(st); err != nil {
		return err
	}
	st.gen = h.store.gen
	h.state = st
	if h.legacyDirty {
		// The state now says whether the replica is dirty.
		if err := os.Remove(filepath.Join(h.stateDir, legacyDirtyFile)); err != nil && !os.IsNotExist(err) {
			return err
		}
		h.legacyDirty = false
	}
	return nil
}

// Apply applies op seq and sorts what fails (replayer.Classify): a
// missing resource is retried in place by the transport (the op again
// through Reapply: it may have been applied in part), a refusal closes the
// connection, and proof that the replica is not what the master believes
// makes this slave ask for a resync at once, recorded durably first.
func (h *Replica) Apply(seq uint64, op wire.Op) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.publishLocked()
	if err := h.markDirty(); err != nil {
		return resourceError(err)
	}
	if rs, ok := op.(*wire.RunStart); ok {
		h.run = rs.Run
		clear(h.handles)
	}
	var err error
	if seq == h.reapply {
		err = h.r.Reapply(op)
	} else {
		err = h.r.Apply(op)
	}
	h.reapply = 0
	switch replayer.Classify(err) {
	case replayer.ClassResource:
		h.reapply = seq
		return resourceError(err)
	case replayer.ClassRefused, replayer.ClassDiverged:
		return h.diverged(seq, err)
	}
	_, unclean := op.(*wire.Unclean)
	if n := h.r.Skipped(); n != h.skipped || unclean {
		// The tree is no longer what ops 1..seq make: an op met a
		// difference and was skipped, or the master's previous run
		// crashed with changes no slave received. Until a pass ends, a
		// restart must not resume as if it were.
		if err := h.markResyncing(); err != nil {
			// Retried: the op again (Reapply, skipped again), then this.
			h.reapply = seq
			return resourceError(fmt.Errorf("state dir: %w", err))
		}
		h.skipped = n
		if unclean {
			h.log.Warn("the master's previous run ended without a clean stop: this replica is compared with its tree, "+
				"and ops that meet a difference until then are left to the comparison", "seq", seq)
		}
	}
	h.applied = seq
	h.lastOp = time.Now()
	if h.ops == nil {
		h.ops = make(map[wire.OpType]uint64)
	}
	h.ops[op.Type()]++
	if err := h.prog.applied(seq); err != nil {
		h.log.Warn("progress log", "err", err)
	}
	return nil
}

// diverged records that the tree is of unknown state and asks for a
// resync: err (of op seq) proves the replica is not what the master
// believes. One log line names the op and the path.
func (h *Replica) diverged(seq uint64, err error) error {
	if serr := h.markResyncing(); serr != nil {
		// Not recorded: a restart resumes, meets the difference again
		// and asks again.
		h.log.Warn("state dir: cannot record that the replica needs a resync", "err", serr)
	}
	if replayer.Classify(err) == replayer.ClassRefused {
		h.log.Warn(fmt.Sprintf("op %d is refused by this slave: %v; what it touches is left out of this replica and "+
			"reported, and the replica is compared with the master's tree", seq, err), "seq", seq)
	} else {
		h.log.Warn(fmt.Sprintf("the replica differs from the master at op %d: %v; it will be compared with the master's "+
			"tree and repaired", seq, err), "seq", seq)
	}
	return fmt.Errorf("%w: op %d: %w", wire.ErrNeedsResync, seq, err)
}

// markResyncing records, durably, that the tree is of unknown state until
// a pass ends: a restart then asks for a resync instead of resuming.
func (h *Replica) markResyncing() error {
	h.resyncing = true
	if h.state.Resyncing {
		return nil
	}
	st := h.state
	st.Resyncing = true
	return h.save(st)
}

// Sync makes every op up to seq durable. A failed sync may have lost
// data the kernel had accepted (pages written back with an error are
// dropped or marked clean): the tree is of unknown state, every file's
// contents suspect, and the slave asks for a resync.
func (h *Replica) Sync(seq uint64) error {
	if err := h.r.Sync(); err != nil {
		h.mu.Lock()
		defer h.mu.Unlock()
		defer h.publishLocked()
		if serr := h.r.SuspectAll(); serr != nil {
			h.log.Warn("suspect log", "err", serr)
		}
		if serr := h.markResyncing(); serr != nil {
			h.log.Warn("state dir: cannot record that the replica needs a resync", "err", serr)
		}
		h.log.Warn("making the replica durable failed: what it held may be lost; it will be compared with the "+
			"master's tree, every file's contents included", "err", err)
		return fmt.Errorf("%w: %w", wire.ErrNeedsResync, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.publishLocked()
	// Everything applied is durable and recorded: not dirty. (Apply runs
	// on the same goroutine as Sync, so no op slipped in between.)
	st := h.state
	st.Run, st.Durable, st.Resyncing, st.Dirty = h.run, seq, h.resyncing, false
	if err := h.save(st); err != nil {
		return err
	}
	h.durable, h.dirty = seq, false
	h.applied = max(h.applied, seq)
	if err := h.prog.reset(seq, h.handleList); err != nil {
		h.log.Warn("progress log", "err", err)
	}
	return nil
}

// handleList returns the handles open now.
func (h *Replica) handleList() []replayer.HandleRecord {
	recs := make([]replayer.HandleRecord, 0, len(h.handles))
	for _, r := range h.handles {
		recs = append(recs, r)
	}
	return recs
}

func (h *Replica) Follow(epoch wire.Epoch, lineage []wire.Epoch) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.publishLocked()
	st := State{Epoch: epoch, Lineage: lineage, Resyncing: true, Dirty: h.dirty}
	if err := h.save(st); err != nil {
		return err
	}
	h.run, h.resyncing, h.reapply, h.durable = wire.RunID{}, true, 0, 0
	return nil
}

// ApplyItem applies a resync item positioned after op at (quictransport.Handler).
func (h *Replica) ApplyItem(at uint64, it wire.ResyncItem, reply func(wire.ResyncReply) error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.publishLocked()
	if b, ok := it.(*wire.ResyncBegin); ok {
		if err := h.beginPass(at, b); err != nil {
			return err
		}
	}
	if err := h.r.ApplyItem(it, reply); err != nil {
		return h.itemFailed(it, err)
	}
	if _, end := it.(*wire.ResyncEnd); end && !h.verifying {
		// The tree equals the master's as of this item; the Sync the
		// transport makes right after records it.
		h.resyncing = false
		h.skipped = h.r.Skipped()
	}
	return nil
}

// beginPass records a pass starting after op at: a repairing pass makes
// the replica dirty, and a rebase restarts its op stream at the pass.
func (h *Replica) beginPass(at uint64, b *wire.ResyncBegin) error {
	h.verifying = b.Verify
	if !b.Verify {
		if err := h.markDirty(); err != nil {
			return err
		}
	}
	if !b.Rebase {
		return nil
	}
	if !h.state.Resyncing {
		// Durable before the tree changes: a crash in the middle of the
		// pass starts a new one.
		st := h.state
		st.Resyncing = true
		if err := h.save(st); err != nil {
			return err
		}
	}
	h.resyncing = true
	h.applied, h.durable, h.reapply, h.run = at, at, 0, b.Run
	return nil
}

// itemFailed is the error of an item the replayer could not apply: a
// protocol violation, a resource the transport waits for, or a pass cut
// short (the next one starts over from a tree of unknown state).
func (h *Replica) itemFailed(it wire.ResyncItem, err error) error {
	if errors.Is(err, replayer.ErrBadResync) {
		return fmt.Errorf("%w: %w", quictransport.ErrProtocol, err)
	}
	if _, data := it.(*wire.ResyncData); data && replayer.Classify(err) == replayer.ClassResource {
		// Bytes at an offset (or a hole): applying them again is
		// harmless, so the transport keeps the item and retries it.
		return resourceError(err)
	}
	if _, ok := it.(*wire.ResyncBegin); !ok && !h.verifying {
		if serr := h.markResyncing(); serr != nil {
			h.log.Warn("state dir: cannot record that the replica needs a resync", "err", serr)
		}
	}
	if replayer.Classify(err) == replayer.ClassRefused {
		// Not the slave's policy (the pass leaves out what that forbids)
		// but its tree's shape, such as a mount beneath the root: the
		// master tries a new pass after a backoff.
		return fmt.Errorf("%w: %w", wire.ErrNeedsResync, err)
	}
	return err
}

// resourceError tells the transport that err, of an op, is the want of a
// resource (disk full, read-only...): it keeps the op and retries it.
func resourceError(err error) error {
	cause := replayer.ResourceCause(err)
	if cause == "" {
		cause = "cannot apply"
	}
	return &wire.ResourceError{Cause: cause, Err: err}
}

// State is where the replica stands, as published by the last call that
// moved it: it does not wait for an op being applied.
func (h *Replica) State() quictransport.SlaveState {
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	return h.pub
}

// publishLocked publishes where the replica stands for State. h.mu is
// held.
func (h *Replica) publishLocked() {
	st := quictransport.SlaveState{Epoch: h.state.Epoch, Lineage: h.state.Lineage, Run: h.run, Applied: h.applied,
		Durable: min(h.durable, h.applied), Resyncing: h.resyncing}
	h.pubMu.Lock()
	h.pub = st
	h.pubMu.Unlock()
}

// activity returns when the last op was applied (zero if none since the
// start) and the ops applied since the start, by type.
func (h *Replica) Activity() (time.Time, map[string]uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ops := make(map[string]uint64, len(h.ops))
	for t, n := range h.ops {
		ops[t.String()] = n
	}
	return h.lastOp, ops
}

func (h *Replica) DurableSeq() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state.Durable
}

// Close closes the progress log and, when Open made them, the replayer
// and the suspect log. It does not sync: the transport's last Sync did.
func (h *Replica) Close() error {
	err := errors.Join(h.prog.close(), h.store.close())
	if h.suspects != nil {
		err = errors.Join(err, h.r.Close(), h.suspects.Close())
	}
	return err
}

// Policy is what this replica holds beyond ordinary entries, announced to
// the master (replayer.Replayer.Policy).
func (h *Replica) Policy() wire.Policy { return h.r.Policy() }
