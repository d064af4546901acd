package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// Fixed vectors of the resync content hashes, computed independently with
// sha256sum and Python's hashlib: both sides of every version must agree.
func TestResyncHashVectors(t *testing.T) {
	zero := make([]byte, ResyncBlockSize)
	for _, tc := range []struct {
		name string
		got  Hash
		want string
	}{
		{"block of 128 KiB zeros", BlockHash(zero), "fa43239bcee7b97ca62f007cc6848756"},
		{"short block abc", BlockHash([]byte("abc")), "ba7816bf8f01cfea414140de5dae2223"},
		{"100 zeros", ZeroHash(100), "cd00e292c5970d3c5e2f0ffa5171e555"},
		{"zero block constant", zeroBlockHash, "fa43239bcee7b97ca62f007cc6848756"},
		{"root of zeros block then abc", RootHash([]Hash{BlockHash(zero), BlockHash([]byte("abc"))}), "1de0245c0c3efb7a7ba7b847acf89e0b"},
		{"root of an empty file", RootHash(nil), "e3b0c44298fc1c149afbf4c8996fb924"},
	} {
		if got := hex.EncodeToString(tc.got[:]); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestResyncRootHasherMatchesRootHash(t *testing.T) {
	hs := []Hash{BlockHash([]byte("a")), BlockHash([]byte("b")), BlockHash([]byte("c"))}
	r := NewRootHasher()
	for _, h := range hs {
		r.Add(h)
	}
	if r.Sum() != RootHash(hs) {
		t.Fatal("incremental root differs from RootHash")
	}
}

func TestBlockCount(t *testing.T) {
	for _, tc := range []struct{ size, want uint64 }{
		{0, 0}, {1, 1}, {ResyncBlockSize, 1}, {ResyncBlockSize + 1, 2}, {3 * ResyncBlockSize, 3},
	} {
		if got := BlockCount(tc.size); got != tc.want {
			t.Errorf("BlockCount(%d) = %d, want %d", tc.size, got, tc.want)
		}
	}
}

func TestBlockAndRootHash(t *testing.T) {
	sum := sha256.Sum256([]byte("block"))
	if h := BlockHash([]byte("block")); !bytes.Equal(h[:], sum[:HashLen]) {
		t.Errorf("BlockHash = %x, want truncated SHA-256 %x", h, sum[:HashLen])
	}
	a, b := BlockHash([]byte("a")), BlockHash([]byte("b"))
	cat := sha256.Sum256(append(a[:], b[:]...))
	if h := RootHash([]Hash{a, b}); !bytes.Equal(h[:], cat[:HashLen]) {
		t.Errorf("RootHash = %x, want %x", h, cat[:HashLen])
	}
	empty := sha256.Sum256(nil)
	if h := RootHash(nil); !bytes.Equal(h[:], empty[:HashLen]) {
		t.Errorf("RootHash(nil) = %x, want %x", h, empty[:HashLen])
	}
	if RootHash([]Hash{a, b}) == RootHash([]Hash{b, a}) {
		t.Error("RootHash ignores block order")
	}
}

// More fixed vectors, computed independently as above.
func TestHashVectorsMore(t *testing.T) {
	hexOf := func(h Hash) string { return hex.EncodeToString(h[:]) }
	abc, zero := BlockHash([]byte("abc")), BlockHash(make([]byte, ResyncBlockSize))
	for _, v := range []struct{ name, got, want string }{
		{"block of nothing", hexOf(BlockHash(nil)), "e3b0c44298fc1c149afbf4c8996fb924"},
		{"block abc", hexOf(abc), "ba7816bf8f01cfea414140de5dae2223"},
		{"block of zeros", hexOf(zero), "fa43239bcee7b97ca62f007cc6848756"},
		{"root of no blocks", hexOf(RootHash(nil)), "e3b0c44298fc1c149afbf4c8996fb924"},
		{"root of abc, zeros", hexOf(RootHash([]Hash{abc, zero})), "2de17374561e643e400dd559f36287a8"},
	} {
		if v.got != v.want {
			t.Errorf("%s: %s, want %s", v.name, v.got, v.want)
		}
	}
}
