package replayer

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Files a pass needs again later (a file whose contents the master is
// sending, the first file of a hard-link group), held without running out
// of descriptors.
//
// A pass may hold many: every file of a large directory may differ, and a
// backup tree may hold hundreds of thousands of hard-link groups. The
// first maxPassFds are held as open descriptors; beyond them a file is
// held by its kernel file handle (name_to_handle_at(2)) and reopened for
// each use with open_by_handle_at(2), which needs CAP_DAC_READ_SEARCH
// (root) and a filesystem that exports handles. Without them, further
// files are held as descriptors (the pass fails with EMFILE if there are
// too many, and the slave's open-file limit must be raised).

const (
	// maxPassFds bounds the descriptors a pass holds while it can hold
	// files by handle instead.
	maxPassFds = 1024
	// maxPassHeld bounds the files a pass holds at all (about 100 bytes
	// each when held by handle).
	maxPassHeld = 1 << 20
)

// heldFile is a file held by a pass: fd >= 0, or its file handle.
type heldFile struct {
	fd    int
	fh    *unix.FileHandle
	flags int // how to reopen it by handle
}

// hold takes over fd, opened with flags, as a held file of p.
func (r *Replayer) hold(p *resyncPass, fd, flags int) heldFile {
	if p.fds < maxPassFds || r.noReopen {
		p.fds++
		return heldFile{fd: fd}
	}
	fh, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		r.noReopenBecause(err)
		p.fds++
		return heldFile{fd: fd}
	}
	// Check once that it can be reopened (root, and an exporting
	// filesystem): otherwise the file would be lost to the pass.
	if !r.reopenChecked {
		r.reopenChecked = true
		tfd, err := unix.OpenByHandleAt(r.syncFd, fh, unix.O_PATH|unix.O_CLOEXEC)
		if err != nil {
			r.noReopenBecause(err)
			p.fds++
			return heldFile{fd: fd}
		}
		unix.Close(tfd)
	}
	unix.Close(fd)
	return heldFile{fd: -1, fh: &fh, flags: flags}
}

// noReopenBecause gives up holding files by handle, once, and says why.
func (r *Replayer) noReopenBecause(err error) {
	if !r.noReopen {
		r.noReopen = true
		r.log.Warn("replayer: resync: files cannot be held by file handle ("+handleTrouble(err)+"): a pass holds "+
			"a descriptor per file it still needs, so raise the open-file limit (LimitNOFILE) for large "+
			"directories and many hard links", "err", err)
	}
}

// use runs f with an open descriptor of h.
func (r *Replayer) use(h heldFile, f func(fd int) error) error {
	if h.fd >= 0 {
		return f(h.fd)
	}
	if h.fh == nil {
		return errors.New("no file held")
	}
	fd, err := unix.OpenByHandleAt(r.syncFd, *h.fh, h.flags|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("reopen by file handle: %w", err)
	}
	defer unix.Close(fd)
	return f(fd)
}

// release lets go of h.
func (p *resyncPass) release(h heldFile) {
	if h.fd >= 0 {
		unix.Close(h.fd)
		p.fds--
	}
}

// handleTrouble says what an error of name_to_handle_at(2) or
// open_by_handle_at(2) means for an operator.
func handleTrouble(err error) string {
	switch {
	case errors.Is(err, unix.EPERM):
		return "the call was not permitted: a system call filter without open_by_handle_at " +
			"(systemd's SystemCallFilter=@system-service lacks it), or no CAP_DAC_READ_SEARCH"
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
		return "the replica's filesystem gives no file handles"
	case errors.Is(err, unix.ESTALE):
		return "the file no longer exists"
	}
	return "file handles failed"
}
