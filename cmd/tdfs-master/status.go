package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/quictransport"
)

// `tdfs-master status`: one row per slave, from the running master,
// through the admin socket (admin.go).

// masterStatus is the answer to a status request (and `status --json`).
type masterStatus struct {
	Dir          string        `json:"dir"`
	Mount        string        `json:"mount"`
	Epoch        string        `json:"epoch"`
	Sync         string        `json:"sync"`
	Head         uint64        `json:"head"` // the newest op numbered
	JournalBytes int64         `json:"journal_bytes"`
	Slaves       []slaveStatus `json:"slaves"`
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
}

// statusOf gathers the master's status.
func statusOf(cfg *config, m *quictransport.Master) masterStatus {
	out := masterStatus{Dir: cfg.dir, Mount: cfg.mount, Epoch: cfg.epoch, Sync: cfg.transport.Mode.String(),
		JournalBytes: m.JournalBytes()}
	for _, p := range m.Status() {
		out.Head = max(out.Head, p.Head)
		s := slaveStatus{Addr: p.Addr, Name: p.Name, State: p.State, Applied: p.Applied, Durable: p.Durable,
			LagOps: p.LagOps, LagBytes: p.LagBytes, LagSeconds: p.LagSeconds, Rate: p.Rate,
			RTTSeconds: p.RTT.Seconds(), PacketsSent: p.PacketsSent, PacketsLost: p.PacketsLost, Lanes: p.Lanes,
			WireBytesSent: p.WireBytesSent, Cause: p.Cause, Policy: p.Policy, LastError: p.LastError}
		if !p.LastErrorAt.IsZero() {
			at := p.LastErrorAt.UTC().Round(time.Millisecond)
			s.LastErrorAt = &at
		}
		out.Slaves = append(out.Slaves, s)
	}
	return out
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show how far each slave of a running master is behind",
		UsageText: "tdfs-master status -m DIR [--journal DIR | --admin-socket PATH] [--json] [--watch]",
		Description: "status asks the tdfs-master running on DIR (through the admin socket in its journal dir, which\n" +
			"only the master's user may use) for one row per slave: its address and certificate name, its state\n" +
			"(connecting, streaming, catching-up, resyncing, checking, verifying, degraded, refused: an op the\n" +
			"slave's policy forbids, fenced: this master refused by the slave, needs-resync, stopped), the last\n" +
			"op it applied and made durable, how far behind it is in ops, bytes and seconds, how fast it\n" +
			"applies, the connection's round-trip time and packet loss, the QUIC connections carrying its data\n" +
			"(LANES, see --lanes) and the bytes sent to it on the wire since the master started (SENT), and its\n" +
			"last error. It changes nothing.\n\n" +
			"Exit codes: 0 the answer was printed, 1 no master answers (or bad flags), 2 the answer was garbled.",
		OnUsageError: daemon.OnUsageError,
		Flags: append(adminFlags(),
			&cli.BoolFlag{Name: "json", Usage: "print JSON (one object; with --watch one per line)"},
			&cli.DurationFlag{Name: "watch", Usage: "print again every `INTERVAL` until interrupted (e.g. --watch 1s)"},
		),
		Action: runStatus,
	}
}

func runStatus(c *cli.Context) error {
	name := "tdfs-master status"
	sock, err := adminSocketPath(c)
	if err != nil {
		return cli.Exit(name+": "+err.Error(), daemon.ExitUsage)
	}
	out := c.App.Writer
	for first := true; ; first = false {
		st, err := askStatus(sock)
		if err != nil {
			if first || exitCodeOf(err) != daemon.ExitUsage { // only "no master answers" is waited out
				return cli.Exit(name+": "+err.Error(), exitCodeOf(err))
			}
			fmt.Fprintf(out, "%s: %v\n", time.Now().Format(time.TimeOnly), err)
		} else if c.Bool("json") {
			json.NewEncoder(out).Encode(st)
		} else {
			if !first {
				fmt.Fprintln(out)
			}
			printStatus(out, st, time.Now())
		}
		every := c.Duration("watch")
		if every <= 0 {
			return nil
		}
		select {
		case <-time.After(every):
		case <-c.Context.Done():
			return nil
		}
	}
}

// adminError is an error talking to the master, with its exit code.
type adminError struct {
	code int
	err  error
}

func (e *adminError) Error() string { return e.err.Error() }

func exitCodeOf(err error) int {
	if ae, ok := err.(*adminError); ok {
		return ae.code
	}
	return daemon.ExitRuntime
}

// askStatus asks the master on sock for its status.
func askStatus(sock string) (masterStatus, error) {
	var st masterStatus
	conn, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return st, &adminError{daemon.ExitUsage, fmt.Errorf("no master answers on %s (is tdfs-master running, with this --journal?): %w", sock, err)}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(conn).Encode(adminRequest{Op: "status"}); err != nil {
		return st, &adminError{daemon.ExitRuntime, err}
	}
	var l adminLine
	if err := json.NewDecoder(io.LimitReader(conn, 64<<20)).Decode(&l); err != nil {
		return st, &adminError{daemon.ExitRuntime, fmt.Errorf("bad answer from the master: %w", err)}
	}
	if l.Error != "" {
		return st, &adminError{daemon.ExitRuntime, fmt.Errorf("the master says: %s", l.Error)}
	}
	if l.Status == nil {
		return st, &adminError{daemon.ExitRuntime, fmt.Errorf("the master sent no status (an older tdfs-master?)")}
	}
	return *l.Status, nil
}

// printStatus prints st as a table.
func printStatus(w io.Writer, st masterStatus, now time.Time) {
	fmt.Fprintf(w, "master %s -> %s: epoch %.8s, sync %s, head seq %d, journal %s\n",
		st.Mount, st.Dir, st.Epoch, st.Sync, st.Head, humanBytes(uint64(max(0, st.JournalBytes))))
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s/s\t%s\t%s\t%s\t%s\t%s\n", s.Addr, s.Name, s.State, s.Applied, s.Durable,
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
