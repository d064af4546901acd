package replayer

import (
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Suspects: files whose contents a resync pass cannot vouch for by size
// and mtime, across passes.
//
// A pass skips the contents of a file whose size and mtime equal the
// master's (the quick check, as rsync's). While the slave's tree is of
// unknown state (tolerant mode, between a rebase ResyncBegin and its
// ResyncEnd), ops go on applying to it, and every op carries the master's
// mtime: an append to a file whose contents the pass had not sent yet (or
// to a stale copy not listed yet) leaves it with the master's size and
// mtime and the wrong bytes. Within one pass the master knows which files
// ops touched (wire.Entry.Compare). When the pass is cut short (either
// process killed, the network cut), that knowledge would be lost, and the
// next pass would pass such files as equal: silently wrong replicas.
//
// So the slave remembers every regular file an op touches while it is
// tolerant, and every file whose contents a pass began to send, until a
// rebase pass ends; a pass compares their contents whatever their size
// and mtime say. The record of a file is taken before the op changes it,
// through Options.Suspects, which keeps it outside the replica so that it
// survives a kill of the slave. Files are known by device and inode: a
// number reused by another file only costs an extra comparison.

// SuspectLog keeps the suspects outside the replica (the slave's state
// dir). Add must be durable against a kill of the process (a write(2)
// suffices) before it returns; an error fails the op about to change the
// file.
type SuspectLog interface {
	Add(ino [2]uint64) error
	// All records that every file is suspect (past maxSuspects).
	All() error
	// Clear forgets every suspect: a rebase pass ended, the replica is
	// the master's tree again.
	Clear() error
}

// maxSuspects bounds the suspects held in memory; past it every file is
// suspect until the next pass ends (its contents are all compared).
const maxSuspects = 1 << 20

// SetSuspects loads the suspects a SuspectLog kept (at startup, before any
// op or item); all says there were more than it keeps (every file is
// suspect).
func (r *Replayer) SetSuspects(inos [][2]uint64, all bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.suspects = make(map[[2]uint64]struct{}, len(inos))
	for _, ino := range inos {
		r.suspects[ino] = struct{}{}
	}
	r.suspectAll = all || len(r.suspects) > maxSuspects
}

// SuspectAll makes every file suspect until the next rebase pass ends,
// and records it (after a crash of the slave's host: any file may hold
// old bytes under a new size and mtime).
func (r *Replayer) SuspectAll() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.suspectLog != nil {
		if err := r.suspectLog.All(); err != nil {
			return err
		}
	}
	r.suspects, r.suspectAll = nil, true
	return nil
}

// Suspects reports how many files are suspect, and whether all are.
func (r *Replayer) Suspects() (n int, all bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.suspects), r.suspectAll
}

// suspect records the file ino as suspect. r.mu is held.
func (r *Replayer) suspect(ino [2]uint64) error {
	if r.suspectAll {
		return nil
	}
	if _, ok := r.suspects[ino]; ok {
		return nil
	}
	if r.suspectLog != nil {
		if err := r.suspectLog.Add(ino); err != nil {
			return err
		}
	}
	if r.suspects == nil {
		r.suspects = make(map[[2]uint64]struct{})
	}
	if len(r.suspects) >= maxSuspects {
		if r.suspectLog != nil {
			if err := r.suspectLog.All(); err != nil {
				return err
			}
		}
		r.suspectAll = true
		r.suspects = nil
		return nil
	}
	r.suspects[ino] = struct{}{}
	return nil
}

// isSuspect reports whether the file of st is suspect. r.mu is held.
func (r *Replayer) isSuspect(st *unix.Stat_t) bool {
	if r.suspectAll {
		return true
	}
	_, ok := r.suspects[[2]uint64{st.Dev, st.Ino}]
	return ok
}

// clearSuspects forgets every suspect: a rebase pass ended. r.mu is held.
func (r *Replayer) clearSuspects() error {
	if len(r.suspects) == 0 && !r.suspectAll {
		return nil
	}
	r.suspects, r.suspectAll = nil, false
	if r.suspectLog != nil {
		return r.suspectLog.Clear()
	}
	return nil
}

// suspectTarget records, before a tolerant op changes it, the regular
// file whose contents or mtime the op changes, if it exists: by the
// handle it acts through, or by the path it opens or sets attributes of.
// r.mu is held.
func (r *Replayer) suspectTarget(op wire.Op) error {
	h, path, ok := changedFile(op)
	if !ok {
		return nil // no op of another type changes a file's contents or mtime
	}
	var st unix.Stat_t
	if h != 0 {
		fd, err := r.handle(h)
		if err != nil || unix.Fstat(fd, &st) != nil {
			return nil // the op fails (tolerated) or changes nothing visible
		}
	} else {
		d, name, err := r.lookup(path, false)
		if err != nil {
			return nil
		}
		err = unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		d.close()
		if err != nil {
			return nil // not there: the op creates it, or fails
		}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	return r.suspect([2]uint64{st.Dev, st.Ino})
}

// changedFile returns the file whose contents or mtime op changes: the
// one it acts through (a Release only closes it), or the one a Create,
// Open or Setattr names by path.
func changedFile(op wire.Op) (h uint64, path string, ok bool) {
	if _, release := op.(*wire.Release); release {
		return 0, "", false
	}
	if h, ok := viaHandle(op); ok {
		return h, "", true
	}
	switch op.(type) {
	case wire.OpenerOp, *wire.Setattr:
		return 0, op.(wire.PathOp).Paths()[0], true
	}
	return 0, "", false
}
