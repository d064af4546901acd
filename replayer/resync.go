package replayer

import (
	"errors"
	"fmt"
	"os"

	"github.com/tdfs/tdfs/wire"
)

// Resync passes, slave side (wire/resync.go is the protocol).
//
// The caller hands over each item at its position, between ops, through
// ApplyItem; the replayer applies it to the tree and answers through reply.
// In a repair pass the items make the tree equal to the master's; in a
// Verify pass nothing in the tree changes and the replies only report.
//
// Memory is bounded by the protocol or by the slave's own tree, never by
// what a master claims: a directory being described keeps the slave's
// names in it (sorted) until its Final item; a repair pass keeps one fd
// per file whose contents are being sent (the master bounds how many are
// outstanding) and per hard-link group, at most maxPassFds of them as open
// descriptors (resync_held.go); at most maxPassDirs directories may be
// unfinished at once.

// ErrBadResync is wrapped by the error of a resync item that breaks the
// protocol: no pass or another pass, an unknown FileID, entries out of
// order, data in a Verify pass. The connection that sent it is at fault.
var ErrBadResync = errors.New("replayer: resync item out of protocol")

const (
	// maxPassLinks bounds the hard-link groups whose first file a pass
	// holds (resync_held.go). Beyond it, later links of new groups are
	// reported, not made.
	maxPassLinks = maxPassHeld
	// maxPassDirs bounds the directories described in part at once.
	maxPassDirs = 1024
	// maxPassSplits bounds the inodes a pass remembers splitting.
	maxPassSplits = 1 << 16
)

// resyncPass is the state of the pass in progress.
type resyncPass struct {
	num    uint64
	rebase bool
	verify bool
	full   bool                 // compare every file's contents (Full)
	files  map[uint64]*passFile // FileID -> file whose contents are being sent
	// bound holds, for each inode in files, the FileID it was last bound
	// to: the one whose hashes describe it (see supersede).
	bound     map[[2]uint64]uint64
	links     map[uint64]linkRef  // LinkID -> the group's first file
	fds       int                 // descriptors held in files and links (resync_held.go)
	linksFull bool                // a group was not kept: maxPassLinks reached
	dirs      map[uint64]*passDir // DirID -> directory described in part
	// split holds the inodes whose names the pass split apart (the slave
	// linked them, the master does not): the names left on such an inode
	// hold another file's contents, whatever their size and mtime say.
	split map[[2]uint64]struct{}
}

// passFile is a file whose contents the master is sending: open until its
// ResyncClose.
type passFile struct {
	held heldFile // opened O_RDWR
	path string
	ino  [2]uint64 // device and inode
	// superseded: a later listing bound the same inode to another
	// FileID; this one's data is ignored, and its Close only forgets it.
	superseded bool
}

// linkRef is the first file of a hard-link group: held O_PATH to link
// later names to (not held in a Verify pass), and its identity.
type linkRef struct {
	held     heldFile
	dev, ino uint64
}

// ApplyItem applies one resync item at its position (calls are serialised
// with Apply, in the order the items and ops were numbered) and sends the
// replies it calls for through reply, synchronously: hashing a file
// happens here, and the caller's applier waits. An error from reply is
// returned, wrapped. The error of a bad item wraps ErrBadResync; any other
// error means the slave could not apply the item.
func (r *Replayer) ApplyItem(it wire.ResyncItem, reply func(wire.ResyncReply) error) error {
	if it == nil || reply == nil {
		return fmt.Errorf("resync: nil item or reply: %w", ErrBadResync)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("resync: replayer: %w", os.ErrClosed)
	}
	if err := r.resync(it, reply); err != nil {
		return fmt.Errorf("resync %v: %w", it, err)
	}
	return nil
}

func (r *Replayer) resync(it wire.ResyncItem, reply func(wire.ResyncReply) error) error {
	if b, ok := it.(*wire.ResyncBegin); ok {
		return r.resyncBegin(b)
	}
	p, err := r.passOf(it)
	if err != nil {
		return err
	}
	switch x := it.(type) {
	case *wire.ResyncHandles:
		return r.resyncHandles(p, x)
	case *wire.ResyncDir:
		return r.resyncDir(p, x, reply)
	case *wire.ResyncData:
		return r.resyncData(p, x)
	case *wire.ResyncClose:
		return r.resyncClose(p, x)
	case *wire.ResyncEnd:
		return r.resyncEnd(p)
	}
	return nil
}

// passOf returns the pass in progress, which it (of any type but
// ResyncBegin) must belong to.
func (r *Replayer) passOf(it wire.ResyncItem) (*resyncPass, error) {
	pass := it.InPass()
	p := r.pass
	switch {
	case p == nil:
		return nil, fmt.Errorf("%w: no pass in progress", ErrBadResync)
	case p.num != pass:
		return nil, fmt.Errorf("%w: pass %d in progress", ErrBadResync, p.num)
	}
	return p, nil
}

// resyncEnd ends pass p. After a pass that repaired, the replica is the
// master's tree as of this position: tolerant mode ends, and no file is
// suspect any more.
func (r *Replayer) resyncEnd(p *resyncPass) error {
	verify := p.verify
	r.endPass()
	if verify {
		return nil
	}
	r.tolerant = false
	if err := r.clearSuspects(); err != nil {
		return fmt.Errorf("forget the suspect files: %w", err)
	}
	return nil
}

// resyncBegin starts a pass. A pass still in progress is abandoned (its
// master reconnected and starts over): its fds are closed.
func (r *Replayer) resyncBegin(b *wire.ResyncBegin) error {
	if b.Rebase && b.Verify {
		return fmt.Errorf("%w: a Verify pass cannot rebase", ErrBadResync)
	}
	if r.pass != nil {
		r.log.Info("replayer: resync pass abandoned for a new one", "pass", r.pass.num, "new", b.Pass)
		r.endPass()
	}
	r.pass = &resyncPass{
		num:    b.Pass,
		rebase: b.Rebase,
		verify: b.Verify,
		full:   b.Full,
		files:  make(map[uint64]*passFile),
		bound:  make(map[[2]uint64]uint64),
		links:  make(map[uint64]linkRef),
		dirs:   make(map[uint64]*passDir),
		split:  make(map[[2]uint64]struct{}),
	}
	// A pass that repairs (rebase, check, repair) exists because the tree
	// may differ from the master's: until its ResyncEnd, ops that meet a
	// difference are skipped (resync_tolerant.go), and the pass repairs
	// what they touched at a later position. A Verify pass changes
	// nothing and leaves the mode as it was. With Rebase the handles the
	// slave holds mean nothing: ResyncHandles, right after, lists every
	// handle whose file has a name on the master, and a handle it leaves
	// out belongs to a file with no name, whose writes change nothing
	// (goneHandleOp). A master with no such handle may send none.
	if !b.Verify {
		r.tolerant = true
	}
	if b.Rebase {
		r.resetHandles()
		r.unlistedGone = true
	}
	return nil
}

// resyncHandles opens each listed file under its handle (a rebase's
// ResyncBegin dropped the handles held before).
func (r *Replayer) resyncHandles(p *resyncPass, x *wire.ResyncHandles) error {
	if !p.rebase {
		return fmt.Errorf("%w: handles outside a rebase pass", ErrBadResync)
	}
	if len(x.Handles) > wire.MaxResyncHandles {
		return fmt.Errorf("%w: %d handles in one item", ErrBadResync, len(x.Handles))
	}
	for _, h := range x.Handles {
		if h.Handle == 0 {
			return fmt.Errorf("%w: handle 0 for %q", ErrBadResync, h.Path)
		}
		if err := r.checkNewHandle(h.Handle); err != nil {
			return err
		}
		fd, err := r.forceOpen(h.Path, false)
		if err != nil {
			return fmt.Errorf("open handle %d %q: %w", h.Handle, h.Path, err)
		}
		r.keep(h.Handle, fd)
		r.notifyOpen(h.Handle)
	}
	return nil
}

// endPass drops the pass in progress, if any, closing its fds.
func (r *Replayer) endPass() {
	p := r.pass
	if p == nil {
		return
	}
	r.pass = nil
	for _, f := range p.files {
		p.release(f.held)
	}
	for _, l := range p.links {
		p.release(l.held)
	}
	if len(p.files) > 0 || len(p.dirs) > 0 {
		r.log.Warn("replayer: resync pass ended with work outstanding",
			"pass", p.num, "files", len(p.files), "dirs", len(p.dirs))
	}
}

// diffs collects the differences of one directory, bounded by
// wire.MaxResyncDiffs: the last slot says how many more there were.
type diffs struct {
	list []wire.Difference
	more int
}

func (d *diffs) add(path, format string, args ...any) {
	if len(d.list) >= wire.MaxResyncDiffs-1 {
		d.more++
		return
	}
	d.list = append(d.list, wire.Difference{Path: path, What: fmt.Sprintf(format, args...)})
}

// done returns the list to send, with the count of those left out.
func (d *diffs) done(dirPath string) []wire.Difference {
	if d.more == 0 {
		return d.list
	}
	return append(d.list, wire.Difference{Path: dirPath, What: fmt.Sprintf("and %d more differences", d.more)})
}
