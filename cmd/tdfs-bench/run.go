package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// bench is one run of tdfs-bench.
type bench struct {
	quick   bool
	root    string // scratch dir, removed at the end
	bin     string
	pki     string
	out     string
	sz      sizes
	random  []byte // incompressible data, cycled through
	results []result
	quics   []quicResult
	notes   []string
	profile string // --profile: the daemons' CPU profiles go here
}

// result is one workload on one configuration in one round.
type result struct {
	Config    string             `json:"config"`
	Workload  string             `json:"workload"`
	Round     int                `json:"round"`
	MasterSec float64            `json:"master_seconds"`     // the workload's own time
	ReplSec   float64            `json:"replicated_seconds"` // from its start until every slave applied it (0: none)
	WireBytes float64            `json:"wire_bytes"`         // QUIC bytes per slave (-1 unknown)
	FuseReqs  float64            `json:"fuse_requests"`      // FUSE requests during the workload (-1 unknown)
	Files     int                `json:"files"`
	ServerRSS int64              `json:"master_peak_rss"` // the master (or loopback server)
	SlaveRSS  int64              `json:"slave_peak_rss"`
	ServerCPU float64            `json:"master_cpu_seconds"`
	SlaveCPU  float64            `json:"slave_cpu_seconds"` // all slaves
	Extra     map[string]float64 `json:"extra,omitempty"`
	Verify    string             `json:"verify,omitempty"` // "" when every slave matched
	Err       string             `json:"error,omitempty"`
	skip      bool               // the workload cannot run here (errSkip): a note, not a result
}

type quicResult struct {
	Name  string        `json:"name"`
	Conns int           `json:"connections"`
	RTT   time.Duration `json:"rtt"`
	Loss  float64       `json:"loss"`
	MBps  float64       `json:"mb_per_second"`
	Round int           `json:"round"`
}

func (b *bench) configs() []config {
	def := config{kind: "tdfs", slave: 1, sync: "fsync", z: 0}
	with := func(name, note string, f func(*config)) config {
		c := def
		c.name, c.note = name, note
		f(&c)
		return c
	}
	cs := []config{
		{name: "plain", kind: "plain", note: "the backing directory itself, no FUSE"},
		{name: "loopback", kind: "loopback", note: "bare go-fuse loopback, tdfs's mount options, no replication"},
		{name: "passthrough", kind: "loopback", passthrough: true,
			note: "the bare loopback with FUSE passthrough: the kernel reads and writes the backing files itself (not usable by tdfs)"},
		with("tdfs", "1 slave, --sync fsync, -z 0, 0 ms", func(*config) {}),
		with("noslave", "its slave down: ops go to the journal only (the mount's own cost)", func(c *config) { c.slave = 0 }),
		with("async", "--sync async", func(c *config) { c.sync = "async" }),
		with("z1", "-z 1", func(c *config) { c.z = 1 }),
		with("rtt100", "100 ms round trip (userspace relay)", func(c *config) { c.rtt = 100 * time.Millisecond }),
		with("rtt100-lanes4", "100 ms round trip, --lanes 4", func(c *config) { c.rtt, c.lanes = 100*time.Millisecond, 4 }),
		with("wan-lanes1", "40 ms, 0.1% loss, --lanes 1", func(c *config) { c.rtt, c.loss, c.lanes = 40*time.Millisecond, 0.001, 1 }),
		with("wan-lanes4", "40 ms, 0.1% loss, --lanes 4", func(c *config) { c.rtt, c.loss, c.lanes = 40*time.Millisecond, 0.001, 4 }),
	}
	// Pinned: the slave on one CPU, the master (or loopback) and the
	// workload on another, as on separate hosts (needs 2 CPUs).
	if runtime.NumCPU() >= 2 {
		cs = append(cs,
			config{name: "loopback-pin", kind: "loopback", pin: true, note: "the bare loopback and the workload on CPU 0"},
			with("tdfs-pin", "1 slave, --sync fsync; the slave on the last CPU, the master and the workload on CPU 0", func(c *config) { c.pin = true }),
			with("noslave-pin", "its slave down, the master and the workload on CPU 0", func(c *config) { c.pin, c.slave = true, 0 }),
			with("async-pin", "--sync async, pinned as tdfs-pin", func(c *config) { c.pin, c.sync = true, "async" }))
	}
	if !b.quick {
		cs = slices.Insert(cs, 4,
			with("2slaves", "2 slaves", func(c *config) { c.slave = 2 }),
			with("sync", "--sync sync", func(c *config) { c.sync = "sync" }))
		cs = slices.Insert(cs, 8,
			with("rtt0relay", "0 ms through the relay (the relay's own cost)", func(c *config) { c.rtt = time.Nanosecond }),
			with("rtt20", "20 ms round trip", func(c *config) { c.rtt = 20 * time.Millisecond }))
	}
	return cs
}

// workloadsFor: the lossy WAN configurations run the sequential write
// only, smaller (they carry a few MB/s).
func (b *bench) workloadsFor(c config) []workload {
	if c.loss > 0 {
		return []workload{allWorkloads[0]}
	}
	return slices.Concat(allWorkloads, appWorkloads)
}

func runBench(c *cli.Context) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (FUSE mounts): run sudo make bench")
	}
	b := &bench{quick: c.Bool("quick"), out: c.String("out")}
	var err error
	if p := c.String("profile"); p != "" {
		if b.profile, err = filepath.Abs(p); err == nil {
			err = os.MkdirAll(b.profile, 0o755)
		}
		if err != nil {
			return fmt.Errorf("--profile: %w", err)
		}
	}
	if b.bin, err = filepath.Abs(c.String("bin")); err != nil {
		return err
	}
	for _, p := range []string{"tdfs-master", "tdfs-slave", "tdfs-certs"} {
		if _, err := os.Stat(filepath.Join(b.bin, p)); err != nil {
			return fmt.Errorf("%s: %w (run make build, or give --bin)", p, err)
		}
	}
	rounds := c.Int("rounds")
	if rounds == 0 {
		rounds = 1 // a full round takes about 13 minutes on 2 vCPUs
	}
	if b.root, err = os.MkdirTemp(c.String("dir"), "tdfs-bench."); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	defer os.RemoveAll(b.root)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := b.prepare(ctx); err != nil {
		return err
	}
	only := splitList(c.String("only"))
	wls := splitList(c.String("workloads"))
	var cfgs []config
	for _, cf := range b.configs() {
		if len(only) == 0 || slices.Contains(only, cf.name) {
			cfgs = append(cfgs, cf)
		}
	}
	peers := !c.Bool("no-peers") && (len(only) == 0 || slices.Contains(only, "rsync") || slices.Contains(only, "lsyncd"))
	if peers && (len(wls) == 0 || slices.Contains(wls, "untar")) {
		if why := havePeers(ctx); why != "" {
			b.notes = append(b.notes, "peers skipped: "+why)
			peers = false
		}
	}
	started := time.Now()
	for round := 1; round <= rounds; round++ {
		b.logf("round %d of %d", round, rounds)
		if len(only) == 0 || slices.Contains(only, "quic") {
			b.measureQUIC(ctx, round)
		}
		for _, cf := range cfgs {
			if err := ctx.Err(); err != nil {
				return err
			}
			b.runConfig(ctx, cf, round, wls)
		}
		if peers && (len(wls) == 0 || slices.Contains(wls, "untar")) {
			for _, f := range []func(context.Context, int) (result, error){b.benchRsync, b.benchLsyncd} {
				r, err := f(ctx, round)
				if err != nil {
					r.Err = err.Error()
				}
				b.logf("%-10s %-9s %s", r.Config, r.Workload, r.brief())
				b.results = append(b.results, r)
			}
		}
	}
	b.notes = append(b.notes, fmt.Sprintf("run took %s on %d CPUs (%s, %s); backing dirs under %s",
		time.Since(started).Round(time.Second), runtime.NumCPU(), runtime.GOOS, kernel(), c.String("dir")))
	return b.report()
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func kernel() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return "?"
	}
	var s []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return "Linux " + string(s)
}

// note adds a line to the report's notes, once.
func (b *bench) note(line string) {
	if !slices.Contains(b.notes, line) {
		b.notes = append(b.notes, line)
	}
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "tdfs-bench: "+format+"\n", args...)
}

// prepare makes the certificates, the random data and the tarball.
func (b *bench) prepare(ctx context.Context) error {
	b.sz = sizesFor(b.quick)
	b.pki = filepath.Join(b.root, "pki")
	certsBin := filepath.Join(b.bin, "tdfs-certs")
	steps := [][]string{{"ca", "--dir", b.pki}, {"master", "--dir", b.pki, "master"}}
	for i := 1; i <= 2; i++ {
		steps = append(steps, []string{"slave", "--dir", b.pki, fmt.Sprintf("slave%d", i), "127.0.0.1", "localhost"})
	}
	for _, s := range steps {
		if _, err := run(ctx, "", certsBin, s...); err != nil {
			return err
		}
	}
	b.random = make([]byte, 64<<20)
	r := rand.NewChaCha8([32]byte{'t', 'd', 'f', 's'})
	r.Read(b.random)
	if err := b.warmUp(); err != nil {
		return err
	}

	goroot, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	if err != nil {
		return fmt.Errorf("go env GOROOT (the untar workload uses the Go toolchain's src): %w", err)
	}
	src := filepath.Join(strings.TrimSpace(string(goroot)), "src")
	b.sz.tarball = filepath.Join(b.root, "src.tar")
	parts := []string{"src"}
	if b.quick {
		parts = []string{"src/net", "src/crypto", "src/runtime"}
	}
	if _, err := run(ctx, filepath.Dir(src), "tar", append([]string{"-cf", b.sz.tarball}, parts...)...); err != nil {
		return err
	}
	out, err := run(ctx, "", "tar", "-tf", b.sz.tarball)
	if err != nil {
		return err
	}
	b.sz.tarFiles = strings.Count(out, "\n")
	st, _ := os.Stat(b.sz.tarball)
	b.notes = append(b.notes, fmt.Sprintf("untar: %s of %s (%d entries, %d MB)", strings.Join(parts, " "),
		filepath.Dir(src), b.sz.tarFiles, st.Size()/1e6))
	return nil
}

func sizesFor(quick bool) sizes {
	if quick {
		return sizes{seqBytes: 128 << 20, dbIters: 300, renameN: 2000, copyBytes: 64 << 20, quicTime: 2 * time.Second, dbFileSize: 16 << 20,
			readBytes: 128 << 20, sqliteCommits: 500, pgTransactions: 250}
	}
	return sizes{seqBytes: 1 << 30, dbIters: 2000, renameN: 10000, copyBytes: 256 << 20, quicTime: 5 * time.Second, dbFileSize: 64 << 20,
		readBytes: 512 << 20, sqliteCommits: 2000, pgTransactions: 1000}
}

// warmUp writes and removes a file as large as the most memory a round
// uses. In a virtual machine whose memory the host backs on first touch
// (Firecracker, here), the first workload that needs more pages than any
// before it paid that cost: the first tdfs configuration's 1 GiB write (backing
// file, journal and slave copy) took 14 s against 5 s in later rounds.
const tmpfsMagic = 0x01021994

func (b *bench) warmUp() error {
	size := int64(6 << 30)
	if b.quick {
		size = 1 << 30
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(b.root, &st); err != nil || st.Type != tmpfsMagic {
		return nil // on a disk, writing gigabytes warms little and takes long
	}
	start := time.Now()
	name := filepath.Join(b.root, "warm-up")
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	defer os.Remove(name)
	buf := make([]byte, 4<<20)
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			// a small BENCH_DIR only warms what fits; the workloads will tell
			b.notes = append(b.notes, fmt.Sprintf("warm-up stopped after %d MiB: %v", n>>20, err))
			return nil
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	b.notes = append(b.notes, fmt.Sprintf("warm-up: wrote and removed %d GiB in %s first (memory a VM's host backs on first touch)",
		size>>30, time.Since(start).Round(100*time.Millisecond)))
	return nil
}

// measureQUIC measures the transport ceilings of this round.
func (b *bench) measureQUIC(ctx context.Context, round int) {
	cases := []quicResult{
		{Name: "direct", Conns: 1},
		{Name: "rtt100", Conns: 1, RTT: 100 * time.Millisecond},
		{Name: "wan-1conn", Conns: 1, RTT: 40 * time.Millisecond, Loss: 0.001},
		{Name: "wan-4conns", Conns: 4, RTT: 40 * time.Millisecond, Loss: 0.001},
	}
	if !b.quick {
		cases = slices.Insert(cases, 1, quicResult{Name: "relay0", Conns: 1, RTT: time.Nanosecond})
	}
	for _, q := range cases {
		q.Round = round
		d := b.sz.quicTime
		if q.Loss > 0 {
			d *= 3 // a few MB/s: slow start would otherwise weigh too much
		}
		bps, err := b.quicCeiling(ctx, q.Conns, q.RTT, q.Loss, d)
		if err != nil {
			b.notes = append(b.notes, fmt.Sprintf("raw QUIC %s: %v", q.Name, err))
			continue
		}
		q.MBps = bps / 1e6
		b.logf("quic %-10s %7.1f MB/s", q.Name, q.MBps)
		b.quics = append(b.quics, q)
	}
}

// runConfig starts one configuration and runs its workloads in order.
func (b *bench) runConfig(ctx context.Context, cf config, round int, only []string) {
	if cf.pin {
		// The workloads run in this process and in the commands it
		// starts, which inherit its affinity.
		if err := pinProcess(0); err != nil {
			b.note("pinning: " + err.Error())
		}
		defer pinProcess(-1)
	}
	t, err := b.start(ctx, cf, round)
	if err != nil {
		b.notes = append(b.notes, fmt.Sprintf("%s round %d did not start: %v", cf.name, round, firstLine(err.Error())))
		b.logf("%-10s start: %v", cf.name, err)
		return
	}
	defer func() {
		if err := t.stop(); err != nil {
			b.notes = append(b.notes, fmt.Sprintf("%s round %d: stop: %v", cf.name, round, err))
		}
	}()
	for _, w := range b.workloadsFor(cf) {
		if len(only) > 0 && !slices.Contains(only, w.name) {
			continue
		}
		r := b.runWorkload(ctx, t, w, round)
		if r.skip {
			b.note(w.name + ": " + r.Err)
			continue
		}
		b.logf("%-10s %-9s %s", cf.name, w.name, r.brief())
		b.results = append(b.results, r)
		if r.Err != "" && t.server != nil && t.server.exited() {
			return
		}
	}
}

const quiesceTimeout = 5 * time.Minute

func (b *bench) runWorkload(ctx context.Context, t *target, w workload, round int) result {
	r := result{Config: t.cfg.name, Workload: w.name, Round: round, Files: w.files(&b.sz)}
	fail := func(err error) result {
		r.Err = err.Error()
		r.skip = errors.As(err, new(errSkip))
		if w.clean != nil {
			w.clean(ctx, b, t.dir) // best effort: a database server must not outlive its mount
		}
		return r
	}
	sz := b.sz
	if t.cfg.loss > 0 {
		// A lossy WAN carries a few MB/s: keep the write to tens of
		// seconds, long enough that slow start does not decide it.
		b.sz.seqBytes = min(b.sz.seqBytes, 96<<20)
		if b.quick {
			b.sz.seqBytes = 16 << 20
		}
		defer func() { b.sz = sz }()
	}
	if w.name == "rmtree" {
		if _, err := os.Stat(filepath.Join(t.dir, "src")); err != nil {
			if _, err := run(ctx, t.dir, "tar", "-xf", b.sz.tarball); err != nil {
				return fail(err)
			}
		}
	}
	if w.setup != nil {
		if err := w.setup(ctx, b, t.dir); err != nil {
			return fail(fmt.Errorf("setup: %w", err))
		}
	}
	if _, err := t.quiesce(quiesceTimeout); err != nil {
		return fail(err)
	}
	t.resetPeaks()
	c0 := t.counters(b)
	start := time.Now()
	extra, err := w.run(ctx, b, t.dir, t)
	r.MasterSec = time.Since(start).Seconds()
	if err != nil {
		return fail(err)
	}
	done, err := t.quiesce(quiesceTimeout)
	if err != nil {
		return fail(err)
	}
	if len(t.slaves) > 0 {
		r.ReplSec = done.Sub(start).Seconds()
		if w.name == "seqwrite" {
			extra["replicated_MBps"] = float64(b.sz.seqBytes) / 1e6 / r.ReplSec
		}
	}
	c1 := t.counters(b)
	r.Extra = extra
	r.FuseReqs, r.WireBytes = -1, -1
	if t.cfg.kind != "plain" && c1.fuseReqs > 0 {
		r.FuseReqs = c1.fuseReqs - c0.fuseReqs
	}
	if c0.wireBytes >= 0 && c1.wireBytes >= 0 && len(t.slaves) > 0 {
		r.WireBytes = c1.wireBytes - c0.wireBytes
	}
	r.ServerRSS, r.SlaveRSS = c1.server.peakRSS, c1.slaves.peakRSS
	r.ServerCPU, r.SlaveCPU = c1.server.cpu-c0.server.cpu, c1.slaves.cpu-c0.slaves.cpu
	if t.server != nil {
		// Page faults: memory touched for the first time (or again after
		// the runtime gave it back), a cost the CPU seconds hide in the
		// kernel.
		if r.Extra == nil {
			r.Extra = map[string]float64{}
		}
		r.Extra["master_faults"] = c1.server.faults - c0.server.faults
		if len(t.slaves) > 0 {
			r.Extra["slave_faults"] = c1.slaves.faults - c0.slaves.faults
		}
	}
	if err := t.verify(); err != nil {
		r.Verify = err.Error()
	}
	if w.clean != nil {
		if err := w.clean(ctx, b, t.dir); err != nil {
			return fail(fmt.Errorf("clean: %w", err))
		}
	}
	return r
}

func (r result) brief() string {
	if r.Err != "" {
		return "ERROR " + r.Err
	}
	s := fmt.Sprintf("master %.3fs", r.MasterSec)
	if r.ReplSec > 0 {
		s += fmt.Sprintf(" replicated %.3fs", r.ReplSec)
	}
	if r.WireBytes >= 0 {
		s += fmt.Sprintf(" wire %s", bytesStr(r.WireBytes))
	}
	if r.FuseReqs >= 0 && r.Files > 0 {
		s += fmt.Sprintf(" req/file %.1f", r.FuseReqs/float64(r.Files))
	}
	for _, k := range slices.Sorted(maps.Keys(r.Extra)) {
		s += fmt.Sprintf(" %s %.1f", k, r.Extra[k])
	}
	if r.Verify != "" {
		s += " VERIFY: " + r.Verify
	}
	return s
}

func bytesStr(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}

// pinProcess sets the CPU affinity of every thread of this process to CPU
// cpu (-1: all CPUs). A thread the runtime starts later inherits it from
// the thread that starts it, and so do the commands the workloads run.
func pinProcess(cpu int) error {
	var set unix.CPUSet
	if cpu < 0 {
		for i := range runtime.NumCPU() {
			set.Set(i)
		}
	} else {
		set.Set(cpu)
	}
	// Twice: a thread started while the first pass ran may have copied
	// the old affinity.
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, t := range tasks {
			if tid, err := strconv.Atoi(t.Name()); err == nil {
				unix.SchedSetaffinity(tid, &set)
			}
		}
	}
	return nil
}
