// Command tdfs-bench measures tdfs against its ceilings and its peers, side
// by side in one run, and prints a markdown table and writes a chart
// (`make bench`, docs/performance.md):
//
//   - ceilings: the plain backing directory, a bare go-fuse loopback mount
//     with the options tdfs uses (no replication), raw quic-go throughput
//     between two processes with the same TLS and QUIC settings;
//   - tdfs: a matrix in which each dimension (slaves, --sync, -z, round-trip
//     time, --lanes) varies against a common default;
//   - peers: rsync to an rsync daemon on loopback, and lsyncd driving it.
//
// Rounds are interleaved (every configuration once, then again) so machine
// noise spreads over all of them; each figure is the median of the rounds.
// It needs root (FUSE mounts) and the binaries of `make build`.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	app := &cli.App{
		Name:      "tdfs-bench",
		Usage:     "measure tdfs against a bare FUSE loopback, raw QUIC and rsync/lsyncd",
		UsageText: "tdfs-bench [--quick] [--dir DIR] [--out DIR] [--bin DIR] [--rounds N] [--only CONFIGS] [--workloads LIST]",
		Description: "tdfs-bench runs its workloads (1 GiB sequential write, tar -xf of the Go source tree,\n" +
			"rm -rf of it, 4 KiB random writes each followed by fdatasync, rename of a directory of\n" +
			"10,000 files, cp of a 256 MiB file, SQLite commits in WAL and rollback-journal mode, pgbench,\n" +
			"a cold and a cached read of a 512 MiB file, grep -r over the Go tree twice) on the plain\n" +
			"directory, on a bare go-fuse loopback and on tdfs in several configurations (some pinned: the\n" +
			"slave on one CPU, the master and the workload on another), and reports time on the master,\n" +
			"time until every slave is identical, bytes on the wire, FUSE requests per file, peak RSS and\n" +
			"CPU seconds of master and slaves, and CPU per GiB and per 1,000 files. It writes results.md,\n" +
			"results.json and chart.svg to --out.\n\n" +
			"Backing dirs live on a tmpfs by default (disk noise would drown the signal); --dir puts\n" +
			"them on a real disk. It needs root (FUSE mounts), leaves nothing mounted or running, and\n" +
			"never asserts: the figures are for people.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "quick", EnvVars: []string{"BENCH_QUICK"},
				Usage: "smaller workloads, fewer configurations, one round (under 3 minutes)"},
			&cli.StringFlag{Name: "dir", EnvVars: []string{"BENCH_DIR"}, Value: "/dev/shm",
				Usage: "run in a fresh directory under `DIR` (default a tmpfs; a disk-backed DIR measures the disk too)"},
			&cli.StringFlag{Name: "out", EnvVars: []string{"BENCH_OUT"}, Value: "bench-results",
				Usage: "write results.md, results.json and chart.svg to `DIR`"},
			&cli.StringFlag{Name: "bin", EnvVars: []string{"BENCH_BIN"}, Value: "bin",
				Usage: "`DIR` holding tdfs-master, tdfs-slave, tdfs-certs (from make build)"},
			&cli.IntFlag{Name: "rounds", EnvVars: []string{"BENCH_ROUNDS"},
				Usage: "interleaved rounds, `N` (default 1); with more, every configuration runs once per round and figures are medians"},
			&cli.StringFlag{Name: "only", EnvVars: []string{"BENCH_ONLY"},
				Usage: "run only these comma-separated configuration `NAMES` (see the table's first column; quic: the raw QUIC ceilings)"},
			&cli.StringFlag{Name: "workloads", EnvVars: []string{"BENCH_WORKLOADS"},
				Usage: "run only these comma-separated workload `NAMES` (seqwrite,untar,rmtree,dbsync,rename,copy,sqlite-wal,sqlite-rollback,pgbench,read,grep)"},
			&cli.BoolFlag{Name: "no-peers", EnvVars: []string{"BENCH_NO_PEERS"},
				Usage: "skip rsync and lsyncd"},
			&cli.StringFlag{Name: "profile", EnvVars: []string{"BENCH_PROFILE"},
				Usage: "write a CPU profile of every daemon (master, slaves, loopback) per configuration and round to `DIR` (go tool pprof)"},
		},
		Action: runBench,
		Commands: []*cli.Command{
			{Name: "loopback", Hidden: true, Usage: "serve a bare go-fuse loopback (internal)", Action: serveLoopback,
				ArgsUsage: "BACKING MOUNTPOINT COUNTS-FILE",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "passthrough", Usage: "let the kernel read and write the backing files itself"}}},
			{Name: "quic-sink", Hidden: true, Usage: "raw QUIC receiver (internal)", Action: quicSink,
				ArgsUsage: "PKI-DIR"},
			{Name: "report", Usage: "render results.md and chart.svg again from a results.json (to --out)",
				ArgsUsage: "RESULTS.json", Action: rerender},
		},
		HideHelpCommand: true,
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "tdfs-bench:", err)
		os.Exit(1)
	}
}
