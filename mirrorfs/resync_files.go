package mirrorfs

import (
	"bytes"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// The files of a pass: how it keeps hold of a listed file, and reads its
// blocks under the locks that exclude every change to them.

// fileIdent keeps hold of a listed file for the rest of the pass even if
// it is renamed: a file handle (reopened when the slave's hashes come), or
// on filesystems without them an open descriptor.
type fileIdent struct {
	fh *unix.FileHandle
	fd int // -1 with a file handle
}

func (id *fileIdent) release() {
	if id.fd >= 0 {
		unix.Close(id.fd)
		id.fd = -1
	}
	id.fh = nil
}

// identify takes hold of the file entry r of the directory open as dirfd.
// fh is the file handle's bytes ("" without one), part of its LinkID key.
func (p *pass) identify(dirfd int, r *entryRead) (fileIdent, string, error) {
	if p.byFH {
		fh, mnt, err := unix.NameToHandleAt(dirfd, r.e.Name, 0)
		if err == nil && mnt == p.mountID {
			cp := unix.NewFileHandle(fh.Type(), fh.Bytes())
			return fileIdent{fh: &cp, fd: -1}, string(fh.Bytes()), nil
		}
		// Another filesystem mounted inside the backing dir, or one
		// without file handles: hold a descriptor.
	}
	p.mu.Lock()
	full := p.fds >= hardMaxFds
	p.mu.Unlock()
	if full {
		return fileIdent{fd: -1}, "", fmt.Errorf("%w: %d descriptors held", ErrTooManyFiles, hardMaxFds)
	}
	fd, err := noatime(unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, func(flags int) (int, error) {
		return unix.Openat(dirfd, r.e.Name, flags, 0)
	})
	if err != nil {
		return fileIdent{fd: -1}, "", err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Ino != r.st.Ino || st.Dev != r.st.Dev {
		unix.Close(fd)
		return fileIdent{fd: -1}, "", fmt.Errorf("file changed while opened: %w", unix.ESTALE)
	}
	return fileIdent{fd: fd}, "", nil
}

// fileState is a listed file with a FileID, until it is resolved: the
// slave did not ask for it (its directory is done without hashes for it)
// or its content was compared and, in repair mode, sent and closed.
type fileState struct {
	id    uint64
	at    uint64 // the item that listed it (p.items)
	path  string // at the listing
	key   fileKey
	ident fileIdent
	// As listed: a verify re-checks files that changed since.
	size  int64
	ctime unix.Timespec

	// Guarded by p.mu.
	hashed   bool // a ResyncHashes arrived
	resolved bool

	// Used by one goroutine at a time: the reader until the last hashes,
	// then the sender.
	fd        int    // open for reading, -1
	gone      bool   // the file no longer exists on the master
	next      uint64 // blocks the slave has described so far
	last      bool   // its last ResyncHashes arrived
	slaveSize uint64
	marked    []blockRange // blocks to send
}

// blockRange is blocks [from, to).
type blockRange struct{ from, to uint64 }

// mark adds block b to the blocks to send.
func (f *fileState) mark(b uint64) {
	if n := len(f.marked); n > 0 && f.marked[n-1].to == b {
		f.marked[n-1].to++
		return
	}
	f.marked = append(f.marked, blockRange{b, b + 1})
}

// release lets go of the file.
func (f *fileState) release() {
	if f.fd >= 0 {
		unix.Close(f.fd)
		f.fd = -1
	}
	f.ident.release()
}

// open opens the file for reading; gone says it no longer exists.
func (p *pass) openFile(f *fileState) error {
	if f.fd >= 0 || f.gone {
		return nil
	}
	if f.ident.fh == nil {
		fd, err := unix.Dup(f.ident.fd)
		if err != nil {
			return fmt.Errorf("mirrorfs: resync: dup %q: %w", f.path, err)
		}
		f.fd = fd
		return nil
	}
	fd, err := noatime(unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, func(flags int) (int, error) {
		return unix.OpenByHandleAt(p.rootFd, *f.ident.fh, flags)
	})
	if errors.Is(err, unix.ESTALE) || errors.Is(err, unix.ENOENT) {
		f.gone = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("mirrorfs: resync: reopen %q: %w", f.path, err)
	}
	f.fd = fd
	return nil
}

// lockFile takes the locks that exclude every change to f's content: the
// namespace lock shared and the write locks of the nodes that can write
// to it. It reports false (and holds nothing) once the pass has ended.
func (p *pass) lockFile(f *fileState) (unlock func(), ok bool) {
	p.mnt.rlockTree()
	p.mu.Lock()
	ended := p.ended
	p.mu.Unlock()
	if ended {
		p.mnt.runlockTree()
		return nil, false
	}
	unw := p.mnt.lockWriters(f.key)
	return func() {
		unw()
		p.mnt.runlockTree()
	}, true
}

// readBlock reads block b of the open file into buf and returns its
// length, its hash and whether it is all zeros (or a hole), or n == 0
// when b lies at or beyond the end. Callers hold lockFile.
func (p *pass) readBlock(fd int, b uint64, buf []byte) (n int, h wire.Hash, zero bool, st unix.Stat_t, err error) {
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, h, false, st, fmt.Errorf("fstat: %w", err)
	}
	off := int64(b) * wire.ResyncBlockSize
	if off >= st.Size {
		return 0, h, false, st, nil
	}
	n = int(min(wire.ResyncBlockSize, st.Size-off))
	// A hole needs no reading: SEEK_DATA finds the next data at or after
	// off (ENXIO: none before the end).
	next, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) || (err == nil && next >= off+int64(n)) {
		return n, wire.ZeroHash(n), true, st, nil
	}
	for got := 0; got < n; {
		m, err := unix.Pread(fd, buf[got:n], off+int64(got))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, h, false, st, fmt.Errorf("read at %d: %w", off+int64(got), err)
		}
		if m == 0 {
			// Shorter than fstat said: cannot be, under the locks.
			return 0, h, false, st, fmt.Errorf("read at %d: %w", off+int64(got), unix.EIO)
		}
		got += m
	}
	return n, wire.BlockHash(buf[:n]), isZero(buf[:n]), st, nil
}

var zeros = make([]byte, 4096)

// isZero reports whether b holds only zero bytes.
func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// noatime opens with O_NOATIME when the process may (it owns the file, or
// has CAP_FOWNER, as the root daemon does), without otherwise: reading
// the backing dir for a resync must not move the atimes applications see
// through the mount.
func noatime(flags int, open func(flags int) (int, error)) (int, error) {
	fd, err := open(flags | unix.O_NOATIME)
	if errors.Is(err, unix.EPERM) {
		return open(flags)
	}
	return fd, err
}
