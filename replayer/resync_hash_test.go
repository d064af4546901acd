package replayer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

func TestBlockAndRootHash(t *testing.T) {
	sum := sha256.Sum256([]byte("block"))
	if h := BlockHash([]byte("block")); !bytes.Equal(h[:], sum[:wire.HashLen]) {
		t.Errorf("BlockHash = %x, want truncated SHA-256 %x", h, sum[:wire.HashLen])
	}
	a, b := BlockHash([]byte("a")), BlockHash([]byte("b"))
	cat := sha256.Sum256(append(a[:], b[:]...))
	if h := RootHash([]wire.Hash{a, b}); !bytes.Equal(h[:], cat[:wire.HashLen]) {
		t.Errorf("RootHash = %x, want %x", h, cat[:wire.HashLen])
	}
	empty := sha256.Sum256(nil)
	if h := RootHash(nil); !bytes.Equal(h[:], empty[:wire.HashLen]) {
		t.Errorf("RootHash(nil) = %x, want %x", h, empty[:wire.HashLen])
	}
	if RootHash([]wire.Hash{a, b}) == RootHash([]wire.Hash{b, a}) {
		t.Error("RootHash ignores block order")
	}
}

// hashAll collects FileHashes of p over size bytes.
func hashAll(t *testing.T, p string, size int64) []wire.Hash {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var hs []wire.Hash
	if err := FileHashes(fd, size, func(i uint64, h wire.Hash) error {
		if i != uint64(len(hs)) {
			t.Fatalf("block %d after %d blocks", i, len(hs))
		}
		hs = append(hs, h)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return hs
}

func TestFileHashes(t *testing.T) {
	dir := t.TempDir()
	const bs = wire.ResyncBlockSize
	data := randomData(3, 2*bs+bs/2)
	dense := filepath.Join(dir, "dense")
	if err := os.WriteFile(dense, data, 0o644); err != nil {
		t.Fatal(err)
	}
	hs := hashAll(t, dense, int64(len(data)))
	want := []wire.Hash{BlockHash(data[:bs]), BlockHash(data[bs : 2*bs]), BlockHash(data[2*bs:])}
	if len(hs) != 3 || hs[0] != want[0] || hs[1] != want[1] || hs[2] != want[2] {
		t.Errorf("hashes of 2.5 blocks: %x, want %x", hs, want)
	}
	if hs := hashAll(t, dense, 0); len(hs) != 0 {
		t.Errorf("%d hashes of 0 bytes", len(hs))
	}
	if hs := hashAll(t, dense, 1); len(hs) != 1 || hs[0] != BlockHash(data[:1]) {
		t.Errorf("hash of 1 byte: %x", hs)
	}

	// Holes hash like the zeros they read as, sparse or written out.
	zeros := make([]byte, 3*bs+77)
	copy(zeros[bs+10:], "data in the second block")
	written := filepath.Join(dir, "written")
	if err := os.WriteFile(written, zeros, 0o644); err != nil {
		t.Fatal(err)
	}
	sparse := filepath.Join(dir, "sparse")
	sparseFile(t, sparse, int64(len(zeros)), map[int64][]byte{1: zeros[bs : 2*bs]})
	a, b := hashAll(t, written, int64(len(zeros))), hashAll(t, sparse, int64(len(zeros)))
	if len(a) != 4 || !slices.Equal(a, b) {
		t.Errorf("sparse %x, written %x", b, a)
	}
	if a[3] != BlockHash(make([]byte, 77)) {
		t.Error("a short hole block does not hash as its zeros")
	}
	// A file shorter than size reads as zeros past its end.
	padded := append(append([]byte(nil), data[2*bs:]...), make([]byte, bs/2)...)
	if hs := hashAll(t, dense, int64(len(data))+bs); len(hs) != 4 || hs[2] != BlockHash(padded) || hs[3] != BlockHash(make([]byte, bs/2)) {
		t.Errorf("past the end: %x", hs)
	}
	// fn's error stops the walk.
	fd, err := unix.Open(dense, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	stop := errors.New("stop")
	calls := 0
	if err := FileHashes(fd, int64(len(data)), func(uint64, wire.Hash) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Errorf("err %v after %d calls, want stop after 1", err, calls)
	}
}

// Fixed vectors: the master side (mirrorfs) repeats these functions and
// must give the same values.
func TestHashVectors(t *testing.T) {
	hexOf := func(h wire.Hash) string { return hex.EncodeToString(h[:]) }
	abc, zero := BlockHash([]byte("abc")), BlockHash(make([]byte, wire.ResyncBlockSize))
	for _, v := range []struct{ name, got, want string }{
		{"block of nothing", hexOf(BlockHash(nil)), "e3b0c44298fc1c149afbf4c8996fb924"},
		{"block abc", hexOf(abc), "ba7816bf8f01cfea414140de5dae2223"},
		{"block of zeros", hexOf(zero), "fa43239bcee7b97ca62f007cc6848756"},
		{"root of no blocks", hexOf(RootHash(nil)), "e3b0c44298fc1c149afbf4c8996fb924"},
		{"root of abc, zeros", hexOf(RootHash([]wire.Hash{abc, zero})), "2de17374561e643e400dd559f36287a8"},
	} {
		if v.got != v.want {
			t.Errorf("%s: %s, want %s", v.name, v.got, v.want)
		}
	}
}
