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

func configure(c *cli.Context) (*config, error) {
	log, err := daemon.Logger(c, "tdfs-master")
	if err != nil {
		return nil, err
	}
	dir, err := daemon.Dir("-m", c.String("dir"))
	if err != nil {
		return nil, err
	}
	clearDeadMount(c.String("mount"), log)
	mnt, err := daemon.Dir("--mount", c.String("mount"))
	if err != nil {
		return nil, err
	}
	if err := refuseLiveMount(mnt); err != nil {
		return nil, err
	}
	if err := daemon.CanMount(); err != nil {
		return nil, err
	}
	if a := c.String("metrics-addr"); a != "" {
		if err := daemon.ProbeListen("--metrics-addr", "tcp", a); err != nil {
			return nil, err
		}
	}
	if daemon.Within(mnt, dir) {
		return nil, fmt.Errorf("--mount %s lies inside the backing dir %s: choose a mount point outside it", mnt, dir)
	}
	if daemon.Within(dir, mnt) {
		return nil, fmt.Errorf("backing dir %s lies inside the mount point %s: it would be hidden by the mount", dir, mnt)
	}
	journalDir, err := daemon.StateDir(c.String("journal"), defaultJournalRoot, dir, dir, mnt)
	if err != nil {
		return nil, fmt.Errorf("--journal: %w", err)
	}
	journalMax, err := daemon.ParseSize(c.String("journal-max"))
	if err != nil {
		return nil, fmt.Errorf("--journal-max: %w", err)
	}
	if journalMax < 64<<20 {
		return nil, fmt.Errorf("--journal-max %s: want at least 64M", c.String("journal-max"))
	}
	slaveState := c.String("slave-state")
	if slaveState == "" {
		def := filepath.Join(defaultSlaveRoot, strings.ReplaceAll(dir, "/", "_"))
		if _, err := os.Stat(def); err == nil {
			slaveState = def
		}
	} else if _, err := os.Stat(slaveState); err != nil {
		return nil, fmt.Errorf("--slave-state: %w", err)
	}
	mode, err := parseMode(c.String("sync"))
	if err != nil {
		return nil, err
	}
	if n := c.Int("min-slaves"); n < 0 || n > len(c.StringSlice("connect")) {
		return nil, fmt.Errorf("--min-slaves %d: want 0 to the number of slaves (-c: %d)", n, len(c.StringSlice("connect")))
	}
	if c.Int("min-slaves") > 0 && mode == wire.ModeAsync {
		return nil, fmt.Errorf("--min-slaves %d with --sync async: nothing waits for the slaves in async mode; use --sync fsync or sync", c.Int("min-slaves"))
	}
	if c.Duration("sync-timeout") <= 0 {
		return nil, fmt.Errorf("--sync-timeout %v: want a positive duration", c.Duration("sync-timeout"))
	}
	backlog, err := daemon.ParseSize(c.String("backlog"))
	if err != nil {
		return nil, fmt.Errorf("--backlog: %w", err)
	}
	if backlog < 16<<20 {
		return nil, fmt.Errorf("--backlog %s: want at least 16M", c.String("backlog"))
	}
	if n := c.Int("lanes"); n < 1 || n > wire.MaxLanes {
		return nil, fmt.Errorf("--lanes %d: want 1 to %d", n, wire.MaxLanes)
	}
	var comp *wire.Compressor
	level, err := strconv.Atoi(c.String("compress"))
	if err != nil || level < 0 || level > 4 {
		return nil, fmt.Errorf("-z %q: want 0 (off), or a zstd level from 1 (fastest) to 4 (best)", c.String("compress"))
	}
	if level > 0 {
		if comp, err = wire.NewCompressor(level); err != nil {
			return nil, fmt.Errorf("-z %d: %w", level, err)
		}
	}
	identity, err := daemon.Identity(c, certs.RoleMaster, log)
	if err != nil {
		return nil, err
	}
	targets := c.StringSlice("connect")
	connectFromFile := false
	if path := c.String("config"); path != "" {
		list, ok, err := daemon.ConfigList(path, c.App.Flags, "connect")
		connectFromFile = err == nil && ok && slices.Equal(list, targets)
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("no slave given: use -c HOST:PORT (repeatable)")
	}
	var peers []quictransport.Peer
	seen := map[string]bool{}
	names := &slaveNames{}
	for _, t := range targets {
		p, err := peerFor(identity, names, t)
		if err != nil {
			return nil, err
		}
		if seen[p.Addr] {
			return nil, fmt.Errorf("-c %s given twice", p.Addr)
		}
		seen[p.Addr] = true
		peers = append(peers, p)
	}
	return &config{
		log:        log,
		dir:        dir,
		mount:      mnt,
		journalDir: journalDir,
		journalMax: journalMax,
		slaveState: slaveState,
		transport: quictransport.MasterConfig{
			Peers:       peers,
			CheckPeer:   identity.CheckPeer,
			Mode:        mode,
			SyncTimeout: c.Duration("sync-timeout"),
			MinSlaves:   c.Int("min-slaves"),
			Compressor:  comp,
			Backlog:     backlog,
			Lanes:       c.Int("lanes"),
			Logger:      log,
		},
		fuse: mirrorfs.Options{
			Backing:    dir,
			Mode:       mode,
			AllowOther: c.Bool("allow-other"),
			Devices:    c.Bool("allow-devices"),
			Debug:      c.Bool("debug-fuse"),
			Logger:     log,
		},
		policy:          ownPolicy(c.Bool("allow-setuid"), c.Bool("allow-devices")),
		drainTimeout:    c.Duration("drain-timeout"),
		metricsAddr:     c.String("metrics-addr"),
		identity:        identity,
		names:           names,
		configFile:      c.String("config"),
		connectFromFile: connectFromFile,
	}, nil
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
