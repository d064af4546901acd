package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tdfs/tdfs/internal/treecmp"
	"github.com/tdfs/tdfs/internal/udprelay"
)

// config is one column of the matrix: where the workloads run and how.
type config struct {
	name  string
	kind  string // "plain", "loopback", "tdfs"
	note  string
	slave int    // tdfs: slaves
	sync  string // tdfs: --sync
	z     int    // tdfs: -z
	rtt   time.Duration
	loss  float64
	lanes int
	// pin: the slaves on the last CPU, the master (or the loopback
	// server) and the workload on the first, as on separate hosts.
	pin bool
	// passthrough: a loopback whose reads and writes the kernel does
	// itself (FUSE passthrough), what tdfs cannot use.
	passthrough bool
}

// target is a running configuration: the directory the workloads use, and
// the processes behind it.
type target struct {
	cfg     config
	work    string // this target's scratch dir
	dir     string // where workloads run
	backing string
	server  *proc // tdfs-master, or the loopback server
	slaves  []*slave
	relays  []*udprelay.Relay
	metrics string // master's metrics address
	counts  string // loopback: file its request counts are dumped to
}

type slave struct {
	p       *proc
	dir     string
	metrics string
}

var (
	listeningRE = regexp.MustCompile(`msg=listening .*?addr=(\S+)`)
	mountedRE   = regexp.MustCompile(`msg=mounted`)
	loopReadyRE = regexp.MustCompile(`loopback ready`)
)

func (b *bench) start(ctx context.Context, cfg config, round int) (*target, error) {
	t := &target{cfg: cfg, work: filepath.Join(b.root, fmt.Sprintf("%s.r%d", cfg.name, round))}
	t.backing = filepath.Join(t.work, "backing")
	if err := os.MkdirAll(t.backing, 0o755); err != nil {
		return nil, err
	}
	switch cfg.kind {
	case "plain":
		t.dir = t.backing
		return t, nil
	case "loopback":
		t.dir = filepath.Join(t.work, "mnt")
		t.counts = filepath.Join(t.work, "counts.json")
		os.Mkdir(t.dir, 0o755)
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		args := []string{"loopback", t.backing, t.dir, t.counts}
		if cfg.passthrough {
			args = slices.Insert(args, 1, "--passthrough")
		}
		t.server, err = startDaemon(b.daemonOpts(t, "loopback"), "loopback", filepath.Join(t.work, "loopback.log"), self, args...)
		if err != nil {
			return nil, err
		}
		if _, err := t.server.waitLog(loopReadyRE, 30*time.Second); err != nil {
			t.stop()
			return nil, err
		}
		return t, nil
	}
	if err := t.startTDFS(b); err != nil {
		t.stop()
		return nil, err
	}
	return t, nil
}

// daemonOpts places one of t's daemons (role "master", "loopback",
// "slaveN"): with t.cfg.pin the slaves on the last CPU, the rest on the
// first; with --profile a CPU profile per daemon and round.
func (b *bench) daemonOpts(t *target, role string) daemonOpts {
	var o daemonOpts
	if t.cfg.pin {
		o.cpus = "0"
		if strings.HasPrefix(role, "slave") {
			o.cpus = strconv.Itoa(runtime.NumCPU() - 1)
		}
	}
	if b.profile != "" {
		o.profile = filepath.Join(b.profile, filepath.Base(t.work)+"."+role+".pprof")
	}
	return o
}

func (t *target) startTDFS(b *bench) error {
	cfg := t.cfg
	var conns []string
	for i := range cfg.slave {
		s := &slave{dir: filepath.Join(t.work, fmt.Sprintf("slave%d", i+1))}
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return err
		}
		var err error
		if s.metrics, err = freePort(); err != nil {
			return err
		}
		name := fmt.Sprintf("slave%d", i+1)
		s.p, err = startDaemon(b.daemonOpts(t, name), name, filepath.Join(t.work, name+".log"), filepath.Join(b.bin, "tdfs-slave"),
			"-m", s.dir, "--listen", "127.0.0.1:0", "--state", s.dir+".state",
			"--cert", filepath.Join(b.pki, name+".crt"), "--key", filepath.Join(b.pki, name+".key"),
			"--ca", filepath.Join(b.pki, "ca.crt"), "--metrics-addr", s.metrics, "--max-handles", "16000")
		if err != nil {
			return err
		}
		t.slaves = append(t.slaves, s)
		m, err := s.p.waitLog(listeningRE, 30*time.Second)
		if err != nil {
			return err
		}
		addr := m[1]
		if cfg.rtt > 0 || cfg.loss > 0 {
			r, err := udprelay.New(addr)
			if err != nil {
				return err
			}
			r.SetDelay(cfg.rtt / 2)
			r.SetLoss(cfg.loss)
			t.relays = append(t.relays, r)
			addr = r.Addr()
		}
		conns = append(conns, "-c", addr)
	}
	var err error
	if t.metrics, err = freePort(); err != nil {
		return err
	}
	t.dir = filepath.Join(t.work, "mnt")
	os.Mkdir(t.dir, 0o755)
	args := []string{"-m", t.backing, "--mount", t.dir, "--journal", filepath.Join(t.work, "journal"),
		"--cert", filepath.Join(b.pki, "master.crt"), "--key", filepath.Join(b.pki, "master.key"),
		"--ca", filepath.Join(b.pki, "ca.crt"), "-z", strconv.Itoa(cfg.z), "--sync", cfg.sync,
		"--metrics-addr", t.metrics, "--allow-other"} // allow-other: PostgreSQL runs as its own user
	if cfg.lanes > 1 {
		args = append(args, "--lanes", strconv.Itoa(cfg.lanes))
	}
	if cfg.slave == 0 {
		// One slave configured, none listening: every op goes to the
		// journal only. What is left is the mount's own cost.
		port, err := freePort()
		if err != nil {
			return err
		}
		conns = []string{"-c", port}
	}
	args = append(args, conns...)
	t.server, err = startDaemon(b.daemonOpts(t, "master"), "tdfs-master", filepath.Join(t.work, "master.log"), filepath.Join(b.bin, "tdfs-master"), args...)
	if err != nil {
		return err
	}
	if _, err := t.server.waitLog(mountedRE, 30*time.Second); err != nil {
		return err
	}
	_, err = t.quiesce(60 * time.Second)
	return err
}

// quiesce waits until every slave has applied every op the master has
// numbered, and returns when that was seen.
func (t *target) quiesce(timeout time.Duration) (time.Time, error) {
	if len(t.slaves) == 0 {
		return time.Now(), nil
	}
	head, _, err := scrape(t.metrics, "tdfs_master_head_seq")
	if err != nil {
		return time.Time{}, fmt.Errorf("master metrics: %w", err)
	}
	for _, s := range t.slaves {
		err := waitFor(timeout, func() (bool, error) {
			if s.p.exited() {
				return false, fmt.Errorf("%s exited: %v", s.p.name, s.p.err)
			}
			if t.server.exited() {
				return false, fmt.Errorf("tdfs-master exited: %v", t.server.err)
			}
			seq, err := slaveSeq(s.metrics)
			return err == nil && float64(seq) >= head, nil
		})
		if err != nil {
			return time.Time{}, fmt.Errorf("%s to reach op %.0f: %w", s.p.name, head, err)
		}
	}
	return time.Now(), nil
}

// counters is what a target has done so far: FUSE requests, bytes sent
// to the slaves (per slave), and the CPU and peak memory of its processes.
type counters struct {
	fuseReqs  float64
	wireBytes float64
	server    usage
	slaves    usage // CPU summed, peak the highest
}

func (t *target) resetPeaks() {
	if t.server != nil {
		resetPeak(t.server.pid())
	}
	for _, s := range t.slaves {
		resetPeak(s.p.pid())
	}
}

func (t *target) counters(b *bench) counters {
	var c counters
	if t.server != nil {
		c.server = readUsage(t.server.pid())
	}
	for _, s := range t.slaves {
		u := readUsage(s.p.pid())
		c.slaves.cpu += u.cpu
		c.slaves.faults += u.faults
		c.slaves.peakRSS = max(c.slaves.peakRSS, u.peakRSS)
	}
	switch t.cfg.kind {
	case "loopback":
		c.fuseReqs = t.loopbackRequests()
	case "tdfs":
		c.fuseReqs, _, _ = scrape(t.metrics, "tdfs_master_fuse_requests_total")
		if len(t.slaves) > 0 {
			c.wireBytes = t.wireBytes(b) / float64(len(t.slaves))
		}
	}
	return c
}

// loopbackRequests asks the loopback server to dump its request counts
// (SIGUSR1) and sums them.
func (t *target) loopbackRequests() float64 {
	os.Remove(t.counts)
	t.server.cmd.Process.Signal(sigDump)
	var total float64
	waitFor(5*time.Second, func() (bool, error) {
		b, err := os.ReadFile(t.counts)
		if err != nil {
			return false, nil
		}
		var m map[string]uint64
		if json.Unmarshal(b, &m) != nil {
			return false, nil
		}
		for _, v := range m {
			total += float64(v)
		}
		return true, nil
	})
	return total
}

// wireBytes is the QUIC bytes the master sent to all slaves so far, from
// its status.
func (t *target) wireBytes(b *bench) float64 {
	out, err := exec.Command(filepath.Join(b.bin, "tdfs-master"), "status", "--json",
		"--admin-socket", filepath.Join(t.work, "journal", "admin.sock")).Output()
	if err != nil {
		return -1
	}
	var st struct {
		Slaves []map[string]any `json:"slaves"`
	}
	if json.Unmarshal(out, &st) != nil {
		return -1
	}
	total := 0.0
	for _, s := range st.Slaves {
		v, ok := s["wire_bytes_sent"].(float64)
		if !ok {
			return -1
		}
		total += v
	}
	return total
}

// verify compares every slave with the backing dir.
func (t *target) verify() error {
	for _, s := range t.slaves {
		d, err := treecmp.Diff(t.backing, s.dir, treecmp.Options{MaxDiffs: 5})
		if err != nil {
			return err
		}
		if d != "" {
			return fmt.Errorf("%s differs from the master:\n%s", s.p.name, d)
		}
	}
	return nil
}

// stop ends the processes (the master first, so it drains) and removes
// the target's files.
func (t *target) stop() error {
	var errs []error
	if t.server != nil {
		if err := t.server.stop(60 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.server.name, err))
		}
		unmountIfMounted(t.dir)
	}
	for _, s := range t.slaves {
		if err := s.p.stop(30 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.p.name, err))
		}
	}
	for _, r := range t.relays {
		r.Close()
	}
	if err := os.RemoveAll(t.work); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
