package mirrorfs

import (
	"crypto/sha256"
	"hash"

	"github.com/tdfs/tdfs/wire"
)

// Content hashes of a resync pass (wire/resync.go). The slave computes the
// same ones (package replayer); mirrorfs may not import it, so the
// definition is repeated here and pinned by fixed vectors in
// resync_hash_test.go, which replayer's tests should share.
//
//   - A block is wire.ResyncBlockSize bytes at a multiple of it; the last
//     block of a file is short. A hole reads, and hashes, as zeros.
//   - BlockHash is SHA-256 of the block's bytes, truncated to wire.HashLen.
//   - The root of a file is SHA-256, truncated, of the concatenation of
//     its block hashes in order (no blocks for an empty file).

// blockHash returns the hash of one block.
func blockHash(b []byte) wire.Hash {
	sum := sha256.Sum256(b)
	var h wire.Hash
	copy(h[:], sum[:])
	return h
}

// rootHash returns the root of a file whose blocks hash to blocks.
func rootHash(blocks []wire.Hash) wire.Hash {
	r := newRootHasher()
	for _, b := range blocks {
		r.add(b)
	}
	return r.sum()
}

// rootHasher computes a root block by block, without keeping the hashes.
type rootHasher struct{ h hash.Hash }

func newRootHasher() rootHasher { return rootHasher{h: sha256.New()} }

func (r rootHasher) add(b wire.Hash) { r.h.Write(b[:]) }

func (r rootHasher) sum() wire.Hash {
	var h wire.Hash
	copy(h[:], r.h.Sum(nil))
	return h
}

// zeroBlockHash is the hash of a whole block of zeros (or of a hole).
var zeroBlockHash = blockHash(make([]byte, wire.ResyncBlockSize))

// zeroHash returns the hash of n zero bytes.
func zeroHash(n int) wire.Hash {
	if n == wire.ResyncBlockSize {
		return zeroBlockHash
	}
	return blockHash(make([]byte, n))
}

// blockCount is the number of blocks of a file of size bytes.
func blockCount(size uint64) uint64 {
	return (size + wire.ResyncBlockSize - 1) / wire.ResyncBlockSize
}
