package mirrorfs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// copy_file_range(2) on the mount (GNU cp since coreutils 9, cp
// --reflink=auto, many copy tools) copies on the backing dir and emits
// wire.CopyRange: the slaves copy between their own copies of the files,
// and the bytes never cross the network (docs/design.md, Performance model).
//
// The kernel sends FUSE_COPY_FILE_RANGE only between two files of this
// mount (fs/fuse/file.c answers EXDEV itself otherwise), after checking
// flags, access modes, overlap within one file and overflow (vfs
// generic_copy_file_checks); the checks are repeated here rather than
// trusted. Whenever this file cannot describe the copy as an op it answers
// EOPNOTSUPP, on which the kernel copies by splicing through READ and
// WRITE requests instead (fuse_copy_file_range, Linux >= 5.19, falls back
// on EOPNOTSUPP and EXDEV), and those writes are mirrored like any other.
// Never ENOSYS: the kernel would then stop sending COPY_FILE_RANGE for the
// life of the mount.

// maxCopyRequest bounds what one request copies: its reply carries a
// 32-bit count, and the kernel itself asks for at most UINT_MAX & PAGE_MASK.
var maxCopyRequest = uint64(math.MaxUint32) &^ uint64(os.Getpagesize()-1)

// maxCopyTries bounds the EINTR retries of one copy.
const maxCopyTries = 64

// CopyFileRange takes the namespace lock shared, as Write does, so a
// source named by path is named as of the op's number (renames hold it
// exclusively), a resync pass that starts takes its position between two
// copies, and in ModeSync the request waits for the slaves.
func (r *rawFS) CopyFileRange(c <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	var n uint32
	st := r.shared(true, func() (st fuse.Status) {
		n, st = r.RawFileSystem.CopyFileRange(c, in)
		return st
	})
	return n, st
}

// CopyFileRange copies on the backing files and emits one wire.CopyRange
// per chunk copied. n is the source node (go-fuse calls the node of the
// input file); out is reached through fhOut.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	fin, ok := fhIn.(*file)
	if !ok {
		return 0, syscall.EOPNOTSUPP
	}
	fout, ok := fhOut.(*file)
	if !ok {
		return 0, syscall.EOPNOTSUPP
	}
	c, err := n.m.copyRange(fin, int64(offIn), fout, int64(offOut), length, flags)
	if c > 0 {
		// A short copy is a success: the caller asks again for the rest
		// (and gets the error then, if it persists).
		return uint32(c), 0
	}
	errno := fs.ToErrno(err)
	if errno == syscall.ENOSYS || errno == syscall.EXDEV {
		errno = syscall.EOPNOTSUPP
	}
	return 0, errno
}

// errNoCopyOp: the copy cannot travel as an op; the kernel is to copy by
// reading and writing.
var errNoCopyOp = fmt.Errorf("copy does not travel as an op: %w", syscall.EOPNOTSUPP)

// copyReq is one copy_file_range being served: count bytes at offIn of
// fin to offOut of fout, the source named to the slaves by srcHandle or
// srcPath; ost is the destination's state before the copy.
type copyReq struct {
	fin, fout     *file
	offIn, offOut int64
	count         int64
	srcHandle     uint64
	srcPath       string
	ost           syscall.Stat_t
}

// copyRange copies up to length bytes at offIn of fin to offOut of fout
// and returns how many it copied.
func (m *mirror) copyRange(fin *file, offIn int64, fout *file, offOut int64, length, flags uint64) (int64, error) {
	length, err := m.checkCopy(fin, offIn, fout, offOut, length, flags)
	if err != nil {
		return 0, err
	}
	unlock := lockWritePair(fin.node, fout.node)
	defer unlock()
	c := &copyReq{fin: fin, fout: fout, offIn: offIn, offOut: offOut}
	if err := m.planCopy(c, length); err != nil || c.count == 0 {
		return 0, err
	}
	return m.copyChunks(c)
}

// checkCopy repeats the kernel's checks of the request's arguments and
// returns the length one request copies at most.
func (m *mirror) checkCopy(fin *file, offIn int64, fout *file, offOut int64, length, flags uint64) (uint64, error) {
	if flags != 0 {
		return 0, fmt.Errorf("copy_file_range flags %#x: %w", flags, syscall.EINVAL)
	}
	if fout.handle == 0 {
		return 0, fmt.Errorf("copy into a handle opened without write access: %w", syscall.EBADF)
	}
	if offIn < 0 || offOut < 0 {
		return 0, fmt.Errorf("copy_file_range offsets %d, %d: %w", uint64(offIn), uint64(offOut), syscall.EINVAL)
	}
	length = min(length, maxCopyRequest)
	if uint64(offIn) > math.MaxInt64-length || uint64(offOut) > math.MaxInt64-length {
		return 0, fmt.Errorf("copy_file_range of %d bytes at %d to %d: %w", length, offIn, offOut, syscall.EOVERFLOW)
	}
	if err := m.checkEnd("copy_file_range", fout.node, uint64(offOut), length); err != nil {
		return 0, err
	}
	return length, nil
}

// planCopy decides, under both files' write locks, whether the copy can
// travel as an op (errNoCopyOp if not), how the slaves name its source,
// and how many bytes there are to copy (c.count, 0 at or past the end of
// the source).
func (m *mirror) planCopy(c *copyReq, length uint64) error {
	if m.watchers.Load() != nil {
		// A resync pass is running: a slave's source may still differ
		// from the master's, and a copy on the slave would spread the
		// difference to a destination the pass may have compared
		// already. Bytes are right whatever the slave holds. (Passes
		// start under the exclusive namespace lock, which this request
		// excludes: none starts before the copy is numbered.)
		return errNoCopyOp
	}
	var err error
	c.srcHandle, c.srcPath, err = copySource(c.fin.node)
	if err != nil {
		return err
	}
	ist, err := fstat(c.fin.fd)
	if err != nil {
		return fmt.Errorf("fstat copy source: %w", err)
	}
	if ist.Mode&unix.S_IRUSR == 0 {
		// A slave not running as root owns its files and reads its
		// source as the owner: it could not read this one.
		return errNoCopyOp
	}
	if c.ost, err = fstat(c.fout.fd); err != nil {
		return fmt.Errorf("fstat copy destination: %w", err)
	}
	if c.ost.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 || hasCapability(c.fout.fd) {
		// Writing into such a file clears its privileges (the kernel's
		// file_remove_privs), which the backing copy, made by a daemon
		// with CAP_FSETID, would not: let the kernel fall back to
		// WRITE requests, which clear and mirror them like any write.
		return errNoCopyOp
	}
	if c.offIn >= ist.Size {
		return nil
	}
	c.count = min(int64(length), ist.Size-c.offIn)
	if ist.Dev == c.ost.Dev && ist.Ino == c.ost.Ino && c.offOut < c.offIn+c.count && c.offIn < c.offOut+c.count {
		return fmt.Errorf("copy_file_range of overlapping ranges within one file: %w", syscall.EINVAL)
	}
	return nil
}

// copyChunks copies c on the backing files, emitting one wire.CopyRange
// per chunk copied, and returns how many bytes it copied; an error only
// when it copied none.
func (m *mirror) copyChunks(c *copyReq) (int64, error) {
	var done int64
	for tries := 0; done < c.count; {
		in, out := c.offIn+done, c.offOut+done
		n, err := unix.CopyFileRange(c.fin.fd, &in, c.fout.fd, &out, int(min(c.count-done, wire.MaxCopyLen)), 0)
		if errors.Is(err, syscall.EINTR) && tries < maxCopyTries {
			tries++
			continue
		}
		if err != nil {
			if done == 0 {
				return 0, m.copyFailed(c, err)
			}
			break
		}
		if n <= 0 {
			break // the source ended early; what was copied stands
		}
		m.emit(&wire.CopyRange{
			SrcHandle: c.srcHandle,
			SrcPath:   c.srcPath,
			SrcOff:    c.offIn + done,
			Handle:    c.fout.handle,
			Off:       c.offOut + done,
			Len:       int64(n),
			Mtime:     m.fdMtime(c.fout.fd),
		})
		done += int64(n)
	}
	return done, nil
}

// copyFailed returns the error of a copy that copied nothing. As for a
// failed write (file.write): the backing filesystem may have moved the
// destination's mtime before failing, and the slaves are told.
func (m *mirror) copyFailed(c *copyReq, err error) error {
	if mt := m.fdMtime(c.fout.fd); mt != wireTime(c.ost.Mtim) {
		m.emit(&wire.Setattr{Handle: c.fout.handle, Valid: wire.SetMtime, Mtime: mt})
	}
	return fmt.Errorf("copy_file_range handle %d [%d,+%d) to handle %d at %d: %w",
		c.fin.handle, c.offIn, c.count, c.fout.handle, c.offOut, err)
}

// copySource names the source of a copy as the slaves can find it: by its
// path, or when it has none (unlinked while open) by a handle with write
// access of it, which the slaves hold open. The namespace lock is held.
func copySource(n *node) (handle uint64, path string, err error) {
	if rel, ok := relPath(n.inode()); ok && rel != "" && checkPath(rel) == nil {
		return 0, rel, nil
	}
	if hs := n.writableHandles(); len(hs) > 0 {
		return hs[0], "", nil
	}
	return 0, "", errNoCopyOp
}

// hasCapability reports whether the file open as fd has file capabilities
// (security.capability), which a write clears like a setuid bit. It errs
// towards yes: a copy that falls back to writes costs only bytes.
func hasCapability(fd int) bool {
	_, err := unix.Fgetxattr(fd, "security.capability", nil)
	return err == nil || !(errors.Is(err, unix.ENODATA) || errors.Is(err, unix.EOPNOTSUPP))
}

// lockWritePair locks the write mutexes of a and b (once if they are the
// same node) in a fixed order: by writer id, as resync passes lock them
// (resync_mount.go, holdWriters), then by inode number, so two copies in
// opposite directions, or a copy and a pass, cannot deadlock. A node
// with writer id 0 has never had a writable handle and no pass locks it.
func lockWritePair(a, b *node) func() {
	if a == b {
		a.wmu.Lock()
		return a.wmu.Unlock
	}
	if c := cmp.Or(cmp.Compare(a.wid, b.wid), cmp.Compare(a.inode().StableAttr().Ino, b.inode().StableAttr().Ino)); c > 0 {
		a, b = b, a
	}
	a.wmu.Lock()
	b.wmu.Lock()
	return func() {
		b.wmu.Unlock()
		a.wmu.Unlock()
	}
}
