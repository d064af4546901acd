package mirrorfs

import (
	"encoding/hex"
	"testing"

	"github.com/tdfs/tdfs/wire"
)

// Fixed vectors of the resync content hashes. The slave (package replayer)
// computes the same hashes; its tests should hold the same vectors, so
// that the two definitions cannot drift apart. Computed independently
// with sha256sum and Python's hashlib.
func TestResyncHashVectors(t *testing.T) {
	zero := make([]byte, wire.ResyncBlockSize)
	for _, tc := range []struct {
		name string
		got  wire.Hash
		want string
	}{
		{"block of 128 KiB zeros", blockHash(zero), "fa43239bcee7b97ca62f007cc6848756"},
		{"short block abc", blockHash([]byte("abc")), "ba7816bf8f01cfea414140de5dae2223"},
		{"100 zeros", zeroHash(100), "cd00e292c5970d3c5e2f0ffa5171e555"},
		{"zero block constant", zeroBlockHash, "fa43239bcee7b97ca62f007cc6848756"},
		{"root of zeros block then abc", rootHash([]wire.Hash{blockHash(zero), blockHash([]byte("abc"))}), "1de0245c0c3efb7a7ba7b847acf89e0b"},
		{"root of an empty file", rootHash(nil), "e3b0c44298fc1c149afbf4c8996fb924"},
	} {
		if got := hex.EncodeToString(tc.got[:]); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestResyncRootHasherMatchesRootHash(t *testing.T) {
	hs := []wire.Hash{blockHash([]byte("a")), blockHash([]byte("b")), blockHash([]byte("c"))}
	r := newRootHasher()
	for _, h := range hs {
		r.add(h)
	}
	if r.sum() != rootHash(hs) {
		t.Fatal("incremental root differs from rootHash")
	}
}

func TestBlockCount(t *testing.T) {
	for _, tc := range []struct{ size, want uint64 }{
		{0, 0}, {1, 1}, {wire.ResyncBlockSize, 1}, {wire.ResyncBlockSize + 1, 2}, {3 * wire.ResyncBlockSize, 3},
	} {
		if got := blockCount(tc.size); got != tc.want {
			t.Errorf("blockCount(%d) = %d, want %d", tc.size, got, tc.want)
		}
	}
}
