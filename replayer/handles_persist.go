package replayer

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Handles that outlive the process.
//
// The master's handles stay open across a slave restart: after a kill -9
// the master goes on writing through them, so the new process must hold
// the same files open under the same ids. Paths cannot say which file a
// handle is (the file may have been renamed, or unlinked while open), so
// a handle is recorded as the kernel's file handle of its inode
// (name_to_handle_at(2)) and reopened with open_by_handle_at(2), which
// needs CAP_DAC_READ_SEARCH (root) and a filesystem that exports handles
// (ext4, xfs, btrfs, tmpfs ... not every FUSE or network filesystem).
//
// Records are taken when a handle opens (Options.OnHandle), never per
// write, so Apply stays as fast as without them.

// HandleRecord is what must be kept, outside the replica, to reopen handle
// Handle in a new process.
type HandleRecord struct {
	Handle uint64
	FHType int32  // file_handle.handle_type
	FH     []byte // file_handle.f_handle; empty if the filesystem gave none
	// Gone says the handle's file has no name (see goneHandleOp): there
	// is nothing to reopen, and writes through the handle change nothing.
	Gone bool
}

// MaxFileHandleLen is the kernel's MAX_HANDLE_SZ: no f_handle is longer.
const MaxFileHandleLen = 128

// ErrHandlesLost is wrapped by RestoreHandles' error when the files the
// master holds open cannot be reopened: the slave cannot place the writes
// that will come through them, so it must be resynchronised.
var ErrHandlesLost = errors.New("replayer: open handles cannot be restored")

// SetHandleHook sets (nil: clears) the function Options.OnHandle names,
// for a caller that makes the Replayer before what records its handles.
func (r *Replayer) SetHandleHook(fn func(h uint64, rec *HandleRecord)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onHandle = fn
}

// HandleRecord returns the record of handle h. A handle whose filesystem
// gives no file handle yields a record with an empty FH (RestoreHandles
// will report it lost) and an error saying why.
func (r *Replayer) HandleRecord(h uint64) (HandleRecord, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return HandleRecord{}, fmt.Errorf("handle record %d: replayer: %w", h, os.ErrClosed)
	}
	return r.record(h)
}

// HandleRecords returns the records of every open handle, sorted by
// handle, for a progress log to rewrite itself compactly. A handle whose
// filesystem gives no file handle has an empty FH.
func (r *Replayer) HandleRecords() []HandleRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	recs := make([]HandleRecord, 0, len(r.handles)+len(r.gone))
	for h := range r.handles {
		rec, _ := r.record(h)
		recs = append(recs, rec)
	}
	for h := range r.gone {
		recs = append(recs, HandleRecord{Handle: h, Gone: true})
	}
	slices.SortFunc(recs, func(a, b HandleRecord) int { return cmp.Compare(a.Handle, b.Handle) })
	return recs
}

// record returns h's record. r.mu is held.
func (r *Replayer) record(h uint64) (HandleRecord, error) {
	if _, gone := r.gone[h]; gone {
		return HandleRecord{Handle: h, Gone: true}, nil
	}
	fd, err := r.handle(h)
	if err != nil {
		return HandleRecord{}, err
	}
	fh, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		return HandleRecord{Handle: h}, fmt.Errorf("name_to_handle_at of handle %d: %w", h, err)
	}
	return HandleRecord{Handle: h, FHType: fh.Type(), FH: bytes.Clone(fh.Bytes())}, nil
}

// RestoreHandles reopens the handles a dead process held, from their
// records. A file that no longer exists (ESTALE: it had no name, and its
// inode went with the last fd, the dead process's) becomes a gone handle:
// writes, fallocates and setattrs through it succeed and change nothing,
// which is the master's effect as anyone can see it (goneHandleOp). A
// handle already open here is replaced.
//
// Each reopened file must be a regular file on the root's filesystem. A
// file handle can name any inode of that filesystem, inside the replica
// or not, so records must come from the slave's own state directory,
// which is trusted like the state file.
//
// It fails, restoring nothing, with an error wrapping ErrHandlesLost when
// a handle cannot be reopened: no permission (open_by_handle_at needs
// CAP_DAC_READ_SEARCH), a filesystem without file handles, an empty or
// bad record, a file elsewhere or of another type.
func (r *Replayer) RestoreHandles(recs []HandleRecord) (restored, gone int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, 0, fmt.Errorf("restore handles: replayer: %w", os.ErrClosed)
	}
	opened := make(map[uint64]int, len(recs))
	goneSet := make(map[uint64]struct{})
	defer func() {
		if err != nil {
			for _, fd := range opened {
				unix.Close(fd)
			}
		}
	}()
	for _, rec := range recs {
		if fd, ok := opened[rec.Handle]; ok {
			unix.Close(fd) // a later record of the same handle wins
			delete(opened, rec.Handle)
		}
		delete(goneSet, rec.Handle)
		fd, err := r.reopen(rec)
		if errors.Is(err, unix.ESTALE) {
			goneSet[rec.Handle] = struct{}{}
			continue
		}
		if err != nil {
			return 0, 0, fmt.Errorf("restore handle %d: %w: %w", rec.Handle, ErrHandlesLost, err)
		}
		opened[rec.Handle] = fd
	}
	for h, fd := range opened {
		r.keep(h, fd)
	}
	for h := range goneSet {
		r.markGone(h)
	}
	return len(opened), len(goneSet), nil
}

// reopen opens rec's file; ESTALE (also for a Gone record) means it has
// no name.
func (r *Replayer) reopen(rec HandleRecord) (int, error) {
	switch {
	case rec.Handle == 0:
		return -1, fmt.Errorf("%w: handle 0", wire.ErrRefused)
	case rec.Gone:
		return -1, unix.ESTALE
	case len(rec.FH) == 0:
		return -1, errors.New("no file handle was recorded (the filesystem gave none)")
	case len(rec.FH) > MaxFileHandleLen:
		return -1, fmt.Errorf("file handle of %d bytes, at most %d", len(rec.FH), MaxFileHandleLen)
	}
	// Any fd on the filesystem names it; open_by_handle_at rejects O_PATH
	// fds, so the readable root fd.
	fd, err := unix.OpenByHandleAt(r.syncFd, unix.NewFileHandle(rec.FHType, rec.FH),
		unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("open_by_handle_at (%s): %w", handleTrouble(err), err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: %s is not a regular file", wire.ErrRefused, typeName(st.Mode))
	}
	if st.Dev != r.rootDev {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: file is on another filesystem than the root", wire.ErrRefused)
	}
	return fd, nil
}

// markGone makes h a gone handle, closing what it had open.
func (r *Replayer) markGone(h uint64) {
	if fd, ok := r.handles[h]; ok {
		unix.Close(fd)
		delete(r.handles, h)
	}
	r.gone[h] = struct{}{}
}

func (r *Replayer) notifyOpen(h uint64) {
	if r.onHandle == nil {
		return
	}
	rec, err := r.record(h)
	if err != nil && !r.fhWarned {
		r.fhWarned = true
		r.log.Warn("replayer: no file handle for an open file: open files will not survive a restart of this slave",
			"root", r.root, "err", err)
	}
	r.onHandle(h, &rec)
}

func (r *Replayer) notifyReleased(h uint64) {
	if r.onHandle != nil {
		r.onHandle(h, nil)
	}
}

// notifyAllReleased tells Options.OnHandle that every handle is released
// (a new master run).
func (r *Replayer) notifyAllReleased() {
	if r.onHandle == nil {
		return
	}
	for h := range r.handles {
		r.onHandle(h, nil)
	}
	for h := range r.gone {
		r.onHandle(h, nil)
	}
}
