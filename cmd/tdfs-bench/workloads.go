package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// sizes are the workload sizes of one run (full or quick).
type sizes struct {
	seqBytes   int64 // seqwrite
	tarball    string
	tarFiles   int   // files and directories in the tarball
	dbIters    int   // dbsync at 0 ms
	renameN    int   // files in the renamed directory
	copyBytes  int64 // copy
	quicTime   time.Duration
	dbFileSize int64
	readBytes  int64 // read
	// sqliteCommits and pgTransactions (per client) at 0 ms; fewer at
	// longer round trips (boundByRTT).
	sqliteCommits, pgTransactions int
}

// workload is one measured action on a directory dir (the mount, the
// plain dir, or a peer's source). setup and cleanup are not timed; the
// target waits until the slaves have caught up after each.
type workload struct {
	name  string
	what  string
	files func(s *sizes) int // files the timed part touches (for requests per file)
	setup func(ctx context.Context, b *bench, dir string) error
	run   func(ctx context.Context, b *bench, dir string, t *target) (extra map[string]float64, err error)
	clean func(ctx context.Context, b *bench, dir string) error
}

var allWorkloads = []workload{
	{
		name: "seqwrite", what: "one sequential write of incompressible data, 1 MiB write(2)s, close (no fsync)",
		files: func(*sizes) int { return 1 },
		run: func(ctx context.Context, b *bench, dir string, _ *target) (map[string]float64, error) {
			start := time.Now()
			if err := writeRandom(filepath.Join(dir, "seq.bin"), b.sz.seqBytes, b.random); err != nil {
				return nil, err
			}
			mbps := float64(b.sz.seqBytes) / 1e6 / time.Since(start).Seconds()
			return map[string]float64{"write_MBps": mbps}, nil
		},
		clean: func(ctx context.Context, b *bench, dir string) error { return os.Remove(filepath.Join(dir, "seq.bin")) },
	},
	{
		name: "untar", what: "tar -xf of the Go toolchain's src tree",
		files: func(s *sizes) int { return s.tarFiles },
		run: func(ctx context.Context, b *bench, dir string, _ *target) (map[string]float64, error) {
			_, err := run(ctx, dir, "tar", "-xf", b.sz.tarball)
			return nil, err
		},
	},
	{
		name: "rmtree", what: "rm -rf of that tree",
		files: func(s *sizes) int { return s.tarFiles },
		run: func(ctx context.Context, b *bench, dir string, _ *target) (map[string]float64, error) {
			_, err := run(ctx, dir, "rm", "-rf", "src")
			return nil, err
		},
	},
	{
		name: "dbsync", what: "4 KiB random writes each followed by fdatasync",
		files: func(*sizes) int { return 1 },
		setup: func(ctx context.Context, b *bench, dir string) error {
			return writeRandom(filepath.Join(dir, "db.bin"), b.sz.dbFileSize, b.random)
		},
		run: func(ctx context.Context, b *bench, dir string, t *target) (map[string]float64, error) {
			n := b.dbIters(t)
			f, err := os.OpenFile(filepath.Join(dir, "db.bin"), os.O_WRONLY, 0)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			r := rand.New(rand.NewPCG(1, 2))
			blocks := b.sz.dbFileSize / 4096
			start := time.Now()
			for i := range n {
				off := r.Int64N(blocks) * 4096
				if _, err := f.WriteAt(b.random[i%1024*4096:][:4096], off); err != nil {
					return nil, err
				}
				if err := unix.Fdatasync(int(f.Fd())); err != nil {
					return nil, err
				}
			}
			us := float64(time.Since(start).Microseconds()) / float64(n)
			return map[string]float64{"us_per_op": us, "iterations": float64(n)}, f.Close()
		},
		clean: func(ctx context.Context, b *bench, dir string) error { return os.Remove(filepath.Join(dir, "db.bin")) },
	},
	{
		name: "rename", what: "rename of a directory holding 10,000 files",
		files: func(*sizes) int { return 1 },
		setup: func(ctx context.Context, b *bench, dir string) error {
			d := filepath.Join(dir, "many")
			if err := os.Mkdir(d, 0o755); err != nil {
				return err
			}
			for i := range b.sz.renameN {
				f, err := os.Create(filepath.Join(d, fmt.Sprintf("f%05d", i)))
				if err != nil {
					return err
				}
				f.Close()
			}
			return nil
		},
		run: func(ctx context.Context, b *bench, dir string, _ *target) (map[string]float64, error) {
			return nil, os.Rename(filepath.Join(dir, "many"), filepath.Join(dir, "renamed"))
		},
		clean: func(ctx context.Context, b *bench, dir string) error {
			return os.RemoveAll(filepath.Join(dir, "renamed"))
		},
	},
	{
		name: "copy", what: "cp of a 256 MiB file inside the tree (copy_file_range where offered)",
		files: func(*sizes) int { return 1 },
		setup: func(ctx context.Context, b *bench, dir string) error {
			return writeRandom(filepath.Join(dir, "orig.bin"), b.sz.copyBytes, b.random)
		},
		run: func(ctx context.Context, b *bench, dir string, _ *target) (map[string]float64, error) {
			_, err := run(ctx, dir, "cp", "orig.bin", "copy.bin")
			return nil, err
		},
		clean: func(ctx context.Context, b *bench, dir string) error {
			os.Remove(filepath.Join(dir, "orig.bin"))
			return os.Remove(filepath.Join(dir, "copy.bin"))
		},
	},
}

// dbIters bounds dbsync by the round-trip time: in fsync mode each
// fdatasync waits for the slaves, so at 100 ms 2,000 would take minutes.
func (b *bench) dbIters(t *target) int {
	n := b.sz.dbIters
	if t != nil && t.cfg.rtt > 0 {
		n = min(n, int(5*time.Second/t.cfg.rtt))
	}
	return n
}

// writeRandom writes size bytes of incompressible data to a new file in
// 1 MiB write(2)s.
func writeRandom(name string, size int64, random []byte) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	const chunk = 1 << 20
	for off := int64(0); off < size; off += chunk {
		// Start each chunk at a different place in the random buffer, so
		// no two chunks are alike (zstd would find repeats otherwise).
		i := (off / chunk * 4099) % int64(len(random)-chunk)
		n := min(chunk, size-off)
		if _, err := f.Write(random[i : i+n]); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
