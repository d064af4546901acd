package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/cmd/internal/metrics"
	"github.com/tdfs/tdfs/quictransport"
)

// `tdfs-master status`: one row per slave, from the running master,
// through the admin socket (admin.go).

// masterStatus is the answer to a status request (and `status --json`).
type masterStatus struct {
	Dir          string `json:"dir"`
	Mount        string `json:"mount"`
	Epoch        string `json:"epoch"`
	Sync         string `json:"sync"`
	Head         uint64 `json:"head"` // the newest op numbered
	JournalBytes int64  `json:"journal_bytes"`
	// MinSlaves is --min-slaves; DurableSlaves how many slaves hold
	// every op up to Head durable (what a wait for Head would count).
	MinSlaves     int           `json:"min_slaves,omitempty"`
	DurableSlaves int           `json:"durable_slaves"`
	Slaves        []slaveStatus `json:"slaves"`
}

type slaveStatus struct {
	Addr        string  `json:"addr"`
	Name        string  `json:"name"`
	State       string  `json:"state"`
	Applied     uint64  `json:"applied_seq"`
	Durable     uint64  `json:"durable_seq"`
	LagOps      uint64  `json:"lag_ops"`
	LagBytes    uint64  `json:"lag_bytes"`
	LagSeconds  float64 `json:"lag_seconds"`
	Rate        float64 `json:"bytes_per_second"`
	RTTSeconds  float64 `json:"rtt_seconds"`
	PacketsSent uint64  `json:"packets_sent"`
	PacketsLost uint64  `json:"packets_lost"`
	// Lanes: the connections carrying data now (0 when not connected);
	// WireBytesSent: bytes sent on every QUIC connection to the slave
	// since the master started (retransmissions included).
	Lanes         int    `json:"lanes"`
	WireBytesSent uint64 `json:"wire_bytes_sent"`
	// Cause: why the slave cannot follow now, when it is not for want of
	// a connection ("disk full: ..."); the table shows it first.
	Cause string `json:"cause,omitempty"`
	// Policy: what the slave announced it holds beyond ordinary entries
	// (set-id files, devices, privileged xattrs, largest file); the mount
	// refuses what any slave does not hold.
	Policy      string     `json:"policy,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// The comparison pass running for the slave, if any: its kind
	// (resync, check, verify, repair), the entries it listed, how far it
	// got (0 to 1) and how long it should still take, when the number of
	// entries to list is known.
	ResyncKind       string   `json:"resync_kind,omitempty"`
	ResyncEntries    uint64   `json:"resync_entries,omitempty"`
	ResyncProgress   *float64 `json:"resync_progress,omitempty"`
	ResyncETASeconds *float64 `json:"resync_eta_seconds,omitempty"`
}

// statusOf gathers the master's status.
func statusOf(cfg *config, m *quictransport.Master, hub *progressHub) masterStatus {
	out := masterStatus{Dir: cfg.dir, Mount: cfg.mount, Epoch: cfg.epoch, Sync: cfg.transport.Mode.String(),
		JournalBytes: m.JournalBytes()}
	passes := map[string]progressLine{}
	if hub != nil {
		for _, l := range hub.running() {
			passes[l.Slave] = l
		}
	}
	for _, p := range m.Status() {
		out.Head = max(out.Head, p.Head)
		s := slaveStatus{Addr: p.Addr, Name: cfg.names.of(p.Addr, p.Name), State: p.State, Applied: p.Applied, Durable: p.Durable,
			LagOps: p.LagOps, LagBytes: p.LagBytes, LagSeconds: p.LagSeconds, Rate: p.Rate,
			RTTSeconds: p.RTT.Seconds(), PacketsSent: p.PacketsSent, PacketsLost: p.PacketsLost, Lanes: p.Lanes,
			WireBytesSent: p.WireBytesSent, Cause: p.Cause, Policy: p.Policy, LastError: p.LastError}
		if !p.LastErrorAt.IsZero() {
			at := p.LastErrorAt.UTC().Round(time.Millisecond)
			s.LastErrorAt = &at
		}
		if l, ok := passes[p.Addr]; ok {
			s.ResyncKind, s.ResyncEntries = l.Kind, l.Entries
			s.ResyncProgress, s.ResyncETASeconds = passETA(l)
		}
		out.Slaves = append(out.Slaves, s)
	}
	out.MinSlaves, out.DurableSlaves = cfg.transport.MinSlaves, m.SyncedSlaves(out.Head)
	return out
}

// passETA is how far a pass got (0 to 1) and the seconds it should still
// take, at the pace it kept so far; nil when the entries it will list are
// not known (or, for the ETA, before it listed any).
func passETA(l progressLine) (progress, eta *float64) {
	if l.TotalEntries == 0 {
		return nil, nil
	}
	frac := min(1, float64(l.Entries)/float64(l.TotalEntries))
	progress = &frac
	if frac > 0 {
		left := float64(l.ElapsedMs) / 1000 * (1 - frac) / frac
		eta = &left
	}
	return progress, eta
}

// slaveNames knows each slave by the name it is known by everywhere: the
// NAME of -c NAME@HOST; else the name its certificate carries (its common
// name, as tdfs-certs slave NAME made it), learnt at each handshake; else,
// before any handshake, the host it is dialed at (the name its certificate
// is checked against).
type slaveNames struct {
	mu    sync.Mutex
	given map[string]string // address -> NAME of -c NAME@HOST
	seen  map[string]string // address -> common name of the certificate at the last handshake
}

// dial wraps the TLS configuration of the slave at addr (name: the NAME
// of -c NAME@HOST, "" if none) to learn its certificate's name.
func (n *slaveNames) dial(addr, name string, tlsFunc func() *tls.Config) func() *tls.Config {
	if n == nil {
		return tlsFunc
	}
	n.mu.Lock()
	if n.given == nil {
		n.given, n.seen = map[string]string{}, map[string]string{}
	}
	if name != "" {
		n.given[addr] = name
	} else {
		delete(n.given, addr) // a slave given again without a NAME
	}
	n.mu.Unlock()
	return func() *tls.Config {
		c := tlsFunc()
		verify := c.VerifyConnection
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if verify != nil {
				if err := verify(cs); err != nil {
					return err
				}
			}
			if len(cs.PeerCertificates) > 0 && cs.PeerCertificates[0].Subject.CommonName != "" {
				n.mu.Lock()
				n.seen[addr] = cs.PeerCertificates[0].Subject.CommonName
				n.mu.Unlock()
			}
			return nil
		}
		return c
	}
}

// of is the name of the slave at addr; checked is the name its
// certificate is checked against.
func (n *slaveNames) of(addr, checked string) string {
	if n == nil {
		return checked
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if name := n.given[addr]; name != "" {
		return name
	}
	if name := n.seen[addr]; name != "" {
		return name
	}
	return checked
}

// namesOf maps each slave's address to its name, for verify's report.
func namesOf(cfg *config, m *quictransport.Master) map[string]string {
	out := map[string]string{}
	for _, p := range m.Status() {
		out[p.Addr] = cfg.names.of(p.Addr, p.Name)
	}
	return out
}

// statusHandlers are /status and /healthz on the metrics listener.
func statusHandlers(cfg *config, m *quictransport.Master, hub *progressHub) map[string]http.Handler {
	return metrics.StatusHandlers(func() masterStatus { return statusOf(cfg, m, hub) },
		func(st masterStatus, q url.Values) ([]string, error) {
			maxLag := defaultMaxLag
			if v := q.Get("max_lag"); v != "" {
				d, err := time.ParseDuration(v)
				if err != nil || d < 0 {
					return nil, fmt.Errorf("max_lag=%s: want a duration such as 30s (0: no bound)", v)
				}
				maxLag = d
			}
			return masterProblems(st, maxLag), nil
		})
}

// defaultMaxLag is how far behind (in seconds of ops) a slave may be
// before status --check and /healthz report it.
const defaultMaxLag = 30 * time.Second

// following are the states of a slave that follows the master: ops reach
// it as they come (a verify pass runs alongside them).
var following = map[string]bool{"streaming": true, "catching-up": true, "verifying": true}

// masterProblems lists what status --check reports: each slave that does
// not follow the master (degraded, connecting, resyncing, checking,
// needs-resync, refused, fenced, stopped), and each that lags more than
// maxLag behind (0: no bound).
func masterProblems(st masterStatus, maxLag time.Duration) []string {
	var out []string
	for _, s := range st.Slaves {
		who := s.Addr
		if s.Name != "" && s.Name != s.Addr {
			who = s.Name + " (" + s.Addr + ")"
		}
		switch {
		case s.Cause != "":
			out = append(out, fmt.Sprintf("%s: %s: %s", who, s.State, s.Cause))
		case !following[s.State]:
			msg := fmt.Sprintf("%s: not streaming: %s", who, stateText(s))
			if s.LastError != "" && s.State != "resyncing" && s.State != "checking" {
				msg += ": " + s.LastError
			}
			out = append(out, msg)
		}
		if maxLag > 0 && s.LagSeconds > maxLag.Seconds() {
			out = append(out, fmt.Sprintf("%s: lagging %v behind (over --max-lag %v): %d ops, %s", who,
				seconds(s.LagSeconds).Round(time.Second), maxLag, s.LagOps, humanBytes(s.LagBytes)))
		}
	}
	return out
}

// stateText is the slave's state, with the progress of its pass.
func stateText(s slaveStatus) string {
	if s.ResyncKind == "" {
		return s.State
	}
	if s.ResyncProgress == nil {
		return fmt.Sprintf("%s %d entries", s.State, s.ResyncEntries)
	}
	t := fmt.Sprintf("%s %.0f%%", s.State, 100**s.ResyncProgress)
	if s.ResyncETASeconds != nil {
		t += " ETA " + seconds(*s.ResyncETASeconds).Round(time.Second).String()
	}
	return t
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show how far each slave of a running master is behind, or check that all is well",
		UsageText: "tdfs-master status [-m DIR] [--journal DIR | --admin-socket PATH | --config FILE] [--json]\n" +
			"   [--check [--max-lag DURATION]] [--watch [--interval DURATION]]",
		Description: "status asks the tdfs-master running on DIR (through the admin socket in its journal dir, which\n" +
			"only the master's user may use) for one row per slave: its address and name (the NAME of\n" +
			"-c NAME@HOST, else the name in its certificate), its state (connecting, streaming, catching-up,\n" +
			"resyncing, checking, verifying: with the pass's progress and ETA, degraded, refused: the slave\n" +
			"refuses this master or a bound was exceeded, fenced: the slave follows another epoch, needs-resync,\n" +
			"stopped), the last\n" +
			"op it applied and made durable, how far behind it is in ops, bytes and seconds, how fast it\n" +
			"applies, the connection's round-trip time and packet loss, the QUIC connections carrying its data\n" +
			"(LANES, see --lanes) and the bytes sent to it on the wire since the master started (SENT), and its\n" +
			"last error. It changes nothing. With --config, the master is found as tdfs-master --config FILE\n" +
			"would run (its dir and journal); -m and --journal override the file.\n\n" +
			"--check prints one line per problem, or ok: a slave that does not follow (not streaming,\n" +
			"catching-up or verifying), or that lags more than --max-lag. The metrics listener serves the\n" +
			"same at /healthz (?max_lag=DURATION), and the JSON at /status.\n\n" +
			"--watch prints again every --interval (2s) until interrupted, as watch(1) does: redrawn in place\n" +
			"on a terminal, snapshots separated by a blank line elsewhere; SIGINT or SIGTERM ends it (exit 0).\n\n" +
			"Exit codes: 0 the answer was printed, 1 no master answers (or bad flags), 2 the answer was garbled.\n" +
			"With --check: 0 all is well, 1 a problem was found (or bad flags), 2 no master answers.",
		OnUsageError: daemon.OnUsageError,
		Flags: append(adminFlags(),
			&cli.BoolFlag{Name: "json", Usage: "print JSON (one object; with --watch one per line)"},
			&cli.BoolFlag{Name: "check", Usage: "print the problems (or ok) and exit 0 when all is well, 1 on a problem, 2 when no master answers"},
			&cli.DurationFlag{Name: "max-lag", Value: defaultMaxLag,
				Usage: "with --check: a slave more than `DURATION` behind is a problem (0: no bound)"},
			&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Usage: "print again every --interval until interrupted"},
			&cli.DurationFlag{Name: "interval", Aliases: []string{"n"}, Value: defaultInterval,
				Usage: "with --watch: print every `DURATION`"},
			&cli.IntFlag{Name: "count", Usage: "with --watch: stop after `N` snapshots, exiting as the last one would"},
		),
		Action: runStatus,
	}
}

// defaultInterval is --watch's.
const defaultInterval = 2 * time.Second

// runStatus is the status command.
func runStatus(c *cli.Context) error {
	name := "tdfs-master status"
	maxLag := c.Duration("max-lag")
	watch, every, err := metrics.WatchFlags(c)
	if err == nil && maxLag < 0 {
		err = fmt.Errorf("--max-lag %v: want a duration of 0 or more", maxLag)
	}
	if err != nil {
		return cli.Exit(name+": "+err.Error(), daemon.ExitUsage)
	}
	sock, err := adminSocketPath(c)
	if err != nil {
		return cli.Exit(name+": "+err.Error(), daemon.ExitUsage)
	}
	return statusQuery(c.Bool("json"), c.Bool("check"), maxLag, sock).Run(c.Context, c.App.Writer, watch, every, c.Int("count"))
}

// statusQuery asks the master on sock and shows its answer.
func statusQuery(json, check bool, maxLag time.Duration, sock string) metrics.Status[masterStatus] {
	return metrics.Status[masterStatus]{
		Name: "tdfs-master status", Who: "master", JSON: json, Check: check,
		Ask:      func() (masterStatus, error) { return askStatus(sock) },
		Problems: func(st masterStatus) []string { return masterProblems(st, maxLag) },
		Print:    func(w io.Writer, st masterStatus) { printStatus(w, st, time.Now()) },
	}
}

// askStatus asks the master on sock for its status.
func askStatus(sock string) (masterStatus, error) {
	var st masterStatus
	conn, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return st, &metrics.AdminError{Code: daemon.ExitUsage, Err: fmt.Errorf("no master answers on %s (is tdfs-master running, with this --journal?): %w", sock, err)}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(conn).Encode(adminRequest{Op: "status"}); err != nil {
		return st, &metrics.AdminError{Code: daemon.ExitRuntime, Err: err}
	}
	var l adminLine
	if err := json.NewDecoder(io.LimitReader(conn, 64<<20)).Decode(&l); err != nil {
		return st, &metrics.AdminError{Code: daemon.ExitRuntime, Err: fmt.Errorf("bad answer from the master: %w", err)}
	}
	if l.Error != "" {
		return st, &metrics.AdminError{Code: daemon.ExitRuntime, Err: fmt.Errorf("the master says: %s", l.Error)}
	}
	if l.Status == nil {
		return st, &metrics.AdminError{Code: daemon.ExitRuntime, Err: fmt.Errorf("the master sent no status (an older tdfs-master?)")}
	}
	return *l.Status, nil
}

// printStatus prints st as a table.
func printStatus(w io.Writer, st masterStatus, now time.Time) {
	fmt.Fprintf(w, "master %s -> %s: epoch %.8s, sync %s, head seq %d, journal %s\n",
		st.Mount, st.Dir, st.Epoch, st.Sync, st.Head, humanBytes(uint64(max(0, st.JournalBytes))))
	if st.MinSlaves > 0 {
		verdict := "waits succeed"
		if st.DurableSlaves < st.MinSlaves {
			verdict = "fsyncs fail with EIO until more are"
		}
		fmt.Fprintf(w, "min-slaves %d: %d slaves durable at the head seq (%s)\n", st.MinSlaves, st.DurableSlaves, verdict)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLAVE\tNAME\tSTATE\tAPPLIED\tDURABLE\tLAG OPS\tLAG BYTES\tLAG\tRATE\tRTT\tLOSS\tLANES\tSENT\tLAST ERROR")
	for _, s := range st.Slaves {
		lastErr := "-"
		switch {
		case s.Cause != "":
			lastErr = s.Cause
			if len(lastErr) > 120 {
				lastErr = lastErr[:117] + "..."
			}
		case s.LastError != "":
			lastErr = s.LastError
			if s.LastErrorAt != nil {
				lastErr = fmt.Sprintf("%s ago: %s", now.Sub(*s.LastErrorAt).Round(time.Second), s.LastError)
			}
			if len(lastErr) > 120 {
				lastErr = lastErr[:117] + "..."
			}
		}
		loss := "-"
		if s.PacketsSent > 0 {
			loss = fmt.Sprintf("%.2f%%", 100*float64(s.PacketsLost)/float64(s.PacketsSent))
		}
		rtt := "-"
		if s.RTTSeconds > 0 {
			rtt = time.Duration(s.RTTSeconds * float64(time.Second)).Round(10 * time.Microsecond).String()
		}
		lanes := "-"
		if s.Lanes > 0 {
			lanes = fmt.Sprint(s.Lanes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s/s\t%s\t%s\t%s\t%s\t%s\n", s.Addr, s.Name, stateText(s), s.Applied, s.Durable,
			s.LagOps, humanBytes(s.LagBytes), time.Duration(s.LagSeconds*float64(time.Second)).Round(time.Millisecond),
			humanBytes(uint64(s.Rate)), rtt, loss, lanes, humanBytes(s.WireBytesSent), lastErr)
	}
	tw.Flush()
}

// humanBytes prints n in B, KB, MB, GB (powers of 1000).
func humanBytes(n uint64) string {
	switch {
	case n < 1000:
		return fmt.Sprintf("%d B", n)
	case n < 1e6:
		return fmt.Sprintf("%.1f KB", float64(n)/1e3)
	case n < 1e9:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%.2f GB", float64(n)/1e9)
}

// configFlag is the admin commands' --config: the master is found where
// tdfs-master --config FILE runs.
func configFlag() cli.Flag {
	return &cli.StringFlag{Name: "config", EnvVars: []string{"TDFS_CONFIG"}, TakesFile: true,
		Usage: "find the master that tdfs-master --config `FILE` runs: its -m and --journal (-m and --journal given here override them)"}
}
