package mirrorfs

import (
	"cmp"
	"slices"

	"github.com/tdfs/tdfs/wire"
)

// passMount is the mount as a resync pass sees it: the locks that position
// an item, the handles open for writing, and the registration that shows
// the pass every live op. The resync_* files reach the mount's nodes only
// through it (the backing dir they read directly, like every node method:
// backing.go).
//
// Lock order, for the mount and the passes alike: the namespace lock, then
// the write locks of the nodes (a node's wmu, in the writer index's order),
// then their handle locks (fmu), then the writer index's own mutex; a
// pass's own mutexes (pass.mu, watch.mu) come after all of these (doc.go,
// Sequencing and locks, has the rest). No operation below is called with a
// pass's mutex held.
type passMount struct{ m *mirror }

// lockTree takes the namespace lock exclusively: every request that takes
// it (all but fsync and the synced fence: doc.go) waits until unlockTree.
// Nothing else of the mount may be held.
func (mt passMount) lockTree() { mt.m.ns.Lock() }

// unlockTree releases lockTree.
func (mt passMount) unlockTree() { mt.m.ns.Unlock() }

// rlockTree takes the namespace lock shared: no namespace op, setattr,
// xattr op or writable open runs until runlockTree; reads, writes,
// fallocates and releases do. Nothing else of the mount may be held.
func (mt passMount) rlockTree() { mt.m.ns.RLock() }

// runlockTree releases rlockTree.
func (mt passMount) runlockTree() { mt.m.ns.RUnlock() }

// lockWriters takes the write locks of every node that can write to the
// inode k, which excludes every write, fallocate and truncate of it (the
// writer index says why that is every one). The caller holds the tree lock
// (shared at least); the returned func unlocks.
func (mt passMount) lockWriters(k fileKey) (unlock func()) {
	ns := mt.m.writers.lookup(k)
	for _, n := range ns {
		n.wmu.Lock()
	}
	return func() {
		for i := len(ns) - 1; i >= 0; i-- {
			ns[i].wmu.Unlock()
		}
	}
}

// holdWriters takes the write locks and then the handle locks of every
// node that can write to one of keys, each node once and in the writer
// index's order (two passes lock them alike): nothing writes to these
// inodes, and no handle of theirs is released, until unlock. The caller
// holds the tree lock shared (so no writable handle opens meanwhile).
func (mt passMount) holdWriters(keys []fileKey) heldWriters {
	var nodes []*node
	for _, k := range keys {
		nodes = append(nodes, mt.m.writers.lookup(k)...)
	}
	slices.SortFunc(nodes, func(a, b *node) int { return cmp.Compare(a.wid, b.wid) })
	nodes = slices.Compact(nodes)
	for _, n := range nodes {
		n.wmu.Lock()
		n.fmu.Lock()
	}
	return heldWriters{m: mt.m, nodes: nodes}
}

// heldWriters are the nodes holdWriters locked.
type heldWriters struct {
	m     *mirror
	nodes []*node
}

// handlesOf lists the handles open for writing on the inode k, one of the
// keys held, in no particular order.
func (h heldWriters) handlesOf(k fileKey) []uint64 {
	var hs []uint64
	for _, n := range h.m.writers.lookup(k) {
		for f := range n.files {
			if f.handle != 0 {
				hs = append(hs, f.handle)
			}
		}
	}
	return hs
}

// unlock releases what holdWriters took, in reverse.
func (h heldWriters) unlock() {
	for i := len(h.nodes) - 1; i >= 0; i-- {
		h.nodes[i].fmu.Unlock()
		h.nodes[i].wmu.Unlock()
	}
}

// written reports whether a handle with write access is open on the
// inode k. Under the tree lock (shared at least) the answer holds until
// it is released, but for a handle being released.
func (mt passMount) written(k fileKey) bool {
	return len(mt.m.writers.lookup(k)) > 0
}

// handlesOf lists the handles open for writing on the inode k, sorted.
// Takes the handle locks one node at a time: the caller holds no node's.
func (mt passMount) handlesOf(k fileKey) []uint64 {
	var hs []uint64
	for _, n := range mt.m.writers.lookup(k) {
		hs = append(hs, n.writableHandles()...)
	}
	slices.Sort(hs)
	return hs
}

// openHandles lists every handle open for writing whose file still has a
// path in the tree, with that path, sorted by handle. The caller holds
// the tree lock exclusively, so no handle opens or closes meanwhile.
func (mt passMount) openHandles() []wire.HandleRef {
	var refs []wire.HandleRef
	for _, n := range mt.m.writers.all() {
		rel, ok := relPath(n.inode())
		if !ok || checkPath(rel) != nil {
			continue
		}
		for _, h := range n.writableHandles() {
			refs = append(refs, wire.HandleRef{Handle: h, Path: rel})
		}
	}
	slices.SortFunc(refs, func(a, b wire.HandleRef) int { return cmp.Compare(a.Handle, b.Handle) })
	return refs
}

// writtenFiles counts the nodes with a handle open for writing, without
// any lock: a guess, for sizing a reservation.
func (mt passMount) writtenFiles() int { return len(mt.m.writers.all()) }

// fileOf returns the inode open under the writable handle h. Called as a
// live op is observed (under the lock that numbers it).
func (mt passMount) fileOf(h uint64) (fileKey, bool) { return mt.m.writers.keyOf(h) }

// watch shows w every op numbered from now on (observe); unwatch stops
// it. The caller holds the tree lock exclusively, so the set of watches
// changes between two namespace ops.
func (mt passMount) watch(w *watch) {
	m := mt.m
	m.watchMu.Lock()
	defer m.watchMu.Unlock()
	var ws []*watch
	if old := m.watchers.Load(); old != nil {
		ws = slices.Clone(*old)
	}
	ws = append(ws, w)
	m.watchers.Store(&ws)
}

// unwatch undoes watch; see there.
func (mt passMount) unwatch(w *watch) {
	m := mt.m
	m.watchMu.Lock()
	defer m.watchMu.Unlock()
	old := m.watchers.Load()
	if old == nil {
		return
	}
	ws := slices.DeleteFunc(slices.Clone(*old), func(x *watch) bool { return x == w })
	if len(ws) == 0 {
		m.watchers.Store(nil)
		return
	}
	m.watchers.Store(&ws)
}
