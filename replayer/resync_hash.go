package replayer

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// FileHashes calls fn with the index and hash of each block of the first
// size bytes of the file open as fd: wire.ResyncBlockSize bytes each, the
// last one short. A hole hashes like the zeros it reads as; blocks that
// lie wholly in a hole are not read (SEEK_DATA), so a large sparse file
// costs what its data costs. Bytes missing because the file is shorter
// than size hash as zeros too. fd's file offset moves.
func FileHashes(fd int, size int64, fn func(i uint64, h wire.Hash) error) error {
	if size < 0 {
		return fmt.Errorf("hash: size %d", size)
	}
	buf := make([]byte, wire.ResyncBlockSize)
	nextData := int64(-1) // the first offset >= the current one that may hold data
	for i, off := uint64(0), int64(0); off < size; i, off = i+1, off+wire.ResyncBlockSize {
		n := min(int64(wire.ResyncBlockSize), size-off)
		if nextData < off {
			nd, err := unix.Seek(fd, off, unix.SEEK_DATA)
			switch {
			case errors.Is(err, unix.ENXIO):
				nd = size // no data from off on
			case err != nil:
				nd = off // no SEEK_DATA here: read everything
			}
			nextData = nd
		}
		var h wire.Hash
		if nextData >= off+n {
			if n == wire.ResyncBlockSize {
				h = wire.ZeroHash(wire.ResyncBlockSize)
			} else {
				h = wire.ZeroHash(int(n))
			}
		} else {
			b := buf[:n]
			if err := preadFull(fd, b, off); err != nil {
				return fmt.Errorf("hash block %d: %w", i, err)
			}
			h = wire.BlockHash(b)
		}
		if err := fn(i, h); err != nil {
			return err
		}
	}
	return nil
}

// preadFull fills b from off, with zeros past the end of the file.
func preadFull(fd int, b []byte, off int64) error {
	for range maxWriteTries {
		if len(b) == 0 {
			return nil
		}
		n, err := unix.Pread(fd, b, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			clear(b)
			return nil
		}
		b = b[n:]
		off += int64(n)
	}
	if len(b) == 0 {
		return nil
	}
	return io.ErrNoProgress
}
