package mirrorfs

import (
	"context"
	"errors"
	"strconv"
	"syscall"

	"github.com/tdfs/tdfs/wire"
)

// SyncedXattr is the virtual extended attribute of every path in the
// mount that acts as a replication fence (docs/design.md, The fence):
// reading it blocks until every op numbered before the read is durable on
// every connected slave, and returns the seq it waited for, in decimal
// ASCII, so that
//
//	getfattr -n user.tdfs.synced /mnt/data
//
// in a deploy script knows the slaves have what it wrote. The name is
// answered here: it never reaches the backing dir, is never listed,
// cannot be set or removed (EPERM) and produces no op but the wire.Sync
// that makes the slaves sync at once.
//
// It lives in the user namespace so that any caller may read it; the
// kernel refuses user.* names on symlinks and device nodes without asking
// us (xattr(7)), so read it on a file or a directory (getfattr follows
// symlinks unless -h).
const SyncedXattr = "user.tdfs.synced"

// SyncedSlavesXattr is the same fence, answering "SEQ N": N is how many
// slaves hold the ops up to SEQ durable when it answers (the value of
// SyncedXattr stays the seq alone, as scripts read it).
const SyncedSlavesXattr = "user.tdfs.synced.slaves"

// syncedMaxLen bounds the value: the digits of the largest uint64, a
// space, and those of a slave count.
const syncedMaxLen = 20 + 1 + 20

// isSyncedXattr reports whether name is one of the fence's names.
func isSyncedXattr(name string) bool { return name == SyncedXattr || name == SyncedSlavesXattr }

// SyncedWaiter is what the fence needs of the Sink, found on it by type
// assertion (a Sink without it answers ENOTSUP), so Sinks that need no
// fence keep compiling. It is not Sink.Wait: Wait bounds how long writers
// are held back and gives up on a slow slave; the fence must not report
// success while a connected slave lacks the ops.
//
// (Not named Fencer: "fenced" already means a slave refusing a master's
// epoch.)
type SyncedWaiter interface {
	// WaitSynced returns nil once every connected slave (as the sink
	// defines it) has made ops up to seq durable. It returns an error
	// wrapping ctx's error when ctx ends first (the kernel interrupted the
	// request), and any other error when the slaves did not get there
	// within the sink's bound (--sync-timeout). Called without any mirrorfs
	// lock held.
	WaitSynced(ctx context.Context, seq uint64) error
	// SyncedSlaves counts the slaves that have made ops up to seq
	// durable (SyncedSlavesXattr).
	SyncedSlaves(seq uint64) int
}

// readSynced answers a getxattr of SyncedXattr, or of SyncedSlavesXattr
// (withCount), into dest.
//
// getfattr first probes with an empty buffer for the size, then reads: the
// probe must not block (it would make every fence wait twice), so it
// answers syncedMaxLen, enough for any value. The read numbers a wire.Sync
// (in every sync mode: the slaves sync when they apply it) and waits for
// it. Every op that returned to its caller before the read began was
// numbered before it, so the Sync's seq covers them.
//
// Errors: ETIMEDOUT when the slaves were not durable within the sink's
// bound, EINTR when the caller was interrupted, ENOTSUP when the sink
// offers no fence, ERANGE when dest cannot hold the value.
func (m *mirror) readSynced(ctx context.Context, dest []byte, withCount bool) (uint32, syscall.Errno) {
	w, ok := m.seq.sink.(SyncedWaiter)
	if !ok {
		return 0, syscall.ENOTSUP
	}
	if len(dest) == 0 {
		return syncedMaxLen, 0
	}
	// Like fsync (raw.go), no namespace lock is held: a Sync conflicts
	// with nothing, and a wait of up to --sync-timeout must not stall
	// other requests.
	seq := m.emit(&wire.Sync{})
	if err := w.WaitSynced(ctx, seq); err != nil {
		m.log.Debug("mirrorfs: "+SyncedXattr+" not answered", "seq", seq, "err", err)
		if errors.Is(err, context.Canceled) {
			return 0, syscall.EINTR
		}
		return 0, syscall.ETIMEDOUT
	}
	v := strconv.AppendUint(nil, seq, 10)
	if withCount {
		v = strconv.AppendInt(append(v, ' '), int64(w.SyncedSlaves(seq)), 10)
	}
	if len(v) > len(dest) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}
