package slave

import (
	"os"
	"testing"

	"github.com/tdfs/tdfs/wire"
)

// BenchmarkCommit is a database's commit seen from the slave: a 4 KiB
// write applied, then a Sync (syncfs of the replica and the save of the
// state; the dirty mark before the next write). On a tmpfs it measures
// the bookkeeping, on a disk the flushes too:
//
//	BENCH_DIR=/dev/shm go test -run '^$' -bench Commit ./slave
func BenchmarkCommit(b *testing.B) {
	base, err := os.MkdirTemp(os.Getenv("BENCH_DIR"), "tdfs-commit")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(base) })
	dir, state := base+"/r", base+"/st"
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	h := newTestHandler(b, dir, state)
	b.Cleanup(func() { h.Close() })
	seq := uint64(2)
	for i, op := range []wire.Op{&wire.RunStart{Run: wire.RunID{1}},
		&wire.Create{Path: "f", Handle: 7, Mode: 0o644, Mtime: omit, DirMtime: omit}} {
		if err := h.Apply(uint64(i+1), op); err != nil {
			b.Fatal(err)
		}
	}
	data := make([]byte, 4096)
	for b.Loop() {
		seq++
		if err := h.Apply(seq, &wire.Write{Handle: 7, Off: int64(seq%256) << 12, Data: data, Mtime: wire.Time{Sec: int64(seq)}}); err != nil {
			b.Fatal(err)
		}
		seq++
		if err := h.Sync(seq); err != nil {
			b.Fatal(err)
		}
	}
}
