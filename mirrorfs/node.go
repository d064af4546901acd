package mirrorfs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// mirror is the state shared by every node and file of one mount.
type mirror struct {
	backing string // absolute path of the backing directory, for messages
	// rootFd is the backing directory, opened once by Mount (O_PATH):
	// every access to the backing dir is relative to it (backing.go).
	// It is closed once the server has stopped serving (closeRoot);
	// rootMu and rootClosed guard only that, for reopenRoot.
	rootFd     int
	rootMu     sync.RWMutex
	rootClosed bool

	// ns is the namespace lock (doc.go, Sequencing and locks): rawFS
	// takes it around every request, a resync pass around each item
	// (resync_mount.go).
	ns sync.RWMutex

	seq     sequencer
	mode    wire.SyncMode
	log     *slog.Logger
	root    bool          // the daemon runs as root: new nodes are given to the caller
	handles atomic.Uint64 // last handle id handed out; ids start at 1
	run     wire.RunID    // this run of the master (Options.Run)
	gate    policyGate    // what a slave would refuse (policy.go)

	// Resync passes (resync*.go): the inodes open for writing, and the
	// watches of the running passes (nil when none runs, so emit pays one
	// atomic load).
	// The request being served under the exclusive namespace lock (only
	// then may these be touched): openKill is the caller of the OPEN or
	// CREATE when it carries OPEN_KILL_SUIDGID, nil otherwise (rawFS sets
	// it, node.Open and node.create read it);
	// opened is the handle with write access that request opened, which
	// rawFS then files under the bridge's fh (rawFS.files).
	openKill *fuse.Caller
	opened   *file

	writers  writerIndex
	watchMu  sync.Mutex
	watchers atomic.Pointer[[]*watch]
}

// emit numbers op and hands it to the sink (see sequencer.emit), then shows
// it to the running resync passes. A namespace op is emitted under the
// exclusive namespace lock, so a pass sees it between two of its listings.
func (m *mirror) emit(op wire.Op) uint64 {
	seq := m.seq.emit(op)
	if ws := m.watchers.Load(); ws != nil {
		passMount{m}.observe(*ws, op)
	}
	return seq
}

// newHandle returns a fresh handle id for a file opened with write access.
func (m *mirror) newHandle() uint64 { return m.handles.Add(1) }

// node is a loopback node that mirrors what it changes. Every child is a
// node too (WrapChild), so the whole tree mirrors.
type node struct {
	*fs.LoopbackNode // by pointer: LoopbackNode embeds an Inode (no copies)
	m                *mirror

	// wmu serializes writes and fallocates to this inode across the
	// local syscall, the fstat of the new mtime and the numbering, so they
	// are numbered in the order they hit the backing file.
	wmu sync.Mutex

	// fmu guards files: the handles open on this node, used to reach the
	// file of a node that is no longer in the tree (setattr and xattr ops
	// on an unlinked open file arrive without a usable path).
	fmu   sync.Mutex
	files map[*file]struct{}

	// privs caches whether the file has privileges a write must clear
	// (privKnown, privSUID, ... in killpriv.go); written only under the
	// exclusive namespace lock.
	privs atomic.Uint32
	// capRemovedBy is the pid of the last caller that removed this
	// file's capability (chownNoIDs reads and clears it).
	capRemovedBy atomic.Uint32

	// wkey is the backing inode, set when a handle with write access is
	// first opened (writerIndex).
	wkey fileKey
	wid  uint64
}

// WrapChild makes every node created below n (newChild: lookup, create,
// mkdir, mknod, symlink, link) one of ours (fs.NodeWrapChilder: NewInode
// calls it).
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	lb, ok := ops.(*fs.LoopbackNode)
	if !ok {
		// Unreachable: newChild makes only *LoopbackNode. Log loudly
		// if that changes.
		n.m.log.Error("mirrorfs: unexpected child node type, not mirrored", "type", fmt.Sprintf("%T", ops))
		return ops
	}
	return &node{LoopbackNode: lb, m: n.m}
}

// inode returns the go-fuse Inode of n.
func (n *node) inode() *fs.Inode { return n.EmbeddedInode() }

// addFile records an open handle of n.
func (n *node) addFile(f *file) {
	n.fmu.Lock()
	defer n.fmu.Unlock()
	if n.files == nil {
		n.files = make(map[*file]struct{})
	}
	n.files[f] = struct{}{}
	if f.handle != 0 {
		n.m.writers.add(n, f)
	}
}

// removeFile forgets a handle of n; called before its descriptor closes.
func (n *node) removeFile(f *file) {
	n.fmu.Lock()
	defer n.fmu.Unlock()
	delete(n.files, f)
	if f.handle != 0 {
		n.m.writers.remove(n, f)
	}
}

// withAnyFile calls fn with the descriptor of some open handle of n, or
// returns ENOENT when none is open. fmu is held during fn so the
// descriptor cannot be closed under it.
func (n *node) withAnyFile(fn func(fd int) error) error {
	return n.withFile(func(f *file) error { return fn(f.fd) })
}

// withFile is withAnyFile handing over the handle itself, preferring one
// the slaves know (writable, mirrored: f.handle != 0).
func (n *node) withFile(fn func(f *file) error) error {
	n.fmu.Lock()
	defer n.fmu.Unlock()
	var pick *file
	for f := range n.files {
		if pick == nil || f.handle != 0 {
			pick = f
		}
	}
	if pick == nil {
		return fmt.Errorf("node is not in the tree and has no open file: %w", syscall.ENOENT)
	}
	return fn(pick)
}

// writableHandles returns the handles with write access open on n.
func (n *node) writableHandles() []uint64 {
	n.fmu.Lock()
	defer n.fmu.Unlock()
	var hs []uint64
	for f := range n.files {
		if f.handle != 0 {
			hs = append(hs, f.handle)
		}
	}
	return hs
}

// writable reports whether open(2) flags ask for write access.
func writable(flags uint32) bool {
	acc := flags & syscall.O_ACCMODE
	return acc == syscall.O_WRONLY || acc == syscall.O_RDWR
}

// mirroredOpenFlags translates the open(2) flags a slave needs to reproduce
// the open, O_EXCL and O_TRUNC, into the protocol's values (wire.OpenExcl,
// wire.OpenTrunc), whatever this architecture's numbering. The rest
// (access mode, O_DIRECT, O_SYNC, ...) is the local caller's business:
// the slave always opens for writing, and durability on the slave comes
// from Sync ops.
func mirroredOpenFlags(flags uint32) uint32 {
	var w uint32
	if flags&syscall.O_EXCL != 0 {
		w |= wire.OpenExcl
	}
	if flags&syscall.O_TRUNC != 0 {
		w |= wire.OpenTrunc
	}
	return w
}

// Open opens the backing file. With write access the handle gets an id and
// a wire.Open is emitted; read-only opens emit nothing.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	rel, ok := relPath(n.inode())
	if !ok {
		// Reopening an unlinked file (e.g. via /proc/self/fd) has no
		// path to open on the backing dir.
		return nil, 0, syscall.ENOENT
	}
	w := writable(flags)
	if w {
		if err := checkPath(rel); err != nil {
			return nil, 0, fs.ToErrno(err)
		}
	}
	fd, err := n.m.openNode(rel, flags)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	lf := fs.NewLoopbackFileFromOS(os.NewFile(uintptr(fd), rel))
	f, err := n.newFile(lf, w)
	if err != nil {
		lf.Release(ctx)
		return nil, 0, fs.ToErrno(err)
	}
	if f.handle != 0 {
		// With write access, under the exclusive namespace lock: read
		// the privilege state writes rely on, or, for O_TRUNC (only sent
		// with CAP_ATOMIC_O_TRUNC), clear privileges as a truncate must
		// (killpriv.go), before the Open that truncates is numbered.
		if flags&syscall.O_TRUNC != 0 {
			err = n.killPrivs(fdTarget(f.fd), n.m.openKill)
		} else {
			err = n.loadPrivs(fdTarget(f.fd))
		}
		if err != nil {
			// Not announced to the slaves: closed without a Release op.
			n.removeFile(f)
			lf.Release(ctx)
			return nil, 0, fs.ToErrno(fmt.Errorf("open %q: %w", rel, err))
		}
		n.m.opened = f
		n.m.emit(&wire.Open{
			Path:   rel,
			Handle: f.handle,
			Flags:  mirroredOpenFlags(flags),
			Mtime:  n.m.fdMtime(f.fd),
		})
	}
	return f, keepCache, 0
}

// keepCache tells the kernel to keep a file's cached pages across opens:
// only this mount writes the backing dir, and the kernel's page cache sees
// every write made through it (written through: no writeback cache), so
// pages cached by an earlier open are still the file's. A repeated read
// of an unchanged file is then served from the page cache, as on a local
// filesystem. Directories are opened with FOPEN_CACHE_DIR as well: the
// kernel keeps their listing, and drops it when a create, unlink or rename
// through the mount changes it.
const keepCache = fuse.FOPEN_KEEP_CACHE

// openNode opens the backing file rel as go-fuse's loopback does: the
// kernel computes O_APPEND offsets itself and FMODE_EXEC is not an open(2)
// flag, and no symlink is followed, the final component included (ELOOP):
// the kernel resolves symlinks before it opens, and the daemon is root.
func (m *mirror) openNode(rel string, flags uint32) (int, error) {
	a, err := m.resolve(rel)
	if err != nil {
		return -1, err
	}
	defer a.close()
	flags &^= syscall.O_APPEND | fuse.FMODE_EXEC
	how := unix.OpenHow{Flags: uint64(flags) | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS}
	return openat2Retry(a.fd, a.name, &how)
}

// Tmpfile refuses O_TMPFILE: the orphan could never be linked into place
// (Link refuses nodes without a parent), so nothing about it
// could be replicated. Callers fall back to ordinary temporary files.
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

// Ioctl refuses every ioctl that reaches FUSE on files and directories.
// LoopbackFile and the loopback dir stream pass any ioctl to the backing
// descriptor, so FS_IOC_SETFLAGS (chattr), FS_IOC_FSSETXATTR and
// driver-specific ioctls would change the backing dir behind the mirror's
// back.
func (n *node) Ioctl(ctx context.Context, f fs.FileHandle, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	return 0, syscall.ENOTTY
}
