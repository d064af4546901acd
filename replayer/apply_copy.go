package replayer

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// CopyRange: the master copied a range between files with copy_file_range(2),
// and the slave copies it between its own copies of them, so the bytes never
// cross the network. Prefix consistency (docs/design.md, Prefix consistency)
// makes the slave's source identical to the master's as of the op, so exactly
// o.Len bytes must be there to copy: fewer is an error (the trees differ),
// never a silently shorter file.

// copyBufLen bounds the buffer of the read/write fallback.
const copyBufLen = 1 << 20

// maxCopyTries bounds the system calls of one copy beyond the ones that
// make progress (EINTR), like maxWriteTries.
const maxCopyTries = 64

// copyFileRangeSys is copy_file_range(2); tests replace it to take the
// fallback on filesystems that do support it.
var copyFileRangeSys = unix.CopyFileRange

// errCopyUnsupported: this filesystem does not copy_file_range between
// these files; read and write instead.
var errCopyUnsupported = errors.New("copy_file_range unsupported here")

func (r *Replayer) applyCopyRange(o *wire.CopyRange) error {
	out, err := r.handle(o.Handle)
	if err != nil {
		return err
	}
	var ost unix.Stat_t
	if err := unix.Fstat(out, &ost); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	if ost.Mode&unix.S_IFMT != unix.S_IFREG {
		return wrongType("copy into a %s", typeName(ost.Mode))
	}
	// Opening such a file for writing was refused (checkNotSetid); a
	// handle opened before its bits were set cannot exist without
	// AllowSetuid either (checkSetattrMode). Check anyway: the bytes
	// copied here come from elsewhere in the tree.
	if !r.allowSetuid && ost.Mode&setidBits != 0 {
		return fmt.Errorf("%w: copy into a file with mode %#o: a set-id file (this slave does not replicate set-id files: see --allow-setuid)",
			ErrPolicy, ost.Mode&0o7777)
	}
	in, err := r.openCopySource(o)
	if err != nil {
		return err
	}
	defer unix.Close(in)
	var ist unix.Stat_t
	if err := unix.Fstat(in, &ist); err != nil {
		return fmt.Errorf("fstat source: %w", err)
	}
	if ist.Dev == ost.Dev && ist.Ino == ost.Ino && o.SrcOff < o.Off+o.Len && o.Off < o.SrcOff+o.Len {
		// copy_file_range refuses it (EINVAL), and so did the master's:
		// a master never sends it. Source and destination are one file
		// here and two on the master (a link or rename the master does
		// not have): the trees differ.
		return wrongType("overlapping ranges [%d,+%d) and [%d,+%d) within one file", o.SrcOff, o.Len, o.Off, o.Len)
	}
	if err := copyExactly(in, o.SrcOff, out, o.Off, o.Len); err != nil {
		return fmt.Errorf("copy %d bytes from %d to %d: %w", o.Len, o.SrcOff, o.Off, err)
	}
	return setMtime(fdTarget(out), o.Mtime)
}

// openCopySource opens the source of o for reading. A handle's fd is open
// for writing only, so it is opened again through its /proc magic link,
// which reaches the file whatever its name (or lack of one); a path is
// resolved beneath the root like every other.
func (r *Replayer) openCopySource(o *wire.CopyRange) (int, error) {
	if o.SrcHandle == 0 {
		d, name, err := r.lookup(o.SrcPath, false)
		if err != nil {
			return -1, err
		}
		defer d.close()
		fd, err := openRegular(d, name, unix.O_RDONLY)
		if err != nil {
			return -1, fmt.Errorf("source %q: %w", o.SrcPath, err)
		}
		return fd, nil
	}
	h, err := r.handle(o.SrcHandle)
	if err != nil {
		return -1, fmt.Errorf("source: %w", err)
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", h), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("reopen source handle %d for reading: %w", o.SrcHandle, err)
	}
	if err := checkRegularFd(fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// copyExactly copies n bytes at inOff of in to outOff of out, with
// copy_file_range where the filesystem does it and with a bounded
// read/write loop where it does not. A source that ends before n bytes is
// io.ErrUnexpectedEOF.
func copyExactly(in int, inOff int64, out int, outOff int64, n int64) error {
	done, err := copyFileRange(in, inOff, out, outOff, n)
	if errors.Is(err, errCopyUnsupported) {
		err = copyReadWrite(in, inOff+done, out, outOff+done, n-done)
	}
	return err
}

// copyFileRange copies with copy_file_range(2) until n bytes are copied.
// When the filesystem refuses (EXDEV between filesystems on older kernels,
// EOPNOTSUPP, ENOSYS, or EINVAL from filesystems without support) before
// anything was copied, it returns errCopyUnsupported and how far it got.
func copyFileRange(in int, inOff int64, out int, outOff int64, n int64) (int64, error) {
	var done int64
	for tries := 0; done < n; {
		i, o := inOff+done, outOff+done
		c, err := copyFileRangeSys(in, &i, out, &o, int(min(n-done, wire.MaxCopyLen)), 0)
		switch {
		case errors.Is(err, unix.EINTR):
			if tries++; tries > maxCopyTries {
				return done, err
			}
			continue
		case errors.Is(err, unix.EXDEV), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL):
			// EINVAL also means a bad argument, but offsets and lengths
			// were bounded by the codec and overlap checked above; the
			// fallback then reports the real cause, if any.
			return done, fmt.Errorf("%w: %w", errCopyUnsupported, err)
		case err != nil:
			return done, err
		case c == 0:
			return done, fmt.Errorf("source ends after %d of %d bytes: %w", done, n, io.ErrUnexpectedEOF)
		}
		done += int64(c)
	}
	return done, nil
}

// copyReadWrite copies n bytes with pread and pwrite through a buffer of
// at most copyBufLen bytes.
func copyReadWrite(in int, inOff int64, out int, outOff int64, n int64) error {
	buf := make([]byte, min(n, copyBufLen))
	var done int64
	for tries := 0; done < n; {
		c, err := unix.Pread(in, buf[:min(n-done, int64(len(buf)))], inOff+done)
		switch {
		case errors.Is(err, unix.EINTR):
			if tries++; tries > maxCopyTries {
				return err
			}
			continue
		case err != nil:
			return fmt.Errorf("read source: %w", err)
		case c == 0:
			return fmt.Errorf("source ends after %d of %d bytes: %w", done, n, io.ErrUnexpectedEOF)
		}
		if err := pwriteAll(out, buf[:c], outOff+done); err != nil {
			return err
		}
		done += int64(c)
	}
	return nil
}
