package mirrorfs

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tdfs/tdfs/wire"
)

// entryTimeout is how long the kernel may cache names and attributes.
// Every change to the backing dir goes through this mount, and the kernel
// updates or drops what each request changes (the attributes a reply
// carries, a directory's entries and attributes after a create, unlink or
// rename in it, a file's size and times after a write), so the cache stays
// true however long it is kept: a repeated stat, open or lookup costs no
// round trip to the daemon.
const entryTimeout = time.Hour

// BareLoopbackOptions returns the go-fuse options a mirror of backing is
// mounted with, without anything that replicates: the same capabilities,
// timeouts and limits, no logger, no allow_other, no debug. Mount builds on
// it; MountBareLoopback mounts a plain fs.NewLoopbackRoot with it, the
// ceiling a benchmark compares the mirror with (docs/design.md,
// Performance model: the mount should cost little more than that).
func BareLoopbackOptions(backing string) *fs.Options {
	timeout := entryTimeout
	return &fs.Options{
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
		// The kernel may remember for as long that a name does not
		// exist. Only this mount changes the backing dir, and the kernel
		// replaces its negative dentry itself when a create, mkdir,
		// mknod, symlink, link or rename through the mount makes the
		// name (go-fuse need not notify it).
		NegativeTimeout: &timeout,
		// go-fuse shows mode 0 as 0644 unless told otherwise; with
		// default_permissions the kernel would then let anyone read a
		// file whose mode is 000.
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			// go-fuse enables kernel passthrough by default: READ and WRITE
			// would then bypass the daemon and no write would be mirrored
			// (docs/design.md, Implementation traps). file has no
			// PassthroughFd either. The writeback cache stays off too: it
			// merges and delays writes and sends them on any writable handle
			// with pid 0, after later metadata ops; writes must be numbered
			// at the local pwrite.
			DisabledCapabilities: fuse.CAP_PASSTHROUGH | fuse.CAP_WRITEBACK_CACHE,
			// Without HANDLE_KILLPRIV_V2 the kernel asks
			// GETXATTR(security.capability) before every write; with
			// it the filesystem clears set-id bits and capabilities
			// itself, which the mirror does (killpriv.go). A bare
			// loopback mounted with these options does not: it is a
			// performance baseline only.
			ExtraCapabilities: fuse.CAP_HANDLE_KILLPRIV_V2,
			// The codec bounds a Write's data by wire.MaxWriteLen; one
			// FUSE WRITE then always fits in one op.
			MaxWrite: wire.MaxWriteLen,
			// There may be no fusermount binary; the daemon runs as root.
			DirectMount: true,
			// The kernel checks mode bits and owners: the loopback runs
			// as root and would otherwise let every caller do anything.
			Options: []string{"default_permissions"},
			FsName:  backing,
			Name:    "tdfs",
			// EnableLocks stays off: the kernel keeps POSIX and flock
			// locks itself, which is right as every access goes through
			// this one mount.
		},
	}
}

// MountBareLoopback mounts a plain go-fuse loopback of backing (no
// mirroring) at mountpoint with BareLoopbackOptions, counting its requests.
// It is the baseline of the mirror's benchmarks; allowOther lets other
// users in, as the mirror's --allow-other does; passthrough lets the
// kernel read and write the backing files itself (FUSE passthrough, which
// the mirror cannot use: docs/performance.md), to measure what that would
// gain. Unmount with srv.Unmount.
func MountBareLoopback(backing, mountpoint string, allowOther, passthrough bool) (*fuse.Server, *RequestCounter, error) {
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, nil, fmt.Errorf("mirrorfs: backing: %w", err)
	}
	root, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, nil, fmt.Errorf("mirrorfs: loopback of %q: %w", backing, err)
	}
	opts := BareLoopbackOptions(backing)
	opts.AllowOther = allowOther
	if passthrough {
		opts.DisabledCapabilities &^= fuse.CAP_PASSTHROUGH
	}
	counter := NewRequestCounter(fs.NewNodeFS(root, opts))
	srv, err := fuse.NewServer(counter, mountpoint, &opts.MountOptions)
	if err != nil {
		return nil, nil, fmt.Errorf("mirrorfs: mount %q: %w", mountpoint, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		_ = srv.Unmount()
		return nil, nil, fmt.Errorf("mirrorfs: mount %q: %w", mountpoint, err)
	}
	return srv, counter, nil
}
