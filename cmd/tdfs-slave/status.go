package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/cmd/internal/metrics"
	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/slave"
)

// Where the slave stands, for people (tdfs-slave status, through a unix
// socket in the state dir that only its user may use), for load balancers
// (/seq on --metrics-addr: read-your-writes routing; /healthz), for
// scripts (status --check, /status) and for Prometheus (/metrics).

// slaveStatus is the answer of status, /seq and `status --json`.
type slaveStatus struct {
	Dir       string `json:"dir"`
	Addr      string `json:"addr"`
	Master    string `json:"master,omitempty"` // connected now: address and certificate name
	Epoch     string `json:"epoch"`            // the master epoch it follows ("" if none yet)
	Applied   uint64 `json:"applied_seq"`
	Durable   uint64 `json:"durable_seq"`
	Resyncing bool   `json:"resyncing"`
	// Policy: what the replica holds beyond ordinary entries, as
	// announced to the master (whose mount refuses the rest).
	Policy string `json:"policy"`
	// Stalled: why it cannot apply the next op (disk full...), since
	// StalledSince; "" when it can.
	Stalled      string            `json:"stalled,omitempty"`
	StalledSince *time.Time        `json:"stalled_since,omitempty"`
	LastOp       *time.Time        `json:"last_op,omitempty"`
	Ops          map[string]uint64 `json:"ops,omitempty"`      // applied since the start, by type
	Refusals     map[string]uint64 `json:"refusals,omitempty"` // master connections closed, by reason
}

// live gathers the running slave's status.
type live struct {
	dir string
	h   *slave.Replica
	srv *quictransport.Slave
}

func (l *live) status() slaveStatus {
	st := l.h.State()
	out := slaveStatus{Dir: l.dir, Addr: l.srv.Addr().String(), Master: l.srv.Master(), Applied: st.Applied,
		Durable: st.Durable, Resyncing: st.Resyncing, Policy: l.h.Policy().String(), Refusals: l.srv.Refusals()}
	if st.Epoch != ([16]byte{}) {
		out.Epoch = hex.EncodeToString(st.Epoch[:])
	}
	if msg, since := l.srv.Stalled(); msg != "" {
		t := since.UTC().Round(time.Millisecond)
		out.Stalled, out.StalledSince = msg, &t
	}
	last, ops := l.h.Activity()
	if !last.IsZero() {
		t := last.UTC().Round(time.Millisecond)
		out.LastOp = &t
	}
	if len(ops) > 0 {
		out.Ops = ops
	}
	return out
}

// listenAdmin serves status on the admin socket until the listener is
// closed.
func listenAdmin(stateDir string, l *live) (net.Listener, error) {
	ln, err := daemon.ListenAdmin(filepath.Join(stateDir, daemon.AdminSocketName))
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			json.NewEncoder(c).Encode(l.status())
			c.Close()
		}
	}()
	return ln, nil
}

// serveMetrics serves /metrics, /seq, /status and /healthz on addr until
// ctx ends.
func serveMetrics(ctx context.Context, addr string, l *live, log *slog.Logger) error {
	reg := metrics.NewRegistry()
	reg.MustRegister(newSlaveCollector(l))
	seq := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(l.status())
	})
	handlers := metrics.StatusHandlers(l.status, func(st slaveStatus, _ url.Values) ([]string, error) {
		return slaveProblems(st), nil
	})
	handlers["/seq"] = seq
	bound, err := metrics.Serve(ctx, addr, reg, handlers, log)
	if err != nil {
		return err
	}
	log.Info("metrics", "url", "http://"+bound+"/metrics", "seq", "http://"+bound+"/seq")
	return nil
}

type slaveCollector struct {
	l                                   *live
	applied, durable, lastOp, resyncing *prometheus.Desc
	connected, opsTotal, refusalsTotal  *prometheus.Desc
	stalled                             *prometheus.Desc
}

func newSlaveCollector(l *live) *slaveCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tdfs_slave_"+name, help, labels, nil)
	}
	return &slaveCollector{l: l,
		applied:       d("applied_seq", "Highest sequence applied."),
		durable:       d("durable_seq", "Highest sequence made durable."),
		lastOp:        d("last_op_timestamp_seconds", "When the last operation was applied (0: none since the start)."),
		resyncing:     d("resyncing", "1 while the tree is of unknown state, until a resync pass ends."),
		connected:     d("master_connected", "1 while a master is connected."),
		stalled:       d("stalled", "1 while the slave cannot apply the next op for want of a resource (disk full...)."),
		opsTotal:      d("ops_applied_total", "Operations applied since the start, by type.", "type"),
		refusalsTotal: d("refusals_total", "Master connections this slave closed, by reason.", "reason"),
	}
}

func (c *slaveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.applied, c.durable, c.lastOp, c.resyncing, c.connected, c.opsTotal, c.refusalsTotal, c.stalled} {
		ch <- d
	}
}

func (c *slaveCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.l.status()
	g := prometheus.GaugeValue
	ch <- prometheus.MustNewConstMetric(c.applied, g, float64(st.Applied))
	ch <- prometheus.MustNewConstMetric(c.durable, g, float64(st.Durable))
	var last float64
	if st.LastOp != nil {
		last = float64(st.LastOp.UnixNano()) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(c.lastOp, g, last)
	ch <- prometheus.MustNewConstMetric(c.resyncing, g, b2f(st.Resyncing))
	ch <- prometheus.MustNewConstMetric(c.connected, g, b2f(st.Master != ""))
	ch <- prometheus.MustNewConstMetric(c.stalled, g, b2f(st.Stalled != ""))
	for t, n := range st.Ops {
		ch <- prometheus.MustNewConstMetric(c.opsTotal, prometheus.CounterValue, float64(n), t)
	}
	for r, n := range st.Refusals {
		ch <- prometheus.MustNewConstMetric(c.refusalsTotal, prometheus.CounterValue, float64(n), r)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show where a running slave stands, or check that all is well",
		UsageText: "tdfs-slave status [-m DIR] [--state DIR | --admin-socket PATH | --config FILE] [--json] [--check]\n" +
			"   [--watch [--interval DURATION]]",
		Description: "status asks the tdfs-slave running on DIR (through the socket " + daemon.AdminSocketName + " in its state dir,\n" +
			"which only the slave's user may use) for the master connected now, the master epoch it follows, the\n" +
			"last op it applied and made durable, whether it is resyncing, and when it applied its last op. It\n" +
			"changes nothing. For load balancers the same is served as JSON at /seq and /status on --metrics-addr.\n" +
			"With --config, the slave is found as tdfs-slave --config FILE would run (its dir and state dir); -m\n" +
			"and --state override the file.\n\n" +
			"--check prints one line per problem, or ok: the slave is stalled (it cannot apply the next op: its\n" +
			"disk full...), resyncing, or no master is connected. The metrics listener serves the same at /healthz.\n\n" +
			"--watch prints again every --interval (2s) until interrupted, as watch(1) does: redrawn in place\n" +
			"on a terminal, snapshots separated by a blank line elsewhere; SIGINT or SIGTERM ends it (exit 0).\n\n" +
			"Exit codes: 0 the answer was printed, 1 no slave answers (or bad flags), 2 the answer was garbled.\n" +
			"With --check: 0 all is well, 1 a problem was found (or bad flags), 2 no slave answers.",
		OnUsageError: daemon.OnUsageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Aliases: []string{"m"}, EnvVars: []string{"TDFS_DIR"},
				Usage: "replica `DIR` of the running slave"},
			&cli.StringFlag{Name: "state", EnvVars: []string{"TDFS_STATE"},
				Usage: "the slave's state `DIR`, if it was given one (default " + defaultStateRoot + "/<DIR with / as _>)"},
			&cli.StringFlag{Name: "admin-socket", EnvVars: []string{"TDFS_ADMIN_SOCKET"}, TakesFile: true,
				Usage: "the slave's admin socket `PATH` (default: " + daemon.AdminSocketName + " in its state dir; then -m is not needed)"},
			&cli.StringFlag{Name: "config", EnvVars: []string{"TDFS_CONFIG"}, TakesFile: true,
				Usage: "find the slave that tdfs-slave --config `FILE` runs: its -m and --state (-m and --state given here override them)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON (one object; with --watch one per line)"},
			&cli.BoolFlag{Name: "check", Usage: "print the problems (or ok) and exit 0 when all is well, 1 on a problem, 2 when no slave answers"},
			&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Usage: "print again every --interval until interrupted"},
			&cli.DurationFlag{Name: "interval", Aliases: []string{"n"}, Value: 2 * time.Second,
				Usage: "with --watch: print every `DURATION`"},
			&cli.IntFlag{Name: "count", Usage: "with --watch: stop after `N` snapshots, exiting as the last one would"},
		},
		Action: runStatus,
	}
}

// slaveProblems lists what status --check and /healthz report.
func slaveProblems(st slaveStatus) []string {
	var out []string
	if st.Stalled != "" {
		msg := "stalled: " + st.Stalled
		if st.StalledSince != nil {
			msg = fmt.Sprintf("stalled for %s: %s", time.Since(*st.StalledSince).Round(time.Second), st.Stalled)
		}
		out = append(out, msg)
	}
	if st.Resyncing {
		out = append(out, "resyncing: the tree is of unknown state until the master's resync pass ends")
	}
	if st.Master == "" {
		out = append(out, "no master connected")
	}
	return out
}

// runStatus is the status command.
func runStatus(c *cli.Context) error {
	name := "tdfs-slave status"
	watch, every, err := metrics.WatchFlags(c)
	if err != nil {
		return cli.Exit(name+": "+err.Error(), daemon.ExitUsage)
	}
	sock, err := daemon.AdminSocket(c, func() *cli.App { return newApp(io.Discard) }, "state", defaultStateRoot)
	if err != nil {
		return cli.Exit(name+": "+err.Error(), daemon.ExitUsage)
	}
	return metrics.Status[slaveStatus]{
		Name: name, Who: "slave", JSON: c.Bool("json"), Check: c.Bool("check"),
		Ask:      func() (slaveStatus, error) { return askStatus(sock) },
		Problems: slaveProblems,
		Print:    printStatus,
	}.Run(c.Context, c.App.Writer, watch, every, c.Int("count"))
}

// askStatus asks the slave on sock where it stands.
func askStatus(sock string) (slaveStatus, error) {
	var st slaveStatus
	conn, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return st, &metrics.AdminError{Code: daemon.ExitUsage, Err: fmt.Errorf("no slave answers on %s (is tdfs-slave running, with this --state?): %w", sock, err)}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewDecoder(io.LimitReader(conn, 1<<20)).Decode(&st); err != nil {
		return st, &metrics.AdminError{Code: daemon.ExitRuntime, Err: fmt.Errorf("bad answer from the slave: %w", err)}
	}
	return st, nil
}

// printStatus prints st for people.
func printStatus(out io.Writer, st slaveStatus) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	master := st.Master
	if master == "" {
		master = "none connected"
	}
	epoch := st.Epoch
	if epoch == "" {
		epoch = "none yet (a new replica)"
	}
	last := "none since the start"
	if st.LastOp != nil {
		last = fmt.Sprintf("%s (%s ago)", st.LastOp.Local().Format(time.DateTime), time.Since(*st.LastOp).Round(time.Second))
	}
	if st.Stalled != "" {
		// The cause first: it is what the operator must act on.
		fmt.Fprintf(tw, "STALLED\t%s (for %s)\n", st.Stalled, time.Since(*st.StalledSince).Round(time.Second))
	}
	fmt.Fprintf(tw, "replica\t%s\nlistening\t%s\nmaster\t%s\nepoch\t%s\napplied seq\t%d\ndurable seq\t%d\nresyncing\t%v\nlast op\t%s\npolicy\t%s\n",
		st.Dir, st.Addr, master, epoch, st.Applied, st.Durable, st.Resyncing, last, st.Policy)
	tw.Flush()
}
