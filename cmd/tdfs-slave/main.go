// Command tdfs-slave receives the op stream of a tdfs master over QUIC with
// mutual TLS and applies it beneath its own directory.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/certs"
	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/replayer"
)

const defaultStateRoot = "/var/lib/tdfs/slave"

func main() {
	os.Exit(run(os.Args, os.Stderr))
}

func newApp(stderr io.Writer) *cli.App {
	return &cli.App{
		Name:      "tdfs-slave",
		Usage:     "apply a tdfs master's operations to a local directory",
		UsageText: "tdfs-slave -m DIR --listen HOST:PORT --cert FILE --key FILE --ca FILE [--allow-master NAME ...]",
		Description: "tdfs-slave listens on UDP for one tdfs master (QUIC, mutual TLS), applies every operation it\n" +
			"sends beneath DIR, in order, and acknowledges how far it applied and made durable. SIGTERM or\n" +
			"SIGINT finishes the operation in hand, makes the state durable and exits 0.",
		HideHelpCommand: true,
		OnUsageError:    daemon.OnUsageError,
		ErrWriter:       stderr,
		Writer:          os.Stdout, // --help, so it can be paged
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "dir", Aliases: []string{"m"}, EnvVars: []string{"TDFS_DIR"},
				Usage: "replica `DIR`: the directory the master's tree is replicated into (must exist)"},
			&cli.StringFlag{Name: "listen", Value: fmt.Sprintf(":%d", quictransport.DefaultPort), EnvVars: []string{"TDFS_LISTEN"},
				Usage: "UDP `HOST:PORT` to listen on for the master"},
			&cli.StringFlag{Name: "cert", EnvVars: []string{"TDFS_CERT"}, TakesFile: true,
				Usage: "this slave's certificate `FILE` (PEM, from tdfs-certs slave)"},
			&cli.StringFlag{Name: "key", EnvVars: []string{"TDFS_KEY"}, TakesFile: true,
				Usage: "this slave's private key `FILE` (PEM, mode 0600)"},
			&cli.StringFlag{Name: "ca", EnvVars: []string{"TDFS_CA"}, TakesFile: true,
				Usage: "CA certificate `FILE` that master certificates must chain to"},
			&cli.StringSliceFlag{Name: "allow-master", EnvVars: []string{"TDFS_ALLOW_MASTER"},
				Usage: "accept only masters whose certificate `NAME` is one of these (repeatable; default: any master certificate from the CA)"},
			&cli.StringFlag{Name: "state", EnvVars: []string{"TDFS_STATE"},
				Usage: "state `DIR` outside the replica, where the slave records how far it got (default " + defaultStateRoot + "/<DIR with / as _>)"},
			&cli.StringFlag{Name: "max-pending", Value: "256M", EnvVars: []string{"TDFS_MAX_PENDING"},
				Usage: "`SIZE` of received operations buffered ahead of those applied (K, M, G suffixes)"},
		}, daemon.LogFlags()...),
		Action: daemon.Action(configure, serve),
	}
}

func run(args []string, stderr io.Writer) int {
	return daemon.Run(newApp(stderr), args, stderr)
}

type config struct {
	server   quictransport.ServerConfig
	dir      string
	stateDir string
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
	pair, pool, err := daemon.Identity(c, certs.RoleSlave)
	if err != nil {
		return nil, err
	}
	pending, err := daemon.ParseSize(c.String("max-pending"))
	if err != nil {
		return nil, fmt.Errorf("--max-pending: %w", err)
	}
	if pending < 4<<20 {
		return nil, fmt.Errorf("--max-pending %s: want at least 4M (a write frame is up to 1M)", c.String("max-pending"))
	}
	return &config{
		dir:      dir,
		stateDir: stateDir,
		server: quictransport.ServerConfig{
			Listen:     c.String("listen"),
			TLS:        certs.ServerConfig(pair, pool, c.StringSlice("allow-master")),
			MaxPending: pending,
			Logger:     log,
		},
	}, nil
}

func serve(ctx context.Context, cfg *config) error {
	log := cfg.server.Logger
	release, err := daemon.LockDirs(cfg.dir, cfg.stateDir)
	if err != nil {
		return err
	}
	defer release()
	if err := os.MkdirAll(cfg.stateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	suspects, inos, all, err := openSuspects(cfg.stateDir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	defer suspects.Close()
	r, err := replayer.New(cfg.dir, replayer.Options{Chown: os.Geteuid() == 0, Logger: log, Suspects: suspects})
	if err != nil {
		return err
	}
	defer r.Close()
	r.SetSuspects(inos, all)
	if os.Geteuid() != 0 {
		log.Warn("not running as root: owners are not replicated")
	}
	h, err := newHandler(r, cfg.dir, cfg.stateDir, log)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	defer h.close()
	st := h.State()
	if st.Resyncing {
		log.Warn("this replica's tree is of unknown state: the master will compare it with its own and repair it",
			"durable_seq", st.Durable)
	}
	if cfg.server.ResetKey, err = loadResetKey(cfg.stateDir); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	cfg.server.Handler = h
	srv, err := quictransport.NewServer(cfg.server)
	if err != nil {
		return err
	}
	log.Info("listening", "addr", srv.Addr().String(), "dir", cfg.dir, "state", cfg.stateDir,
		"epoch", fmt.Sprintf("%x", st.Epoch[:4]), "applied_seq", st.Applied, "durable_seq", st.Durable)
	if err := srv.Serve(ctx); err != nil {
		return err
	}
	log.Info("stopped", "durable_seq", h.durable())
	return nil
}
