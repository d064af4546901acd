package journal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// TruncateThrough removes records numbered seq or lower that are no longer
// needed, by whole segments: a segment goes once its last record is <= seq,
// so First may stay below seq+1. The segment being written is kept even
// when all its records are <= seq, so that Append keeps its file and its
// check that seqs stay dense; it goes at a later call, once sealed.
func (j *Journal) TruncateThrough(seq uint64) error {
	if j.closed {
		return ErrClosed
	}
	for len(j.segs) > 1 && j.segs[0].last <= seq {
		if err := j.removeOldest(false); err != nil {
			return err
		}
	}
	return nil
}

// Reset removes every record and segment file, durably (the directory is
// fsynced, so a power loss cannot bring old segments back beside new
// ones), and clears a sticky write error and Dropped: the next Append
// starts anew at any seq. Open Readers get ErrTruncated.
func (j *Journal) Reset() error {
	if j.closed {
		return ErrClosed
	}
	j.mu.Lock()
	j.gen++
	j.mu.Unlock()
	if j.f != nil {
		// Its contents are being thrown away: a close error changes nothing.
		_ = j.f.Close()
		j.f = nil
	}
	j.buf = j.buf[:0]
	for len(j.segs) > 0 {
		s := j.segs[0]
		path := j.path(s)
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// The journal holds what is left; a retry resumes.
			j.werr = fmt.Errorf("journal %s: reset: %w", path, err)
			return j.werr
		}
		j.mu.Lock()
		j.segs[0] = nil
		j.segs = j.segs[1:]
		j.total -= s.size
		j.mu.Unlock()
	}
	j.mu.Lock()
	j.segs = nil
	j.total = 0
	j.buffered = 0
	j.dropped = 0
	j.mu.Unlock()
	if err := syncDir(j.dir); err != nil {
		j.werr = err
		return err
	}
	j.dirDirty = false
	j.werr = nil
	return nil
}

// removeOldest removes the oldest segment file, which must not be the
// newest. The file goes first: a Reader that still finds the segment in
// the list then gets ENOENT (ErrTruncated), or keeps reading through the fd
// it has open, which stays valid.
func (j *Journal) removeOldest(forMax bool) error {
	s := j.segs[0]
	path := j.path(s)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("journal %s: %w", path, err)
	}
	j.dirDirty = true
	j.mu.Lock()
	j.segs[0] = nil
	j.segs = j.segs[1:]
	j.total -= s.size
	if forMax {
		j.dropped = s.last
	}
	j.mu.Unlock()
	return nil
}

// enforceMax removes the oldest segments while the journal, with need more
// bytes, would exceed MaxBytes.
func (j *Journal) enforceMax(need int64) error {
	if j.opt.MaxBytes == 0 {
		return nil
	}
	for len(j.segs) > 1 && j.total+int64(len(j.buf))+need > j.opt.MaxBytes {
		if err := j.removeOldest(true); err != nil {
			return err
		}
	}
	return nil
}
