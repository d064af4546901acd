package mirrorfs

import (
	"sync"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tdfs/tdfs/wire"
)

// rawFS wraps the fuse.RawFileSystem that fs.NewNodeFS returns, to hold the
// namespace lock across a whole request. go-fuse updates its tree (MvChild,
// ExchangeChild, RmChild, adding children) after the node handler returns,
// outside any lock the handler could hold (docs/design.md, Implementation
// traps); taking the lock here keeps "apply locally, update the tree, number
// the op" atomic with respect to every op that computes a path. Methods not
// listed below go straight to the bridge (embedding).
//
// After a mutating request has released the lock, rawFS waits for the
// slaves when the sync mode asks for it (Sink.Wait bounds the wait).
// FUSE interrupts are not honoured for that wait: the op has already been
// applied, and answering EINTR would tell the application it was not.
type rawFS struct {
	fuse.RawFileSystem
	m *mirror // its ns is the namespace lock

	// files maps the bridge's fh of every handle with write access to
	// our file, so a WRITE can see the inode's privilege state before
	// it reaches the node (killpriv.go). Entries are added by Open and
	// Create under the exclusive lock and dropped by Release under the
	// shared one; the bridge reuses an fh only for a later open, which
	// Release's shared lock keeps out until the entry is gone.
	files sync.Map // uint64 -> *file
}

// opening runs an OPEN or CREATE (under the exclusive lock) with the
// request's OPEN_KILL_SUIDGID visible to the node, and files the handle
// with write access it opened under fh().
func (r *rawFS) opening(openFlags uint32, caller *fuse.Caller, op func() fuse.Status, fh func() uint64) fuse.Status {
	r.m.openKill = nil
	if openFlags&fuse.OPEN_KILL_SUIDGID != 0 {
		r.m.openKill = caller
	}
	r.m.opened = nil
	st := op()
	if f := r.m.opened; st.Ok() && f != nil {
		r.files.Store(fh(), f)
	}
	r.m.openKill, r.m.opened = nil, nil
	return st
}

// write runs a WRITE. It holds the shared lock unless the inode's cached
// privilege state says the write may have privileges to clear (killpriv.go):
// then it retakes the lock exclusively, clears them (numbering their
// Setattr or Removexattr before the Write) and writes.
func (r *rawFS) write(in *fuse.WriteIn, op func() fuse.Status) fuse.Status {
	var kill *fuse.Caller
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		kill = &in.Caller
	}
	var f *file
	if v, ok := r.files.Load(in.Fh); ok {
		f = v.(*file)
	}
	st, done := func() (fuse.Status, bool) {
		r.m.ns.RLock()
		defer r.m.ns.RUnlock()
		if f != nil && f.node.mayKill(kill) {
			return fuse.OK, false
		}
		return op(), true
	}()
	if !done {
		st = func() fuse.Status {
			r.m.ns.Lock()
			defer r.m.ns.Unlock()
			if f.node.mayKill(kill) {
				if err := f.node.killPrivs(fdTarget(f.fd), kill); err != nil {
					r.m.log.Warn("mirrorfs: write: cannot clear privileges", "handle", f.handle, "err", err)
					return fuse.ToStatus(fs.ToErrno(err))
				}
			}
			return op()
		}()
	}
	if st.Ok() && r.m.mode == wire.ModeSync {
		st = r.wait()
	}
	return st
}

// exclusive runs a namespace-changing request under the exclusive lock,
// then waits for the slaves in ModeSync.
func (r *rawFS) exclusive(op func() fuse.Status) fuse.Status {
	st := func() fuse.Status {
		r.m.ns.Lock()
		defer r.m.ns.Unlock()
		return op()
	}()
	if st.Ok() && r.m.mode == wire.ModeSync {
		st = r.wait()
	}
	return st
}

// shared runs a request under the shared lock; mutating requests then wait
// in ModeSync.
func (r *rawFS) shared(mutating bool, op func() fuse.Status) fuse.Status {
	st := func() fuse.Status {
		r.m.ns.RLock()
		defer r.m.ns.RUnlock()
		return op()
	}()
	if mutating && st.Ok() && r.m.mode == wire.ModeSync {
		st = r.wait()
	}
	return st
}

// wait waits for the last seq assigned so far. A later seq than the
// request's own is conservative: the sink returns once that one is
// durable, which covers ours. EIO when the sink says the durability asked
// for was not reached (the op itself is done, here and on the slaves that
// follow: the application learns it is not as durable as required).
func (r *rawFS) wait() fuse.Status {
	if seq := r.m.seq.lastSeq(); seq != 0 {
		return r.waitFor(seq)
	}
	return fuse.OK
}

// waitFor waits for seq; see wait.
func (r *rawFS) waitFor(seq uint64) fuse.Status {
	if err := r.m.seq.sink.Wait(seq); err != nil {
		return fuse.EIO
	}
	return fuse.OK
}

func (r *rawFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return r.exclusive(func() fuse.Status {
		return r.opening(in.OpenFlags, &in.Caller, func() fuse.Status { return r.RawFileSystem.Create(c, in, name, out) },
			func() uint64 { return out.Fh })
	})
}

func (r *rawFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return r.exclusive(func() fuse.Status { return r.RawFileSystem.Mkdir(c, in, name, out) })
}

func (r *rawFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return r.exclusive(func() fuse.Status { return r.RawFileSystem.Mknod(c, in, name, out) })
}

func (r *rawFS) Symlink(c <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return r.exclusive(func() fuse.Status { return r.RawFileSystem.Symlink(c, h, target, name, out) })
}

func (r *rawFS) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return r.exclusive(func() fuse.Status { return r.RawFileSystem.Link(c, in, name, out) })
}

func (r *rawFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return r.exclusive(func() fuse.Status { return r.RawFileSystem.Unlink(c, h, name) })
}

func (r *rawFS) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return r.exclusive(func() fuse.Status { return r.RawFileSystem.Rmdir(c, h, name) })
}

func (r *rawFS) Rename(c <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	return r.exclusive(func() fuse.Status { return r.RawFileSystem.Rename(c, in, oldName, newName) })
}

func (r *rawFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	return r.exclusive(func() fuse.Status { return r.RawFileSystem.SetAttr(c, in, out) })
}

func (r *rawFS) SetXAttr(c <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	return r.exclusive(func() fuse.Status { return r.RawFileSystem.SetXAttr(c, in, attr, data) })
}

func (r *rawFS) RemoveXAttr(c <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	return r.exclusive(func() fuse.Status { return r.RawFileSystem.RemoveXAttr(c, h, attr) })
}

// Open takes the lock exclusively for write access, which emits a path op
// (wire.Open), and shared otherwise.
func (r *rawFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	op := func() fuse.Status { return r.RawFileSystem.Open(c, in, out) }
	if writable(in.Flags) {
		// OpenIn.Mode holds the OPEN_* flags.
		return r.exclusive(func() fuse.Status { return r.opening(in.Mode, &in.Caller, op, func() uint64 { return out.Fh }) })
	}
	return r.shared(false, op)
}

func (r *rawFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	return r.shared(false, func() fuse.Status { return r.RawFileSystem.Lookup(c, h, name, out) })
}

// ReadDirPlus looks entries up and adds them to the tree like Lookup.
func (r *rawFS) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.shared(false, func() fuse.Status { return r.RawFileSystem.ReadDirPlus(c, in, out) })
}

func (r *rawFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	return r.shared(false, func() fuse.Status { return r.RawFileSystem.GetAttr(c, in, out) })
}

// Write is the raw entry of every WRITE (fuse/opcode.go doWrite calls
// Writev first), but both are wrapped in case that changes.
func (r *rawFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	var n uint32
	st := r.write(in, func() (st fuse.Status) {
		n, st = r.RawFileSystem.Write(c, in, data)
		return st
	})
	return n, st
}

func (r *rawFS) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	var n uint32
	st := r.write(in, func() (st fuse.Status) {
		n, st = r.RawFileSystem.Writev(c, in, data)
		return st
	})
	return n, st
}

func (r *rawFS) Fallocate(c <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	return r.shared(true, func() fuse.Status { return r.RawFileSystem.Fallocate(c, in) })
}

// Flush answers ENOSYS, and the kernel then never sends FLUSH again on
// this mount (fs/fuse/file.c fuse_flush sets fc->no_flush): one round trip
// less per close(2). Nothing is lost. Writes are synchronous (no writeback
// cache), so their errors reached write(2) already, and the kernel still
// writes dirty mmap pages out at close before it looks at no_flush. The
// loopback's Flush only closes a dup of the backing descriptor, which
// would release POSIX locks the daemon never takes (EnableLocks is off:
// the kernel keeps locks itself).
func (r *rawFS) Flush(c <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return fuse.ENOSYS
}

// Release emits wire.Release for handles with write access; only those
// wait in ModeSync.
func (r *rawFS) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	r.shared(writable(in.Flags), func() fuse.Status {
		r.RawFileSystem.Release(c, in)
		r.files.Delete(in.Fh)
		return fuse.OK
	})
}

// Fsync makes the file durable locally, emits wire.Sync and, except in
// ModeAsync, waits until the slaves have made every op so far durable.
//
// It holds no namespace lock: a Sync conflicts with nothing, and its
// number only has to follow the ops the fsync covers, which were numbered
// before they returned to the application. Holding even the shared lock
// across a slow fsync would stall every namespace op behind it.
func (r *rawFS) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return r.sync(r.RawFileSystem.Fsync(c, in))
}

// FsyncDir is Fsync for directories: applications fsync a directory to
// make a rename or create durable.
func (r *rawFS) FsyncDir(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return r.sync(r.RawFileSystem.FsyncDir(c, in))
}

func (r *rawFS) sync(st fuse.Status) fuse.Status {
	if !st.Ok() {
		return st
	}
	// Emitted in async mode too: it is cheap and the slave coalesces.
	seq := r.m.emit(&wire.Sync{})
	if r.m.mode != wire.ModeAsync {
		return r.waitFor(seq)
	}
	return st
}
