package wire

import (
	"crypto/sha256"
	"hash"
)

// Content hashes of a resync pass (ResyncHashes): the master and the slave
// hash their copies of a file the same way and send only the blocks whose
// hashes differ.
//
//   - A block is ResyncBlockSize bytes at a multiple of it; the last block
//     of a file is short. A hole reads, and hashes, as zeros.
//   - BlockHash is SHA-256 of the block's bytes, truncated to HashLen.
//   - The root of a file is SHA-256, truncated, of the concatenation of its
//     block hashes in order (no blocks for an empty file).
//
// hash_test.go pins both with fixed vectors: changing them is a protocol
// change.

// BlockHash returns the hash of one block.
func BlockHash(b []byte) Hash {
	sum := sha256.Sum256(b)
	var h Hash
	copy(h[:], sum[:])
	return h
}

// RootHash returns the root of a file whose blocks hash to blocks.
func RootHash(blocks []Hash) Hash {
	r := NewRootHasher()
	for _, b := range blocks {
		r.Add(b)
	}
	return r.Sum()
}

// RootHasher computes a root block by block, without keeping the hashes.
type RootHasher struct{ h hash.Hash }

// NewRootHasher returns a RootHasher of a file with no blocks yet.
func NewRootHasher() RootHasher { return RootHasher{h: sha256.New()} }

// Add appends the next block's hash.
func (r RootHasher) Add(b Hash) { r.h.Write(b[:]) }

// Sum returns the root of the blocks added so far.
func (r RootHasher) Sum() Hash {
	var h Hash
	copy(h[:], r.h.Sum(nil))
	return h
}

// zeroBlockHash is the hash of a whole block of zeros (or of a hole).
var zeroBlockHash = BlockHash(make([]byte, ResyncBlockSize))

// ZeroHash returns the hash of a block of n zero bytes (n at most
// ResyncBlockSize): a block that lies in a hole.
func ZeroHash(n int) Hash {
	if n == ResyncBlockSize {
		return zeroBlockHash
	}
	return BlockHash(make([]byte, n))
}

// BlockCount is the number of blocks of a file of size bytes.
func BlockCount(size uint64) uint64 {
	return (size + ResyncBlockSize - 1) / ResyncBlockSize
}
