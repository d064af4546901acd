// Command tdfs-slave receives the op stream of a tdfs master over QUIC with
// mutual TLS and applies it beneath its own directory.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/certs"
	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/cmd/internal/version"
	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/replayer"
	"github.com/tdfs/tdfs/slave"
	"github.com/tdfs/tdfs/wire"
)

const defaultStateRoot = "/var/lib/tdfs/slave"

func main() {
	os.Exit(run(os.Args, os.Stderr))
}

func newApp(stderr io.Writer) *cli.App {
	return &cli.App{
		Name:            "tdfs-slave",
		Usage:           "apply a tdfs master's operations to a local directory",
		UsageText:       "tdfs-slave -m DIR --listen HOST:PORT --cert FILE --key FILE --ca FILE [--allow-master NAME ...]",
		Description:     description,
		Version:         version.String(),
		HideHelpCommand: true,
		OnUsageError:    daemon.OnUsageError,
		ErrWriter:       stderr,
		Writer:          os.Stdout, // --help, so it can be paged
		Flags:           daemon.WithConfigFile(append(flags(), daemon.LogFlags()...)),
		Action:          daemon.Action(configure, serve),

		Before:   daemon.LoadConfigFile,
		Commands: []*cli.Command{statusCommand(), daemon.CompletionCommand("tdfs-slave"), daemon.ManCommand()},
		// <TAB> completion of commands and flags: see tdfs-slave completion.
		EnableBashCompletion: true,
	}
}

func run(args []string, stderr io.Writer) int {
	return daemon.Run(newApp(stderr), args, stderr)
}

type config struct {
	server   quictransport.SlaveConfig
	dir      string
	stateDir string
	// metricsAddr serves /metrics and /seq ("" for none).
	metricsAddr string
	// replay holds what the replayer refuses or bounds (--allow-setuid,
	// --max-file-size, --max-handles).
	replay   replayer.Options
	identity *certs.Store
	// handlesSet: --max-handles was given (the open-file limit is then
	// checked against it, and a warning names the mismatch).
	handlesSet bool
}

func configure(c *cli.Context) (*config, error) {
	log, err := daemon.Logger(c, "tdfs-slave")
	if err != nil {
		return nil, err
	}
	dir, err := daemon.Dir("-m", c.String("dir"))
	if err != nil {
		return nil, err
	}
	stateDir, err := daemon.StateDir(c.String("state"), defaultStateRoot, dir, dir)
	if err != nil {
		return nil, err
	}
	// A port in use is a configuration error, told before anything starts.
	if err := daemon.ProbeListen("--listen", "udp", c.String("listen")); err != nil {
		return nil, err
	}
	if a := c.String("metrics-addr"); a != "" {
		if err := daemon.ProbeListen("--metrics-addr", "tcp", a); err != nil {
			return nil, err
		}
	}
	identity, err := daemon.Identity(c, certs.RoleSlave, log)
	if err != nil {
		return nil, err
	}
	lim, err := limitFlags(c)
	if err != nil {
		return nil, err
	}
	return &config{
		dir:         dir,
		stateDir:    stateDir,
		handlesSet:  c.IsSet("max-handles"),
		metricsAddr: c.String("metrics-addr"),
		identity:    identity,
		server: quictransport.SlaveConfig{
			Listen:     c.String("listen"),
			TLS:        identity.ServerConfig(c.StringSlice("allow-master")),
			CheckPeer:  identity.CheckPeer,
			MaxPending: lim.pending,
			MaxStreams: c.Int("max-streams"),
			MaxLanes:   lim.lanes,
			Logger:     log,
		},
		replay: replayer.Options{AllowSetuid: c.Bool("allow-setuid"), AllowDevices: c.Bool("allow-devices"), MaxFileSize: uint64(lim.maxFile),
			MaxHandles: maxHandles(c.Int("max-handles"), c.IsSet("max-handles"))},
	}, nil
}

// limits are the bounds a slave sets on what a master may make it hold.
type limits struct {
	pending, maxFile int64
	lanes            int
}

// limitFlags reads and checks --max-pending, --max-file-size,
// --max-handles, --max-streams and --max-lanes.
func limitFlags(c *cli.Context) (limits, error) {
	var lim limits
	var err error
	lim.pending, err = daemon.ParseSize(c.String("max-pending"))
	if err != nil {
		return lim, fmt.Errorf("--max-pending: %w", err)
	}
	if lim.pending < 4<<20 {
		return lim, fmt.Errorf("--max-pending %s: want at least 4M (a write frame is up to 1M)", c.String("max-pending"))
	}
	lim.maxFile, err = daemon.ParseSize(c.String("max-file-size"))
	if err != nil {
		return lim, fmt.Errorf("--max-file-size: %w", err)
	}
	if lim.maxFile < 1 {
		return lim, fmt.Errorf("--max-file-size %s: want at least 1", c.String("max-file-size"))
	}
	if n := c.Int("max-handles"); n < 1 {
		return lim, fmt.Errorf("--max-handles %d: want at least 1", n)
	}
	if n := c.Int("max-streams"); n < 1 || n > 4096 {
		return lim, fmt.Errorf("--max-streams %d: want 1 to 4096", n)
	}
	lim.lanes = c.Int("max-lanes")
	if lim.lanes < 1 || lim.lanes > wire.MaxLanes {
		return lim, fmt.Errorf("--max-lanes %d: want 1 to %d", lim.lanes, wire.MaxLanes)
	}
	if lim.lanes*c.Int("max-streams") > 4096 {
		if c.IsSet("max-lanes") {
			return lim, fmt.Errorf("--max-lanes %d times --max-streams %d is above 4096 streams", lim.lanes, c.Int("max-streams"))
		}
		lim.lanes = max(1, 4096/c.Int("max-streams")) // the default gives way to a large --max-streams
	}
	return lim, nil
}

// openReplica opens the replica and its state dir, saying what an operator
// should know first: no root, too few descriptors, a tree of unknown state.
func openReplica(cfg *config) (*slave.Replica, error) {
	log := cfg.server.Logger
	ro := cfg.replay
	ro.Chown, ro.Logger = os.Geteuid() == 0, log
	h, err := slave.Open(cfg.dir, cfg.stateDir, ro)
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		log.Warn("not running as root: owners are not replicated, and trusted.* xattrs and POSIX ACLs are refused")
	}
	if cfg.handlesSet {
		checkFdLimit(log, ro.MaxHandles)
	}
	if st := h.State(); st.Resyncing {
		log.Warn("this replica's tree is of unknown state: the master will compare it with its own and repair it",
			"durable_seq", st.Durable)
	}
	return h, nil
}

// serve runs the slave until ctx ends: it opens the replica, listens, and
// serves one master at a time.
func serve(ctx context.Context, cfg *config) error {
	log := cfg.server.Logger
	release, err := daemon.LockDirs(cfg.dir, cfg.stateDir)
	if err != nil {
		return err
	}
	defer release()
	// Certificates reload on SIGHUP and on file change, for new
	// handshakes; the master connected stays, unless the reloaded
	// revocation list revokes its certificate.
	var server atomic.Pointer[quictransport.Slave] // set once it exists
	defer daemon.WatchIdentity(cfg.identity, log, func() {
		if srv := server.Load(); srv != nil {
			if err := srv.Recheck(); err != nil {
				log.Warn("closed the connection of a master whose certificate is now revoked", "err", err)
			}
		}
	})()
	h, err := openReplica(cfg)
	if err != nil {
		return err
	}
	defer h.Close()
	st := h.State()
	if cfg.server.ResetKey, err = slave.LoadResetKey(cfg.stateDir); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	cfg.server.Handler = h
	pol := h.Policy()
	cfg.server.Policy = &pol
	srv, err := quictransport.NewSlave(cfg.server)
	if err != nil {
		return err
	}
	server.Store(srv)
	l := &live{dir: cfg.dir, h: h, srv: srv}
	if admin, err := listenAdmin(cfg.stateDir, l); err != nil {
		log.Warn("no admin socket: tdfs-slave status will not reach this slave", "err", err)
	} else {
		defer admin.Close()
	}
	if cfg.metricsAddr != "" {
		mctx, stopMetrics := context.WithCancel(context.Background())
		defer stopMetrics()
		if err := serveMetrics(mctx, cfg.metricsAddr, l, log); err != nil {
			return err
		}
	}
	log.Info("listening", "addr", srv.Addr().String(), "dir", cfg.dir, "state", cfg.stateDir,
		"epoch", fmt.Sprintf("%x", st.Epoch[:4]), "applied_seq", st.Applied, "durable_seq", st.Durable)
	// Serving: the socket is bound (NewSlave listens). STOPPING=1 as
	// soon as the signal comes; the pings go on until Serve returns.
	stopWatchdog := daemon.Ready("listening on " + srv.Addr().String() + ", replicating into " + cfg.dir)
	defer stopWatchdog()
	var stopping sync.Once
	stopNotify := context.AfterFunc(ctx, func() { stopping.Do(daemon.Stopping) })
	defer stopNotify()
	err = srv.Serve(ctx)
	// Serve can see ctx done before the AfterFunc starts (a context
	// closes Done before it runs them): send it here too, once, and
	// before the process exits.
	stopping.Do(daemon.Stopping)
	if err != nil {
		return err
	}
	log.Info("stopped", "durable_seq", h.DurableSeq())
	return nil
}

// fdReserve is what the slave keeps of the open-file limit beyond the
// master's handles: a resync pass's files, the state dir, sockets.
const fdReserve = 2048

// maxHandles is --max-handles, or, when not given, the default lowered to
// what the open-file limit holds (Go raises the soft limit to the hard one
// at start): the bound is then a clear "limit exceeded", never "too many
// open files".
func maxHandles(n int, set bool) int {
	if set {
		return n
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < uint64(n)+fdReserve {
		return max(1024, int(rl.Cur)-fdReserve)
	}
	return n
}

// checkFdLimit warns when the open-file limit cannot hold maxHandles
// files plus what the slave needs besides (a resync pass holds up to
// 1024, and sockets, logs, the state dir).
func checkFdLimit(log *slog.Logger, maxHandles int) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	if need := uint64(maxHandles) + fdReserve; rl.Cur < need {
		log.Warn("the open-file limit is below --max-handles plus what a resync pass holds: a master holding "+
			"that many files open gets \"too many open files\" instead of a clear limit; raise LimitNOFILE or lower --max-handles",
			"nofile", rl.Cur, "max_handles", maxHandles)
	}
}

// description is the help text under tdfs-slave --help.
const description = "tdfs-slave listens on UDP for one tdfs master (QUIC, mutual TLS), applies every operation it\n" +
	"sends beneath DIR, in order, and acknowledges how far it applied and made durable. SIGTERM or\n" +
	"SIGINT finishes the operation in hand, makes the state durable and exits 0. SIGHUP reloads the\n" +
	"certificate, key, CA and CRL (also done within seconds of a change to their files). Under systemd\n" +
	"(Type=notify) it reports READY=1 once it listens, and pings the watchdog.\n\n" +
	"It does not dial the master (the master dials it), does not serve files to anyone (DIR is an\n" +
	"ordinary directory: share it with a web server, NFS, ...), does not detach from the terminal,\n" +
	"and refuses device nodes and paths that lead out of DIR. Nothing else should write to DIR: a\n" +
	"comparison pass of the master (a resync, verify --repair) undoes such changes.\n\n" +
	"Every flag can also come from an environment variable (shown as [$TDFS_...]) or from the\n" +
	"YAML file named by --config (keys are the long flag names); the command line wins over the\n" +
	"environment, which wins over the file.\n\n" +
	"Examples:\n" +
	"   tdfs-slave -m /srv/replica --cert /etc/tdfs/web1.crt --key /etc/tdfs/web1.key \\\n" +
	"       --ca /etc/tdfs/ca.crt --allow-master master\n" +
	"   tdfs-slave --config /etc/tdfs/slave.yaml --listen 10.0.0.2:7430"

// flags are the daemon's own flags (the log flags and --config are added
// to them).
func flags() []cli.Flag {
	return slices.Concat([]cli.Flag{
		&cli.StringFlag{Name: "dir", Aliases: []string{"m"}, EnvVars: []string{"TDFS_DIR"},
			Usage: "replica `DIR`: the directory the master's tree is replicated into (must exist)"},
		&cli.StringFlag{Name: "listen", Value: fmt.Sprintf(":%d", quictransport.DefaultPort), EnvVars: []string{"TDFS_LISTEN"},
			Usage: "UDP `HOST:PORT` to listen on for the master"},
	}, daemon.IdentityFlags("slave", "master"), []cli.Flag{
		&cli.StringSliceFlag{Name: "allow-master", EnvVars: []string{"TDFS_ALLOW_MASTER"},
			Usage: "accept only masters whose certificate `NAME` is one of these (repeatable; default: any master certificate from the CA)"},
		&cli.StringFlag{Name: "state", EnvVars: []string{"TDFS_STATE"},
			Usage: "state `DIR` outside the replica, where the slave records how far it got (default " + defaultStateRoot + "/<DIR with / as _>)"},
		&cli.StringFlag{Name: "max-pending", Value: "256M", EnvVars: []string{"TDFS_MAX_PENDING"},
			Usage: "`SIZE` of received operations buffered ahead of those applied (K, M, G suffixes)"},
		&cli.BoolFlag{Name: "allow-setuid", EnvVars: []string{"TDFS_ALLOW_SETUID"},
			Usage: "replicate setuid and setgid bits on files (directories' always are) and file capabilities " +
				"(security.capability); without it the master's mount refuses them (EPERM), and what its tree " +
				"already holds is left out of this replica and reported"},
		&cli.BoolFlag{Name: "allow-devices", EnvVars: []string{"TDFS_ALLOW_DEVICES"},
			Usage: "replicate character and block device nodes (mount the replica nodev); without it the master's " +
				"mount refuses mknod of a device (EPERM), and devices its tree already holds are left out of this replica and reported"},
		&cli.StringFlag{Name: "max-file-size", Value: "16T", EnvVars: []string{"TDFS_MAX_FILE_SIZE"},
			Usage: "largest file this replica holds (`SIZE`, K, M, G, T suffixes): the master's mount refuses a write, " +
				"fallocate or truncate beyond it (EFBIG)"},
		&cli.IntFlag{Name: "max-handles", Value: replayer.DefaultMaxHandles, EnvVars: []string{"TDFS_MAX_HANDLES"},
			Usage: "files the slave keeps open for the master's open files, at most (`N`, one descriptor each; " +
				"when not given, lowered to fit the open-file limit)"},
		&cli.IntFlag{Name: "max-streams", Value: quictransport.DefaultMaxStreams, EnvVars: []string{"TDFS_MAX_STREAMS"},
			Usage: "data streams (large writes in flight) a master may have open at once, at most (`N`)"},
		&cli.IntFlag{Name: "max-lanes", Value: quictransport.DefaultMaxLanes, EnvVars: []string{"TDFS_MAX_LANES"},
			Usage: fmt.Sprintf("QUIC connections a master may use at once for its data (its --lanes), the first one "+
				"included, at most (`N`, 1 to %d; 1 allows no lanes): each may have --max-streams data streams open, "+
				"and all share --max-pending; N times --max-streams must stay within 4096", wire.MaxLanes)},
		&cli.StringFlag{Name: "metrics-addr", EnvVars: []string{"TDFS_METRICS_ADDR"},
			Usage: "serve Prometheus metrics at http://`HOST:PORT`/metrics and the applied and durable seqs " +
				"as JSON at /seq, for read-your-writes routing (off by default)"},
	})
}
