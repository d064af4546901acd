package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/certs"
	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/mirrorfs"
	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/wire"
)

const (
	defaultSyncTimeout  = 10 * time.Second
	defaultDrainTimeout = 30 * time.Second
	defaultSlaveRoot    = "/var/lib/tdfs/slave"
)

type config struct {
	log          *slog.Logger
	dir, mount   string
	journalDir   string
	journalMax   int64
	slaveState   string // a promoted slave's state dir ("" if none found)
	transport    quictransport.MasterConfig
	fuse         mirrorfs.Options
	policy       wire.Policy // what this master allows beyond ordinary entries (policy.go)
	drainTimeout time.Duration
	epoch        string // set by serve, for status
	metricsAddr  string // "" for none
	identity     *certs.Store
	names        *slaveNames // each slave's name, for status (status.go)
	// configFile is --config; connectFromFile says the slaves came from
	// its connect: list, which SIGHUP then applies again (slaves.go).
	configFile      string
	connectFromFile bool
	slaves          *slaveSet // set by serve: the admin socket changes the set through it
}

// configure turns the flags (and --config) into a config, refusing what
// cannot work before anything starts: no epoch is minted for a bad flag.
func configure(c *cli.Context) (*config, error) {
	log, err := daemon.Logger(c, "tdfs-master")
	if err != nil {
		return nil, err
	}
	cfg := &config{
		log:          log,
		policy:       ownPolicy(c.Bool("allow-setuid"), c.Bool("allow-devices")),
		drainTimeout: c.Duration("drain-timeout"),
		metricsAddr:  c.String("metrics-addr"),
		configFile:   c.String("config"),
		names:        &slaveNames{},
	}
	if err := cfg.paths(c); err != nil {
		return nil, err
	}
	if cfg.transport, err = transportConfig(c); err != nil {
		return nil, err
	}
	if cfg.identity, err = daemon.Identity(c, certs.RoleMaster, log); err != nil {
		return nil, err
	}
	if err := cfg.peers(c); err != nil {
		return nil, err
	}
	cfg.transport.CheckPeer = cfg.identity.CheckPeer
	cfg.transport.Logger = log
	cfg.fuse = mirrorfs.Options{
		Backing:    cfg.dir,
		Mode:       cfg.transport.Mode,
		AllowOther: c.Bool("allow-other"),
		Devices:    c.Bool("allow-devices"),
		Debug:      c.Bool("debug-fuse"),
		Logger:     log,
	}
	return cfg, nil
}

// paths sets the backing dir, the mount point, the journal dir and a
// promoted slave's state dir, and checks that the mount point is free and
// that none hides another.
func (cfg *config) paths(c *cli.Context) error {
	dir, err := daemon.Dir("-m", c.String("dir"))
	if err != nil {
		return err
	}
	clearDeadMount(c.String("mount"), cfg.log)
	mnt, err := daemon.Dir("--mount", c.String("mount"))
	if err != nil {
		return err
	}
	if err := probe(c, mnt); err != nil {
		return err
	}
	if daemon.Within(mnt, dir) {
		return fmt.Errorf("--mount %s lies inside the backing dir %s: choose a mount point outside it", mnt, dir)
	}
	if daemon.Within(dir, mnt) {
		return fmt.Errorf("backing dir %s lies inside the mount point %s: it would be hidden by the mount", dir, mnt)
	}
	cfg.dir, cfg.mount = dir, mnt
	if cfg.journalDir, err = daemon.StateDir(c.String("journal"), defaultJournalRoot, dir, dir, mnt); err != nil {
		return fmt.Errorf("--journal: %w", err)
	}
	if cfg.journalMax, err = daemon.ParseSize(c.String("journal-max")); err != nil {
		return fmt.Errorf("--journal-max: %w", err)
	}
	if cfg.journalMax < 64<<20 {
		return fmt.Errorf("--journal-max %s: want at least 64M", c.String("journal-max"))
	}
	cfg.slaveState = c.String("slave-state")
	if cfg.slaveState == "" {
		def := filepath.Join(defaultSlaveRoot, strings.ReplaceAll(dir, "/", "_"))
		if _, err := os.Stat(def); err == nil {
			cfg.slaveState = def
		}
	} else if _, err := os.Stat(cfg.slaveState); err != nil {
		return fmt.Errorf("--slave-state: %w", err)
	}
	return nil
}

// probe refuses, before anything starts, what would fail later: a mount
// point another FUSE filesystem serves, no way to mount, a metrics address
// in use.
func probe(c *cli.Context, mnt string) error {
	if err := refuseLiveMount(mnt); err != nil {
		return err
	}
	if err := daemon.CanMount(); err != nil {
		return err
	}
	if a := c.String("metrics-addr"); a != "" {
		return daemon.ProbeListen("--metrics-addr", "tcp", a)
	}
	return nil
}

// transportConfig reads the flags of the transport: durability mode,
// --min-slaves, timeouts, backlog, lanes, compression. Peers, CheckPeer and
// Logger are set by the caller.
func transportConfig(c *cli.Context) (quictransport.MasterConfig, error) {
	var tc quictransport.MasterConfig
	mode, err := parseMode(c.String("sync"))
	if err != nil {
		return tc, err
	}
	slaves := len(c.StringSlice("connect"))
	if n := c.Int("min-slaves"); n < 0 || n > slaves {
		return tc, fmt.Errorf("--min-slaves %d: want 0 to the number of slaves (-c: %d)", n, slaves)
	}
	if c.Int("min-slaves") > 0 && mode == wire.ModeAsync {
		return tc, fmt.Errorf("--min-slaves %d with --sync async: nothing waits for the slaves in async mode; use --sync fsync or sync", c.Int("min-slaves"))
	}
	if c.Duration("sync-timeout") <= 0 {
		return tc, fmt.Errorf("--sync-timeout %v: want a positive duration", c.Duration("sync-timeout"))
	}
	backlog, err := daemon.ParseSize(c.String("backlog"))
	if err != nil {
		return tc, fmt.Errorf("--backlog: %w", err)
	}
	if backlog < 16<<20 {
		return tc, fmt.Errorf("--backlog %s: want at least 16M", c.String("backlog"))
	}
	if n := c.Int("lanes"); n < 1 || n > wire.MaxLanes {
		return tc, fmt.Errorf("--lanes %d: want 1 to %d", n, wire.MaxLanes)
	}
	comp, err := compressor(c.String("compress"))
	if err != nil {
		return tc, err
	}
	return quictransport.MasterConfig{
		Mode:        mode,
		SyncTimeout: c.Duration("sync-timeout"),
		MinSlaves:   c.Int("min-slaves"),
		Compressor:  comp,
		Backlog:     backlog,
		Lanes:       c.Int("lanes"),
	}, nil
}

// compressor parses -z: 0 for none, else a zstd level.
func compressor(arg string) (*wire.Compressor, error) {
	level, err := strconv.Atoi(arg)
	if err != nil || level < 0 || level > 4 {
		return nil, fmt.Errorf("-z %q: want 0 (off), or a zstd level from 1 (fastest) to 4 (best)", arg)
	}
	if level == 0 {
		return nil, nil
	}
	comp, err := wire.NewCompressor(level)
	if err != nil {
		return nil, fmt.Errorf("-z %d: %w", level, err)
	}
	return comp, nil
}

// peers sets the slaves to connect to from -c, each once, and notes
// whether they came from the connect: list of --config (which SIGHUP then
// applies again).
func (cfg *config) peers(c *cli.Context) error {
	targets := c.StringSlice("connect")
	if path := c.String("config"); path != "" {
		list, ok, err := daemon.ConfigList(path, c.App.Flags, "connect")
		cfg.connectFromFile = err == nil && ok && slices.Equal(list, targets)
	}
	if len(targets) == 0 {
		return fmt.Errorf("no slave given: use -c HOST:PORT (repeatable)")
	}
	seen := map[string]bool{}
	for _, t := range targets {
		p, err := peerFor(cfg.identity, cfg.names, t)
		if err != nil {
			return err
		}
		if seen[p.Addr] {
			return fmt.Errorf("-c %s given twice", p.Addr)
		}
		seen[p.Addr] = true
		cfg.transport.Peers = append(cfg.transport.Peers, p)
	}
	return nil
}

// clearDeadMount unmounts what a crashed or killed master left at mnt: its
// FUSE mount stays behind, dead, and every access the kernel cannot answer
// from its caches fails with ENOTCONN ("transport endpoint is not
// connected") until it is unmounted. Without this, a master restarted by
// its supervisor (systemd's Restart=on-failure after a crash or a watchdog
// kill) would stack its mount on the dead one, or fail. statfs(2), which
// FUSE never caches, tells a dead mount from a live one; a live one is
// left alone.
func clearDeadMount(mnt string, log *slog.Logger) {
	var st syscall.Statfs_t
	if mnt == "" || !errors.Is(syscall.Statfs(mnt, &st), syscall.ENOTCONN) {
		return
	}
	lazyUnmount(mnt)
	log.Warn("cleared the dead mount of a master that did not exit cleanly", "mount", mnt)
}

func parseMode(s string) (wire.SyncMode, error) {
	switch s {
	case "async":
		return wire.ModeAsync, nil
	case "fsync":
		return wire.ModeFsync, nil
	case "sync":
		return wire.ModeSync, nil
	}
	return 0, fmt.Errorf("--sync %q: want async, fsync or sync", s)
}

// parseTarget splits [NAME@]HOST[:PORT] into the name the slave's
// certificate must carry and the UDP address to dial.
func parseTarget(t string) (name, addr string, err error) {
	if strings.ContainsFunc(t, unicode.IsSpace) {
		return "", "", fmt.Errorf("-c %q: a slave is [NAME@]HOST[:PORT] without spaces (give -c once per slave)", t)
	}
	hostport := t
	if i := strings.LastIndexByte(t, '@'); i >= 0 {
		name, hostport = t[:i], t[i+1:]
		if name == "" {
			return "", "", fmt.Errorf("-c %q: empty name before @", t)
		}
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: the default one.
		host, port = strings.Trim(hostport, "[]"), strconv.Itoa(quictransport.DefaultPort)
	}
	if host == "" {
		return "", "", fmt.Errorf("-c %q: no host", t)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", "", fmt.Errorf("-c %q: bad port %q", t, port)
	}
	if name == "" {
		name = host
	}
	return name, net.JoinHostPort(host, port), nil
}
