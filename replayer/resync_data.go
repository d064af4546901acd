package replayer

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// File contents in a resync pass: the slave's hashes out, the master's
// differing blocks in.

// sendHashes answers ResyncHashes for the file open as fd: its size and
// the hashes of its blocks, MaxResyncHashes per reply (More on all but the
// last), with the root hash on the last one; with rootOnly (Verify), one
// reply with the root alone.
func (r *Replayer) sendHashes(pass, fileID uint64, fd int, rootOnly bool, reply func(wire.ResyncReply) error) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	size := uint64(st.Size)
	root := sha256.New()
	nblocks := (size + wire.ResyncBlockSize - 1) / wire.ResyncBlockSize
	newBatch := func(left uint64) []wire.Hash {
		if rootOnly {
			return nil
		}
		return make([]wire.Hash, 0, min(left, wire.MaxResyncHashes))
	}
	batch := newBatch(nblocks)
	var first uint64
	err := FileHashes(fd, st.Size, func(i uint64, h wire.Hash) error {
		root.Write(h[:])
		if rootOnly {
			return nil
		}
		if len(batch) == wire.MaxResyncHashes {
			// A new slice for each reply: the caller may keep the last.
			if err := reply(&wire.ResyncHashes{Pass: pass, FileID: fileID, Size: size, First: first, Hashes: batch, More: true}); err != nil {
				return err
			}
			first, batch = i, newBatch(nblocks-i)
		}
		batch = append(batch, h)
		return nil
	})
	if err != nil {
		return err
	}
	last := &wire.ResyncHashes{Pass: pass, FileID: fileID, Size: size, First: first, Hashes: batch}
	copy(last.Root[:], root.Sum(nil))
	return reply(last)
}

// passFileOf returns the pass's open file FileID. Data or a Close for a
// file the slave did not answer hashes for is a protocol error: the
// master sends them only for those (a Verify pass has none).
func passFileOf(p *resyncPass, fileID uint64) (*passFile, error) {
	f, ok := p.files[fileID]
	if !ok {
		return nil, fmt.Errorf("%w: file id %d is not awaiting contents", ErrBadResync, fileID)
	}
	return f, nil
}

// bind makes fd (open on the file path) the pass's file FileID, after
// the slave answered its hashes. An inode bound to an earlier FileID
// still open is superseded there (wire.ResyncClose says why).
func (r *Replayer) bind(p *resyncPass, fileID uint64, fd int, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fmt.Errorf("fstat: %w", err)
	}
	ino := [2]uint64{st.Dev, st.Ino}
	if old, ok := p.bound[ino]; ok {
		if f := p.files[old]; f != nil {
			f.superseded = true
		}
	}
	p.bound[ino] = fileID
	p.files[fileID] = &passFile{held: r.hold(p, fd, unix.O_RDWR), path: path, ino: ino}
	return nil
}

// forget ends FileID f.
func (p *resyncPass) forget(fileID uint64, f *passFile) {
	delete(p.files, fileID)
	if p.bound[f.ino] == fileID {
		delete(p.bound, f.ino)
	}
	p.release(f.held)
}

func (r *Replayer) resyncData(p *resyncPass, x *wire.ResyncData) error {
	f, err := passFileOf(p, x.FileID)
	if err != nil {
		return err
	}
	if x.Off < 0 || x.Len < 0 || x.Off > math.MaxInt64-x.Len || len(x.Data) > 0 && int64(len(x.Data)) != x.Len {
		return fmt.Errorf("%w: data at %d of %d bytes (%d sent)", ErrBadResync, x.Off, x.Len, len(x.Data))
	}
	if err := r.checkEnd("resync data", uint64(x.Off), uint64(x.Len)); err != nil {
		return err
	}
	if f.superseded {
		return nil
	}
	return r.use(f.held, func(fd int) error {
		return keepPrivs(fd, func() error {
			if len(x.Data) > 0 {
				if err := pwriteAll(fd, x.Data, x.Off); err != nil {
					return fmt.Errorf("%q: write %d bytes at %d: %w", f.path, len(x.Data), x.Off, err)
				}
				return nil
			}
			if err := punchHole(fd, x.Off, x.Len); err != nil {
				return fmt.Errorf("%q: hole of %d bytes at %d: %w", f.path, x.Len, x.Off, err)
			}
			return nil
		})
	})
}

// punchHole makes n bytes at off read as zeros, freeing their blocks where
// the filesystem can, else writing zeros (only below the current size:
// ResyncClose's truncate makes the rest).
func punchHole(fd int, off, n int64) error {
	if n == 0 {
		return nil
	}
	err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil || !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	end := min(off+n, st.Size)
	if end <= off {
		return nil
	}
	zeros := make([]byte, min(end-off, wire.ResyncBlockSize))
	for ; off < end; off += int64(len(zeros)) {
		if err := pwriteAll(fd, zeros[:min(int64(len(zeros)), end-off)], off); err != nil {
			return err
		}
	}
	return nil
}

func (r *Replayer) resyncClose(p *resyncPass, x *wire.ResyncClose) error {
	f, err := passFileOf(p, x.FileID)
	if err != nil {
		return err
	}
	if x.Size > math.MaxInt64 {
		return fmt.Errorf("%w: size %d", ErrBadResync, x.Size)
	}
	if err := r.checkEnd("file size", x.Size, 0); err != nil {
		return err
	}
	defer p.forget(x.FileID, f)
	if f.superseded || x.Mtime.Omit {
		// Superseded, or gone from the master: forget the FileID,
		// changing nothing.
		return nil
	}
	return r.use(f.held, func(fd int) error {
		if err := keepPrivs(fd, func() error { return unix.Ftruncate(fd, int64(x.Size)) }); err != nil {
			return fmt.Errorf("%q: truncate to %d: %w", f.path, x.Size, err)
		}
		if err := setMtime(fdTarget(fd), x.Mtime); err != nil {
			return fmt.Errorf("%q: %w", f.path, err)
		}
		return nil
	})
}

// capXattr is the xattr holding file capabilities.
const capXattr = "security.capability"

// keepPrivs runs write, a change of the file's contents, and restores
// what the kernel strips on such a change (file_remove_privs): setuid and
// setgid for a process without CAP_FSETID, file capabilities always. The
// pass's writes are the master's contents arriving, not a write on the
// master, so they must not change the file's metadata; a write the
// master's application made travels as an op, and strips them on both
// sides alike.
func keepPrivs(fd int, write func() error) error {
	var before unix.Stat_t
	if err := unix.Fstat(fd, &before); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	var capv []byte
	if n, err := unix.Fgetxattr(fd, capXattr, nil); err == nil && n > 0 {
		capv = make([]byte, n)
		if n, err = unix.Fgetxattr(fd, capXattr, capv); err != nil {
			capv = nil
		} else {
			capv = capv[:n]
		}
	}
	if err := write(); err != nil {
		return err
	}
	if before.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		var after unix.Stat_t
		if err := unix.Fstat(fd, &after); err != nil {
			return fmt.Errorf("fstat: %w", err)
		}
		if after.Mode != before.Mode {
			if err := unix.Fchmod(fd, before.Mode&0o7777); err != nil {
				return fmt.Errorf("restore mode %#o: %w", before.Mode&0o7777, err)
			}
		}
	}
	if capv != nil {
		if _, err := unix.Fgetxattr(fd, capXattr, nil); errors.Is(err, unix.ENODATA) {
			if err := unix.Fsetxattr(fd, capXattr, capv, 0); err != nil {
				return fmt.Errorf("restore %s: %w", capXattr, err)
			}
		}
	}
	return nil
}
