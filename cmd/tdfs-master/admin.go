package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/wire"
)

// The admin socket: a unix socket in the journal dir (mode 0600, so only
// the master's user, normally root) through which `tdfs-master verify`
// asks the running master to compare its backing dir with every slave,
// `tdfs-master resync` to resynchronise one, and `status` how they are.
// One JSON request per connection; the answer is JSON lines: progress,
// then the results.

const (
	// ExitDiffers is verify's exit code when a slave differs.
	exitDiffers = 3
)

type adminRequest struct {
	Op     string `json:"op"` // "verify", "resync" or "status"
	Repair bool   `json:"repair"`
	Slave  string `json:"slave,omitempty"` // resync: the slave's name or address
	Quick  bool   `json:"quick,omitempty"` // resync: compare contents only where size or mtime differ
}

type adminLine struct {
	Progress *progressLine  `json:"progress,omitempty"`
	Results  []verifyResult `json:"results,omitempty"`
	Status   *masterStatus  `json:"status,omitempty"`
	Resync   string         `json:"resync,omitempty"` // the address of the slave a resync was started for
	Error    string         `json:"error,omitempty"`
}

type progressLine struct {
	Slave        string `json:"slave"`
	Kind         string `json:"kind"`
	Pass         uint64 `json:"pass"`
	Done         bool   `json:"done,omitempty"`
	ElapsedMs    int64  `json:"elapsed_ms"`
	Entries      uint64 `json:"entries"`
	TotalEntries uint64 `json:"total_entries"`
	BytesSent    uint64 `json:"bytes_sent"`
	Compared     uint64 `json:"bytes_compared"`
	Differences  uint64 `json:"differences"`
}

type verifyResult struct {
	Slave       string            `json:"slave"`
	Name        string            `json:"name,omitempty"` // the slave's name (status's NAME)
	Error       string            `json:"error,omitempty"`
	Entries     uint64            `json:"entries"`
	Differences uint64            `json:"differences"`
	Diffs       []wire.Difference `json:"diffs,omitempty"`
	Truncated   uint64            `json:"truncated,omitempty"`
	FilesSent   uint64            `json:"files_sent,omitempty"`
	BytesSent   uint64            `json:"bytes_sent,omitempty"`
}

// progressHub fans pass progress out to the admin connections waiting for
// a verify, and to the master's own progress bar; it keeps the latest of
// each running pass for the metrics.
type progressHub struct {
	mu   sync.Mutex
	subs map[chan progressLine]struct{}
	live map[string]progressLine // slave -> its running pass
}

func (h *progressHub) publish(r quictransport.PassReport) {
	l := progressLine{Slave: r.Slave, Kind: r.Kind, Pass: r.Pass, Done: r.Done,
		ElapsedMs: time.Since(r.Started).Milliseconds(), Entries: r.Entries, TotalEntries: r.TotalEntries,
		BytesSent: r.BytesSent, Compared: r.BytesCompared, Differences: r.Differences}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.live == nil {
		h.live = map[string]progressLine{}
	}
	if l.Done {
		delete(h.live, l.Slave)
	} else {
		h.live[l.Slave] = l
	}
	for ch := range h.subs {
		select {
		case ch <- l:
		default: // a slow reader misses a progress line, nothing else
		}
	}
}

// running returns the latest progress of the passes running now.
func (h *progressHub) running() []progressLine {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]progressLine, 0, len(h.live))
	for _, l := range h.live {
		out = append(out, l)
	}
	return out
}

func (h *progressHub) subscribe() (chan progressLine, func()) {
	ch := make(chan progressLine, 16)
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[chan progressLine]struct{}{}
	}
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

// listenAdmin serves the admin socket until the returned listener is
// closed.
func listenAdmin(cfg *config, m *quictransport.Master, hub *progressHub) (net.Listener, error) {
	ln, err := daemon.ListenAdmin(filepath.Join(cfg.journalDir, daemon.AdminSocketName))
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveAdmin(cfg, m, hub, c)
		}
	}()
	return ln, nil
}

func serveAdmin(cfg *config, m *quictransport.Master, hub *progressHub, c net.Conn) {
	defer c.Close()
	var req adminRequest
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewDecoder(io.LimitReader(c, 4096)).Decode(&req); err != nil {
		json.NewEncoder(c).Encode(adminLine{Error: "bad request: " + err.Error()})
		return
	}
	c.SetReadDeadline(time.Time{})
	switch req.Op {
	case "verify":
	case "status":
		st := statusOf(cfg, m, hub)
		json.NewEncoder(c).Encode(adminLine{Status: &st})
		return
	case "slave-add", "slave-remove":
		cfg.log.Info("slave set change requested through the admin socket", "op", req.Op, "slave", req.Slave)
		json.NewEncoder(c).Encode(cfg.slaves.serveSlaveOp(req))
		return
	case "resync":
		cfg.log.Info("resync requested through the admin socket", "slave", req.Slave, "quick", req.Quick)
		addr, err := m.StartResync(req.Slave, !req.Quick)
		if err != nil {
			json.NewEncoder(c).Encode(adminLine{Error: err.Error()})
			return
		}
		json.NewEncoder(c).Encode(adminLine{Resync: addr})
		return
	default:
		json.NewEncoder(c).Encode(adminLine{Error: fmt.Sprintf("unknown request %q", req.Op)})
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// The client hung up: stop waiting (the passes themselves end
		// with their slaves' connections).
		io.Copy(io.Discard, c)
		cancel()
	}()
	cfg.log.Info("verify requested through the admin socket", "repair", req.Repair)
	ch, unsub := hub.subscribe()
	defer unsub()
	enc := json.NewEncoder(c)
	var encMu sync.Mutex
	done := make(chan struct{})
	go func() {
		for {
			select {
			case p := <-ch:
				encMu.Lock()
				enc.Encode(adminLine{Progress: &p})
				encMu.Unlock()
			case <-done:
				return
			}
		}
	}()
	res := m.Verify(ctx, req.Repair)
	close(done)
	names := namesOf(cfg, m)
	var out []verifyResult
	for _, r := range res {
		v := verifyResult{Slave: r.Addr, Name: names[r.Addr], Entries: r.Result.Entries, Differences: r.Result.Differences,
			Diffs: r.Result.Diffs, Truncated: r.Result.Truncated, FilesSent: r.Result.FilesSent, BytesSent: r.Result.BytesSent}
		if r.Err != nil {
			v.Error = r.Err.Error()
		}
		out = append(out, v)
	}
	encMu.Lock()
	enc.Encode(adminLine{Results: out})
	encMu.Unlock()
}

// verifyCommand is `tdfs-master verify`.
func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "compare the backing dir of a running master with every slave",
		UsageText: "tdfs-master verify -m DIR [--journal DIR | --admin-socket PATH] [--repair] [--timeout DURATION]",
		Description: "verify asks the tdfs-master running on DIR (through the admin socket in its journal dir) to\n" +
			"compare DIR with each connected slave: names, types, sizes, modes, owners, mtimes, symlink targets,\n" +
			"hard links, xattrs and contents (hashed on both sides, so only hashes cross the network). Writes\n" +
			"keep flowing meanwhile; files changed during the comparison are compared again. It prints every\n" +
			"path that differs and exits 0 when every slave is identical, 3 when one differs, 2 when a slave\n" +
			"could not be verified. With --repair the differences are fixed instead (only what differs is sent).",
		OnUsageError: daemon.OnUsageError,
		Flags: append(adminFlags(),
			&cli.BoolFlag{Name: "repair", Usage: "fix what differs on the slaves"},
			&cli.DurationFlag{Name: "timeout", Usage: "give up after `DURATION`", DefaultText: "no limit"},
		),
		Action: runVerify,
	}
}

// resyncCommand is `tdfs-master resync NAME`.
func resyncCommand() *cli.Command {
	return &cli.Command{
		Name:      "resync",
		Usage:     "compare one slave with the backing dir and repair it, whatever its state",
		UsageText: "tdfs-master resync -m DIR [--journal DIR | --admin-socket PATH] [--quick] NAME",
		Description: "resync asks the tdfs-master running on DIR to resynchronise the slave NAME (its certificate\n" +
			"name, or the HOST:PORT it is dialed at, as -c gave it): a comparison pass that repairs every\n" +
			"difference while writes keep flowing, the same a slave gets when its tree is of unknown state.\n" +
			"Every file's contents are compared (hashed on both sides; only differing blocks are sent) unless\n" +
			"--quick, which trusts size and mtime as rsync does. It returns once the pass is requested: it runs\n" +
			"at once if the slave is connected, else when it connects; tdfs-master status shows it (resyncing).\n" +
			"Exit 0 when requested, 1 for an unknown slave or no master answering.",
		ArgsUsage:    "NAME",
		OnUsageError: daemon.OnUsageError,
		Flags: append(adminFlags(),
			&cli.BoolFlag{Name: "quick", Usage: "compare the contents only of files whose size or mtime differ"},
		),
		Action: runResync,
	}
}

func runResync(c *cli.Context) error {
	name := "tdfs-master resync"
	if c.NArg() != 1 {
		return cli.Exit(name+": give the slave's name (or HOST:PORT), once", daemon.ExitUsage)
	}
	l, err := askAdmin(c, name, adminRequest{Op: "resync", Slave: c.Args().First(), Quick: c.Bool("quick")}, 30*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s: resync requested: it is compared with the backing dir and repaired "+
		"(tdfs-master status shows it resyncing until done)\n", l.Resync)
	return nil
}

// adminFlags find a running master's admin socket.
func adminFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "dir", Aliases: []string{"m"}, EnvVars: []string{"TDFS_DIR"},
			Usage: "backing `DIR` of the running master"},
		&cli.StringFlag{Name: "journal", Aliases: []string{"state"}, EnvVars: []string{"TDFS_JOURNAL"},
			Usage: "the master's journal `DIR`, if it was given one (default " + defaultJournalRoot + "/<DIR with / as _>)"},
		&cli.StringFlag{Name: "admin-socket", EnvVars: []string{"TDFS_ADMIN_SOCKET"}, TakesFile: true,
			Usage: "the master's admin socket `PATH` (default: " + daemon.AdminSocketName + " in its journal dir; then -m is not needed)"},
		configFlag(),
	}
}

// dialAdmin connects to the admin socket the flags name; its error is
// the command's (cli.Exit, ExitUsage).
func dialAdmin(c *cli.Context, name string) (net.Conn, error) {
	sock, err := adminSocketPath(c)
	if err != nil {
		return nil, cli.Exit(name+": "+err.Error(), daemon.ExitUsage)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("%s: no master answers on %s (is tdfs-master running, with this --journal?): %v",
			name, sock, err), daemon.ExitUsage)
	}
	return conn, nil
}

func runVerify(c *cli.Context) error {
	name := "tdfs-master verify"
	conn, err := dialAdmin(c, name)
	if err != nil {
		return err
	}
	defer conn.Close()
	if t := c.Duration("timeout"); t > 0 {
		conn.SetDeadline(time.Now().Add(t))
	}
	if err := json.NewEncoder(conn).Encode(adminRequest{Op: "verify", Repair: c.Bool("repair")}); err != nil {
		return cli.Exit(name+": "+err.Error(), daemon.ExitRuntime)
	}
	out, errw := c.App.Writer, c.App.ErrWriter
	bar := newProgressBar(errw)
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 256<<20)
	for sc.Scan() {
		var l adminLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return cli.Exit(name+": bad answer from the master: "+err.Error(), daemon.ExitRuntime)
		}
		switch {
		case l.Error != "":
			bar.clear()
			return cli.Exit(name+": the master says: "+l.Error, daemon.ExitRuntime)
		case l.Progress != nil:
			bar.show(*l.Progress)
		case l.Results != nil:
			bar.clear()
			return report(out, l.Results, c.Bool("repair"))
		}
	}
	bar.clear()
	if err := sc.Err(); err != nil {
		return cli.Exit(name+": "+err.Error(), daemon.ExitRuntime)
	}
	return cli.Exit(name+": the master closed the connection without an answer", daemon.ExitRuntime)
}

// report prints the results and picks the exit code.
func report(w io.Writer, rs []verifyResult, repair bool) error {
	code := daemon.ExitOK
	for _, r := range rs {
		if r.Name != "" && r.Name != r.Slave {
			r.Slave = r.Name + " (" + r.Slave + ")" // the slave by its name, then where it is
		}
		if r.Error != "" {
			fmt.Fprintf(w, "%s: not verified: %s\n", r.Slave, r.Error)
			code = max(code, daemon.ExitRuntime)
			continue
		}
		for _, d := range r.Diffs {
			p := d.Path
			if p == "" {
				p = "."
			}
			fmt.Fprintf(w, "%s: %s: %s\n", r.Slave, p, d.What)
		}
		if r.Truncated > 0 {
			fmt.Fprintf(w, "%s: ... and %d more differences\n", r.Slave, r.Truncated)
		}
		switch {
		case repair:
			fmt.Fprintf(w, "%s: repaired: %d entries compared, %d differed, %d files (%d bytes) sent\n",
				r.Slave, r.Entries, r.Differences, r.FilesSent, r.BytesSent)
		case r.Differences > 0:
			fmt.Fprintf(w, "%s: DIFFERS: %d entries compared, %d differences\n", r.Slave, r.Entries, r.Differences)
			code = max(code, exitDiffers)
		default:
			fmt.Fprintf(w, "%s: identical (%d entries compared)\n", r.Slave, r.Entries)
		}
	}
	if code != daemon.ExitOK {
		return cli.Exit("", code)
	}
	return nil
}

// progressBar draws progress on a terminal (one line, redrawn), and
// nothing elsewhere.
type progressBar struct {
	status *daemon.StatusLine
}

func newProgressBar(w io.Writer) *progressBar {
	return &progressBar{status: daemon.NewStatusLine(w)}
}

func (b *progressBar) show(p progressLine) {
	if p.Done {
		b.clear()
		return
	}
	b.status.Set(barText(p))
}

func (b *progressBar) clear() { b.status.Set("") }

// barText renders one pass's progress: what, how far, how fast, how long
// still.
func barText(p progressLine) string {
	el := time.Duration(p.ElapsedMs) * time.Millisecond
	line := fmt.Sprintf("%s %s: %d entries", p.Kind, p.Slave, p.Entries)
	eta := ""
	if p.TotalEntries > 0 {
		frac := min(1, float64(p.Entries)/float64(p.TotalEntries))
		n := int(frac * 20)
		line = fmt.Sprintf("%s %s [%s%s] %3.0f%% %d/%d entries", p.Kind, p.Slave, strings.Repeat("#", n),
			strings.Repeat(".", 20-n), 100*frac, p.Entries, p.TotalEntries)
		if frac > 0 && frac < 1 {
			eta = fmt.Sprintf(", ETA %v", time.Duration(float64(el)*(1-frac)/frac).Round(time.Second))
		}
	}
	if p.Kind == "verify" {
		line += fmt.Sprintf(", %d MB compared, %d differences", p.Compared>>20, p.Differences)
	} else {
		line += fmt.Sprintf(", %s sent", mb(p.BytesSent))
		if s := el.Seconds(); s > 0 {
			line += fmt.Sprintf(" (%s/s)", mb(uint64(float64(p.BytesSent)/s)))
		}
	}
	return line + eta
}

func mb(n uint64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// showPasses draws the progress of the passes running on this master's
// slaves as a status line below its log, while stderr is a terminal, for
// passes that have run for more than a second or two.
func showPasses(hub *progressHub, stop <-chan struct{}) {
	if !daemon.Stderr.Terminal() {
		return
	}
	ch, unsub := hub.subscribe()
	defer unsub()
	defer daemon.Stderr.Set("")
	live := map[string]progressLine{}
	for {
		select {
		case <-stop:
			return
		case l := <-ch:
			if l.Done {
				delete(live, l.Slave)
			} else if l.ElapsedMs >= 2000 {
				live[l.Slave] = l
			}
		}
		var parts []string
		for _, l := range live {
			parts = append(parts, barText(l))
		}
		slices.Sort(parts)
		daemon.Stderr.Set(strings.Join(parts, " | "))
	}
}

// askAdmin sends req to the running master and returns its one answer;
// an error is a cli.Exit naming the command: ExitUsage when the master
// refuses the request or does not answer on its socket, ExitRuntime when
// the exchange fails.
func askAdmin(c *cli.Context, name string, req adminRequest, timeout time.Duration) (adminLine, error) {
	conn, err := dialAdmin(c, name)
	if err != nil {
		return adminLine{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return adminLine{}, cli.Exit(name+": "+err.Error(), daemon.ExitRuntime)
	}
	var l adminLine
	if err := json.NewDecoder(conn).Decode(&l); err != nil {
		return adminLine{}, cli.Exit(name+": no answer from the master: "+err.Error(), daemon.ExitRuntime)
	}
	if l.Error != "" {
		return adminLine{}, cli.Exit(name+": "+l.Error, daemon.ExitUsage)
	}
	return l, nil
}

// adminSocketPath is the socket the admin flags name: --admin-socket, else
// the one in the journal dir of -m and --journal, or of those --config
// gives.
func adminSocketPath(c *cli.Context) (string, error) {
	return daemon.AdminSocket(c, func() *cli.App { return newApp(io.Discard) }, "journal", defaultJournalRoot)
}
