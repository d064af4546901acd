package mirrorfs

import (
	"cmp"
	"slices"
	"sync"
)

// fileKey names a backing inode.
type fileKey struct{ dev, ino uint64 }

// writerIndex maps the backing inodes that have a handle with write access
// open to their nodes. A resync pass reads a file's blocks holding the
// namespace lock shared and the node's wmu, which excludes every write,
// fallocate and truncate of it: writes need a writable handle, opening one
// takes the namespace lock exclusively, so whatever can write to an inode
// while the pass holds the lock shared is already in the index.
//
// There is normally one node per inode (go-fuse shares the Inode of hard
// links); the index does not rely on it.
//
// Lock order: a node's fmu, then mu (addFile and removeFile hold fmu).
type writerIndex struct {
	mu      sync.Mutex
	nodes   map[fileKey]map[*node]int // open writable handles per node
	handles map[uint64]fileKey        // the file of each writable handle
	ids     uint64                    // orders nodes for locking
}

// add records the writable handle f of n.
func (x *writerIndex) add(n *node, f *file) {
	st, err := fstat(f.fd)
	if err != nil {
		// The descriptor was opened a moment ago; fstat does not fail on
		// it. Should it, a pass could read this file while it is written.
		n.m.log.Error("mirrorfs: cannot index a file open for writing; a resync pass may not see its writes", "err", err)
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.nodes == nil {
		x.nodes = make(map[fileKey]map[*node]int)
		x.handles = make(map[uint64]fileKey)
	}
	k := fileKey{dev: st.Dev, ino: st.Ino}
	x.handles[f.handle] = k
	if n.wid == 0 {
		x.ids++
		n.wid = x.ids
	}
	n.wkey = k
	byNode := x.nodes[k]
	if byNode == nil {
		byNode = make(map[*node]int)
		x.nodes[k] = byNode
	}
	byNode[n]++
}

// remove forgets the writable handle f of n.
func (x *writerIndex) remove(n *node, f *file) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.handles, f.handle)
	byNode := x.nodes[n.wkey]
	if byNode == nil || byNode[n] == 0 {
		return
	}
	if byNode[n]--; byNode[n] == 0 {
		delete(byNode, n)
		if len(byNode) == 0 {
			delete(x.nodes, n.wkey)
		}
	}
}

// keyOf returns the file open under the writable handle h.
func (x *writerIndex) keyOf(h uint64) (fileKey, bool) {
	if h == 0 {
		return fileKey{}, false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	k, ok := x.handles[h]
	return k, ok
}

// lookup returns the nodes of k, in a fixed order (two passes lock them in
// the same order).
func (x *writerIndex) lookup(k fileKey) []*node {
	x.mu.Lock()
	defer x.mu.Unlock()
	byNode := x.nodes[k]
	if len(byNode) == 0 {
		return nil
	}
	ns := make([]*node, 0, len(byNode))
	for n := range byNode {
		ns = append(ns, n)
	}
	slices.SortFunc(ns, func(a, b *node) int { return cmp.Compare(a.wid, b.wid) })
	return ns
}

// all returns every indexed node.
func (x *writerIndex) all() []*node {
	x.mu.Lock()
	defer x.mu.Unlock()
	var ns []*node
	for _, byNode := range x.nodes {
		for n := range byNode {
			ns = append(ns, n)
		}
	}
	return ns
}
