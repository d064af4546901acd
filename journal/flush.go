package journal

import (
	"fmt"
	"os"
)

// Flush hands every buffered record to the kernel with write(2), without
// fsync: after it, the records survive the death of the process, and
// Readers see them. After a write error (ENOSPC, EIO) the journal's tail
// is unknown: Flush, Append and Sync return the error until Reset, and the
// next Open cuts any partially written record.
func (j *Journal) Flush() error { return j.flush() }

// flush writes the buffer, then tail: the rest of the buffer's last
// record, which Append did not copy into it (a large body and its CRC).
func (j *Journal) flush(tail ...[]byte) error {
	if j.werr != nil {
		return j.werr
	}
	if j.closed {
		return ErrClosed
	}
	if len(j.buf) == 0 {
		return nil
	}
	s := j.newest()
	n := int64(0)
	for _, b := range append([][]byte{j.buf}, tail...) {
		if _, err := j.f.Write(b); err != nil {
			j.werr = fmt.Errorf("journal %s: write at %d: %w", j.path(s), s.size+n, err)
			return j.werr
		}
		n += int64(len(b))
	}
	j.mu.Lock()
	s.size += n
	s.flushedLast = s.last
	s.dirty = true
	j.total += n
	j.buffered = 0
	j.mu.Unlock()
	j.buf = j.buf[:0]
	if cap(j.buf) > 2*j.opt.BufferSize {
		j.buf = nil // a large record grew it: give the memory back
	}
	return nil
}

// Sync flushes, then fsyncs every segment written since it was last
// synced (the newest, and any sealed since) and the directory: after it,
// every record appended so far survives a power loss. A failed fsync is
// sticky like a write error: the kernel may have dropped the dirty pages.
func (j *Journal) Sync() error {
	if err := j.Flush(); err != nil {
		return err
	}
	for _, s := range j.segs {
		if !s.dirty {
			continue
		}
		if err := j.syncSegment(s); err != nil {
			j.werr = err
			return err
		}
		s.dirty = false
	}
	if j.dirDirty {
		if err := syncDir(j.dir); err != nil {
			j.werr = err
			return err
		}
		j.dirDirty = false
	}
	return nil
}

// syncSegment fsyncs one segment, by its open fd if it is the newest.
func (j *Journal) syncSegment(s *segment) error {
	path := j.path(s)
	if s == j.newest() && j.f != nil {
		if err := j.f.Sync(); err != nil {
			return fmt.Errorf("journal %s: fsync: %w", path, err)
		}
		return nil
	}
	// fsync through a read-only fd flushes the file's dirty pages all the
	// same (fsync(2) acts on the inode).
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("journal %s: %w", path, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("journal %s: fsync: %w", path, err)
	}
	return nil
}

// seal writes out and closes the newest segment; the next Append starts a
// new one.
func (j *Journal) seal() error {
	if err := j.Flush(); err != nil {
		return err
	}
	err := j.f.Close()
	j.f = nil
	if err != nil {
		j.werr = fmt.Errorf("journal %s: close: %w", j.path(j.newest()), err)
		return j.werr
	}
	return nil
}

// syncDir fsyncs a directory, making file creations and removals in it
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("journal %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("journal %s: fsync: %w", dir, err)
	}
	return nil
}
