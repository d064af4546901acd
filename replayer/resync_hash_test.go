package replayer

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

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
	want := []wire.Hash{wire.BlockHash(data[:bs]), wire.BlockHash(data[bs : 2*bs]), wire.BlockHash(data[2*bs:])}
	if len(hs) != 3 || hs[0] != want[0] || hs[1] != want[1] || hs[2] != want[2] {
		t.Errorf("hashes of 2.5 blocks: %x, want %x", hs, want)
	}
	if hs := hashAll(t, dense, 0); len(hs) != 0 {
		t.Errorf("%d hashes of 0 bytes", len(hs))
	}
	if hs := hashAll(t, dense, 1); len(hs) != 1 || hs[0] != wire.BlockHash(data[:1]) {
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
	if a[3] != wire.BlockHash(make([]byte, 77)) {
		t.Error("a short hole block does not hash as its zeros")
	}
	// A file shorter than size reads as zeros past its end.
	padded := append(append([]byte(nil), data[2*bs:]...), make([]byte, bs/2)...)
	if hs := hashAll(t, dense, int64(len(data))+bs); len(hs) != 4 || hs[2] != wire.BlockHash(padded) || hs[3] != wire.BlockHash(make([]byte, bs/2)) {
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
