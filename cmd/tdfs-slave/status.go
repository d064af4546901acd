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
// (/seq on --metrics-addr: read-your-writes routing) and for Prometheus
// (/metrics).

const adminSocket = "admin.sock"

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
	srv *quictransport.Server
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
	ln, err := daemon.ListenAdmin(filepath.Join(stateDir, adminSocket))
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

// serveMetrics serves /metrics and /seq on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string, l *live, log *slog.Logger) error {
	reg := metrics.NewRegistry()
	reg.MustRegister(newSlaveCollector(l))
	seq := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(l.status())
	})
	bound, err := metrics.Serve(ctx, addr, reg, map[string]http.Handler{"/seq": seq}, log)
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
		Name:      "status",
		Usage:     "show where a running slave stands",
		UsageText: "tdfs-slave status -m DIR [--state DIR] [--json]",
		Description: "status asks the tdfs-slave running on DIR (through the socket " + adminSocket + " in its state dir,\n" +
			"which only the slave's user may use) for the master connected now, the master epoch it follows, the\n" +
			"last op it applied and made durable, whether it is resyncing, and when it applied its last op. It\n" +
			"changes nothing. For load balancers the same is served as JSON at /seq on --metrics-addr.\n\n" +
			"Exit codes: 0 the answer was printed, 1 no slave answers (or bad flags), 2 the answer was garbled.",
		OnUsageError: daemon.OnUsageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Aliases: []string{"m"}, EnvVars: []string{"TDFS_DIR"},
				Usage: "replica `DIR` of the running slave"},
			&cli.StringFlag{Name: "state", EnvVars: []string{"TDFS_STATE"},
				Usage: "the slave's state `DIR`, if it was given one (default " + defaultStateRoot + "/<DIR with / as _>)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: runStatus,
	}
}

func runStatus(c *cli.Context) error {
	name := "tdfs-slave status"
	dir, err := daemon.Dir("-m", c.String("dir"))
	if err != nil {
		return cli.Exit(name+": "+err.Error(), daemon.ExitUsage)
	}
	sdir, err := daemon.StateDir(c.String("state"), defaultStateRoot, dir)
	if err != nil {
		return cli.Exit(name+": --state: "+err.Error(), daemon.ExitUsage)
	}
	sock := filepath.Join(sdir, adminSocket)
	conn, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return cli.Exit(fmt.Sprintf("%s: no slave answers on %s (is tdfs-slave running on %s, with this --state?): %v",
			name, sock, dir, err), daemon.ExitUsage)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var st slaveStatus
	if err := json.NewDecoder(io.LimitReader(conn, 1<<20)).Decode(&st); err != nil {
		return cli.Exit(name+": bad answer from the slave: "+err.Error(), daemon.ExitRuntime)
	}
	out := c.App.Writer
	if c.Bool("json") {
		return json.NewEncoder(out).Encode(st)
	}
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
	return tw.Flush()
}
