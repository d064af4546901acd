package mirrorfs

import (
	"context"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// file is the handle of an open backing file.
//
// It holds the *fs.LoopbackFile in a named field instead of embedding it, so
// only the methods forwarded below exist on file. In particular file has no
// PassthroughFd: go-fuse would otherwise register the descriptor for kernel
// passthrough and writes would go around the daemon, never to be mirrored
// (docs/design.md, Implementation traps). Nor has it Ioctl (see node.Ioctl).
type file struct {
	lf     *fs.LoopbackFile
	fd     int // lf's descriptor, valid until Release
	node   *node
	handle uint64 // wire handle id; 0 for a handle opened without write access
}

// newFile wraps lf for n. A handle with write access gets a fresh id.
func (n *node) newFile(lf *fs.LoopbackFile, writable bool) (*file, error) {
	// PassthroughFd is only used here as the accessor of the descriptor
	// LoopbackFile owns; the kernel never sees it (file has no
	// PassthroughFd and CAP_PASSTHROUGH is disabled).
	fd, ok := lf.PassthroughFd()
	if !ok {
		return nil, fmt.Errorf("open backing file has no descriptor: %w", syscall.EBADF)
	}
	f := &file{lf: lf, fd: fd, node: n}
	if writable {
		f.handle = n.m.newHandle()
	}
	n.addFile(f)
	return f, nil
}

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.lf.Read(ctx, buf, off)
}

// Write is pwrite(2) followed by a wire.Write naming the handle.
func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := f.write(data, nil, off)
	return n, fs.ToErrno(err)
}

// Writev must be intercepted as well as Write: the raw bridge calls Writev
// for multi-segment payloads, and a promoted LoopbackFile.Writev would
// bypass the mirror (docs/design.md, Implementation traps).
func (f *file) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	if len(data) == 1 {
		return f.Write(ctx, data[0], off)
	}
	n, err := f.write(nil, data, off)
	return n, fs.ToErrno(err)
}

// write writes data (or iov when data is nil) at off and emits what was
// written, under the inode's write lock so writes to one file are numbered
// in the order they reached it.
func (f *file) write(data []byte, iov [][]byte, off int64) (uint32, error) {
	if f.handle == 0 {
		return 0, fmt.Errorf("write through a handle opened without write access: %w", syscall.EBADF)
	}
	size := len(data)
	for _, s := range iov {
		size += len(s)
	}
	if err := f.node.m.checkEnd("write", f.node, uint64(off), uint64(size)); err != nil {
		return 0, err
	}
	f.node.wmu.Lock()
	defer f.node.wmu.Unlock()
	var n int
	var err error
	if iov == nil {
		n, err = syscall.Pwrite(f.fd, data, off)
	} else {
		n, err = unix.Pwritev(f.fd, iov, off)
	}
	if err != nil {
		// The kernel may have moved the file's mtime before the write
		// failed (file_modified runs first; ENOSPC, EDQUOT, EIO come
		// after): nothing was written, but the slaves must see the
		// mtime the master now has, or their copy would differ until
		// the next op on the file.
		f.node.m.emit(&wire.Setattr{Handle: f.handle, Valid: wire.SetMtime, Mtime: f.node.m.fdMtime(f.fd)})
		return 0, fmt.Errorf("write handle %d at %d: %w", f.handle, off, err)
	}
	if n <= 0 {
		return 0, nil
	}
	if iov != nil {
		data = flatten(iov, n)
	} else {
		data = data[:n]
	}
	mtime := f.node.m.fdMtime(f.fd)
	// MaxWrite is wire.MaxWriteLen, so one op normally carries it all;
	// split anyway rather than emit an op the codec refuses.
	for len(data) > 0 {
		chunk := data[:min(len(data), wire.MaxWriteLen)]
		f.node.m.emit(&wire.Write{Handle: f.handle, Off: off, Data: chunk, Mtime: mtime})
		data = data[len(chunk):]
		off += int64(len(chunk))
	}
	return uint32(n), nil
}

// flatten returns the first n bytes of iov as one slice.
func flatten(iov [][]byte, n int) []byte {
	b := make([]byte, 0, n)
	for _, s := range iov {
		b = append(b, s[:min(len(s), n-len(b))]...)
		if len(b) == n {
			break
		}
	}
	return b
}

// Allocate is fallocate(2) followed by a wire.Fallocate naming the handle.
func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return fs.ToErrno(f.allocate(off, size, mode))
}

func (f *file) allocate(off, size uint64, mode uint32) error {
	if f.handle == 0 {
		return fmt.Errorf("fallocate through a handle opened without write access: %w", syscall.EBADF)
	}
	if err := f.node.m.checkEnd("fallocate", f.node, off, size); err != nil {
		return err
	}
	f.node.wmu.Lock()
	defer f.node.wmu.Unlock()
	if err := syscall.Fallocate(f.fd, mode, int64(off), int64(size)); err != nil {
		return fmt.Errorf("fallocate handle %d mode %#x [%d,+%d): %w", f.handle, mode, off, size, err)
	}
	f.node.m.emit(&wire.Fallocate{
		Handle: f.handle,
		Mode:   mode,
		Off:    int64(off),
		Len:    int64(size),
		Mtime:  f.node.m.fdMtime(f.fd),
	})
	return nil
}

// Release closes the backing descriptor and, for a handle with write
// access, emits wire.Release. It is emitted even when close reports an
// error: on Linux the descriptor is gone either way, and the slave must
// close its side too.
func (f *file) Release(ctx context.Context) syscall.Errno {
	f.node.removeFile(f)
	errno := f.lf.Release(ctx)
	if f.handle != 0 {
		f.node.m.emit(&wire.Release{Handle: f.handle})
	}
	return errno
}

func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Getattr(ctx, out)
}

func (f *file) Statx(ctx context.Context, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return f.lf.Statx(ctx, flags, mask, out)
}

func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.lf.Lseek(ctx, off, whence)
}

func (f *file) Flush(ctx context.Context) syscall.Errno { return f.lf.Flush(ctx) }

// Fsync makes the backing file durable. The wire.Sync and the wait for the
// slaves happen in the raw layer (rawFS.Fsync), which also covers fsync of
// directories.
func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return f.lf.Fsync(ctx, flags)
}

func (f *file) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return f.lf.Getlk(ctx, owner, lk, flags, out)
}

func (f *file) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.lf.Setlk(ctx, owner, lk, flags)
}

func (f *file) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.lf.Setlkw(ctx, owner, lk, flags)
}
