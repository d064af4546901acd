// Package mirrorfs is the master's FUSE side of tdfs: a go-fuse loopback
// filesystem stacked over an ordinary backing directory which, after each
// mutating operation has succeeded there, numbers it (1, 2, 3, ... per
// Server, no gaps) and hands it to a Sink as a wire.Op.
//
// What it does not do: no networking, no queueing, no retries and no
// ordering beyond the numbering. The Sink (the QUIC fan-out) ships the ops
// and bounds every wait. Reads are served from the backing directory and
// never produce an op, but for the fence: reading the virtual xattr
// user.tdfs.synced numbers a Sync and waits until the slaves made it
// durable (synced.go).
//
// # The backing directory
//
// Mount opens the backing directory once and reaches it only relative to
// that descriptor, with *at(2) calls (backing.go), never by a path that
// starts with the backing directory's own: a path of up to PATH_MAX bytes
// below the mount root works however deep the backing directory lies.
// Every node method of go-fuse's LoopbackNode, which works by such paths,
// is replaced by one of node's own.
//
// # Sequencing and locks
//
// The op sequence (docs/design.md, Op sequence) requires that seq(A) < seq(B)
// whenever A's effect was visible to B. An op is therefore numbered after it
// succeeded locally but while the locks that exclude its conflicting ops are
// still held:
//
//   - A namespace RWMutex (mirror.ns), taken in a wrapper around the fuse.RawFileSystem
//     that fs.NewNodeFS returns (raw.go). Ops that change the tree or
//     attributes (create, mkdir, mknod, symlink, link, unlink, rmdir, rename,
//     setattr, setxattr, removexattr, open for writing) hold it exclusively,
//     so go-fuse's own tree update, which runs after the node handler returns
//     (MvChild, RmChild), happens inside the lock and no other op can compute
//     a stale path. Lookups, readdirplus (it looks entries up), getattr,
//     read-only opens, writes, fallocate and release hold it shared (FLUSH
//     is answered ENOSYS once and never sent again: raw.go). A write to a
//     file whose set-id bits or file capability it must clear takes it
//     exclusively (killpriv.go).
//     fsync holds none: a Sync conflicts with nothing, and a slow fsync
//     must not stall every namespace op.
//   - A per-inode mutex held across pwrite (or fallocate), fstat and
//     numbering, so writes to one file are numbered in the order they hit the
//     backing file.
//   - The sequencer's mutex, under which Sink.Append is called: the sink sees
//     ops one at a time in seq order.
//
// Lock order: namespace, then inode, then sequencer. Sink.Wait is called
// only after every lock is released (the kernel still holds its own locks,
// e.g. the parent directory's for a mkdir, until the request is answered).
//
// # Handles
//
// Every open or create with write access gets a new handle id
// (docs/design.md, Handles); writes and fallocate name the handle, not a
// path, so they land where they land on the master even after the open file
// was renamed or unlinked. A node that is no longer in the tree (unlinked
// while open) never produces a path op.
//
// # Runs
//
// Options.Head is the last seq numbered before this mount (seqs continue
// across runs of the master); the first op of a mount is a wire.RunStart
// naming Options.Run, the second the root directory's attributes.
//
// # Resync
//
// Server.RunPass (resync.go) runs one comparison pass against one slave:
// it walks the backing dir and emits positioned items (wire/resync.go)
// into a wire.PassSink while holding the locks that exclude every op that
// conflicts with what the item describes, so each item describes the tree
// exactly as of the last seq numbered; it compares the slave's block
// hashes with its own and sends the blocks that differ. A watch on every
// op numbered during the pass re-lists what a live op may have spoiled on
// a slave whose tree still differs (resync_watch.go, resync_rules.go).
// The pass reaches the mount's nodes only through passMount
// (resync_mount.go): the namespace lock, the write locks of the files open
// for writing (found in the writer index, writers.go), their handles, and
// the registration of its watch; each states where it sits in the lock
// order.
//
// # Privileges
//
// The mount negotiates FUSE_HANDLE_KILLPRIV_V2, so the kernel stops asking
// for security.capability before every write and the mirror clears set-id
// bits and file capabilities on write, truncate and O_TRUNC as the VFS
// would, replicating each change as a Setattr or Removexattr numbered
// before the op that caused it (killpriv.go).
//
// # Counting requests
//
// A RequestCounter wraps the raw filesystem and counts every request by
// opcode (Server.Requests, ProcessRequests); MountBareLoopback mounts a
// plain go-fuse loopback with the same options (BareLoopbackOptions),
// counted the same way, as the baseline of benchmarks.
//
// # Refusals
//
// O_TMPFILE (EOPNOTSUPP), file and directory ioctls (ENOTTY) and
// RENAME_WHITEOUT (EINVAL) are refused: each would change the backing dir
// in a way no op describes. What a slave would leave out of its replica
// (policy.go: set-id files and file capabilities, device nodes, xattr
// namespaces, sizes past its bound) is refused with EPERM or EFBIG, as
// the strictest policy of the master and its slaves says
// (Options.Policy, Server.SetPolicy). copy_file_range
// travels as a wire.CopyRange (copy.go), except while a resync pass runs,
// when the source cannot be named, or when the destination has privileges
// a write must clear: then it answers EOPNOTSUPP, and the kernel falls back
// to plain writes, which are mirrored.
package mirrorfs
