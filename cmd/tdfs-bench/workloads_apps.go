package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The workloads people put on a replicated tree besides bulk copies:
// databases committing small transactions, and reads (a web server's, a
// search's) through the master's mount. They need sqlite3 and PostgreSQL's
// initdb, pg_ctl and pgbench (Debian: sqlite3, postgresql); a workload
// whose tools are missing is skipped with a note.

var appWorkloads = []workload{
	sqliteWorkload("sqlite-wal", "WAL"),
	sqliteWorkload("sqlite-rollback", "DELETE"),
	{
		name: "pgbench", what: "pgbench (TPC-B-like, scale 4, 4 clients, a fixed number of transactions) with the data directory on the tree",
		files: func(*sizes) int { return 1 },
		setup: pgSetup,
		run:   pgRun,
		clean: pgClean,
	},
	{
		name: "read", what: "read a file with 1 MiB read(2)s after dropping the page cache, then again (cached)",
		files: func(*sizes) int { return 1 },
		setup: func(ctx context.Context, b *bench, dir string) error {
			if err := writeRandom(filepath.Join(dir, "read.bin"), b.sz.readBytes, b.random); err != nil {
				return err
			}
			return dropCaches()
		},
		run: func(ctx context.Context, b *bench, dir string, _ *target) (map[string]float64, error) {
			cold, err := readAll(filepath.Join(dir, "read.bin"))
			if err != nil {
				return nil, err
			}
			warm, err := readAll(filepath.Join(dir, "read.bin"))
			if err != nil {
				return nil, err
			}
			mb := float64(b.sz.readBytes) / 1e6
			return map[string]float64{"read_MBps": mb / cold.Seconds(), "reread_MBps": mb / warm.Seconds()}, nil
		},
		clean: func(ctx context.Context, b *bench, dir string) error {
			return os.Remove(filepath.Join(dir, "read.bin"))
		},
	},
	{
		name: "grep", what: "grep -r over the Go source tree after dropping the page cache, then again (cached)",
		files: func(s *sizes) int { return s.tarFiles },
		setup: func(ctx context.Context, b *bench, dir string) error {
			if _, err := run(ctx, dir, "tar", "-xf", b.sz.tarball); err != nil {
				return err
			}
			return dropCaches()
		},
		run: func(ctx context.Context, b *bench, dir string, _ *target) (map[string]float64, error) {
			var took [2]time.Duration
			for i := range took {
				start := time.Now()
				if _, err := run(ctx, dir, "grep", "-rlF", "package main", "src"); err != nil {
					return nil, err
				}
				took[i] = time.Since(start)
			}
			return map[string]float64{"grep_s": took[0].Seconds(), "regrep_s": took[1].Seconds()}, nil
		},
		clean: func(ctx context.Context, b *bench, dir string) error { return os.RemoveAll(filepath.Join(dir, "src")) },
	},
}

// sqliteWorkload commits n one-row transactions (autocommit INSERTs) to a
// database in journal mode mode with synchronous=FULL, through the
// sqlite3 shell: each commit is one fsync of the WAL (WAL), or several of
// the journal and the database (DELETE).
func sqliteWorkload(name, mode string) workload {
	db := name + ".db"
	return workload{
		name: name, what: fmt.Sprintf("SQLite commits, journal_mode=%s, synchronous=FULL, one 200-byte row each", mode),
		files: func(*sizes) int { return 1 },
		setup: func(ctx context.Context, b *bench, dir string) error {
			if _, err := exec.LookPath("sqlite3"); err != nil {
				return errSkip{"sqlite3 not installed"}
			}
			_, err := run(ctx, dir, "sqlite3", db, "PRAGMA journal_mode="+mode+"; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);")
			return err
		},
		run: func(ctx context.Context, b *bench, dir string, t *target) (map[string]float64, error) {
			n := b.boundByRTT(b.sz.sqliteCommits, t, 2)
			var script strings.Builder
			script.WriteString("PRAGMA journal_mode=" + mode + ";\nPRAGMA synchronous=FULL;\n")
			for range n {
				script.WriteString("INSERT INTO t(v) VALUES(randomblob(200));\n")
			}
			cmd := exec.CommandContext(ctx, "sqlite3", db)
			cmd.Dir, cmd.Stdin = dir, strings.NewReader(script.String())
			start := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("sqlite3: %w\n%s", err, tail(out))
			}
			return map[string]float64{"commits_per_s": float64(n) / time.Since(start).Seconds(), "commits": float64(n)}, nil
		},
		clean: func(ctx context.Context, b *bench, dir string) error {
			for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
				if err := os.Remove(filepath.Join(dir, db+suffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
			return nil
		},
	}
}

// errSkip says a workload cannot run here (a tool is missing): noted, not
// an error of the configuration.
type errSkip struct{ why string }

func (e errSkip) Error() string { return "skipped: " + e.why }

// boundByRTT bounds n operations that each wait for the slaves per round
// trip about perOp times, so that at 100 ms a workload stays within
// seconds.
func (b *bench) boundByRTT(n int, t *target, perOp int) int {
	if t != nil && t.cfg.rtt > 0 {
		n = min(n, max(10, int(5*time.Second/(time.Duration(perOp)*t.cfg.rtt))))
	}
	return n
}

// PostgreSQL runs as the user postgres (it refuses root): the data
// directory is theirs, and every directory above it must let them pass
// (the mounts are allow_other).
const pgUser = "postgres"

// pgBin finds PostgreSQL's server binaries (Debian keeps them out of PATH).
func pgBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	ms, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(ms) == 0 {
		return "", errSkip{"PostgreSQL (" + name + ") not installed"}
	}
	return ms[len(ms)-1], nil
}

// asPostgres runs a PostgreSQL tool as the postgres user in dir.
func asPostgres(ctx context.Context, dir, tool string, args ...string) (string, error) {
	bin, err := pgBin(tool)
	if err != nil {
		return "", err
	}
	return run(ctx, dir, "runuser", append([]string{"-u", pgUser, "--", bin}, args...)...)
}

func pgSetup(ctx context.Context, b *bench, dir string) error {
	for _, tool := range []string{"initdb", "pg_ctl", "pgbench"} {
		if _, err := pgBin(tool); err != nil {
			return err
		}
	}
	if err := openPath(b.root, dir); err != nil {
		return err
	}
	data, sock := filepath.Join(dir, "pgdata"), filepath.Join(b.root, "pgsock")
	for _, d := range []string{data, sock} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if _, err := run(ctx, "", "chown", pgUser+":", d); err != nil {
			return err
		}
	}
	if _, err := asPostgres(ctx, "/", "initdb", "-D", data, "--no-sync", "-A", "trust", "-U", pgUser); err != nil {
		return err
	}
	opts := fmt.Sprintf("-c listen_addresses='' -k %s -c fsync=on -c synchronous_commit=on -c shared_buffers=64MB", sock)
	if _, err := asPostgres(ctx, "/", "pg_ctl", "-D", data, "-w", "-t", "60", "-l", filepath.Join(sock, "pg.log"), "-o", opts, "start"); err != nil {
		return err
	}
	_, err := asPostgres(ctx, "/", "pgbench", "-h", sock, "-U", pgUser, "-i", "-s", "4", "-q", "postgres")
	return err
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

func pgRun(ctx context.Context, b *bench, dir string, t *target) (map[string]float64, error) {
	const clients = 4
	n := b.boundByRTT(b.sz.pgTransactions, t, 1)
	sock := filepath.Join(b.root, "pgsock")
	out, err := asPostgres(ctx, "/", "pgbench", "-h", sock, "-U", pgUser, "-c", strconv.Itoa(clients), "-j", "2",
		"-t", strconv.Itoa(n), "postgres")
	if err != nil {
		return nil, err
	}
	m := tpsRE.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("pgbench: no tps in its output:\n%s", tail([]byte(out)))
	}
	tps, _ := strconv.ParseFloat(m[1], 64)
	return map[string]float64{"tps": tps, "transactions": float64(clients * n)}, nil
}

func pgClean(ctx context.Context, b *bench, dir string) error {
	data := filepath.Join(dir, "pgdata")
	if _, err := os.Stat(filepath.Join(data, "postmaster.pid")); err == nil {
		if _, err := asPostgres(ctx, "/", "pg_ctl", "-D", data, "-w", "-m", "fast", "stop"); err != nil {
			return err
		}
	}
	os.RemoveAll(filepath.Join(b.root, "pgsock"))
	return os.RemoveAll(data)
}

// openPath lets other users pass through every directory from root (the
// bench's scratch dir, which MkdirTemp makes 0700) down to dir; nothing
// above root is changed.
func openPath(root, dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o011 != 0o011 {
			if err := os.Chmod(d, st.Mode().Perm()|0o011); err != nil {
				return err
			}
		}
		if d == root || d == filepath.Dir(d) {
			return nil
		}
	}
}

// dropCaches empties the page cache, so the next read of a file comes
// from its filesystem (for a FUSE mount: through the daemon). The backing
// dir on a tmpfs stays in memory: what is measured is the path through
// the mount.
func dropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}

// readAll reads name with 1 MiB reads and returns how long it took.
func readAll(name string) (time.Duration, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	start := time.Now()
	for {
		_, err := f.Read(buf)
		if err == io.EOF {
			return time.Since(start), nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// everyWorkload is the order of the report's tables.
func everyWorkload() []workload { return slices.Concat(allWorkloads, appWorkloads) }
