package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

// Run runs app with args under a context that SIGTERM and SIGINT cancel,
// and turns its result into an exit code, printing an error as one line on
// stderr. SIGHUP asks for a reload of the certificates (WatchIdentity)
// instead of ending the process.
func Run(app *cli.App, args []string, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	err := app.RunContext(ctx, args)
	if err == nil {
		return ExitOK
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		fmt.Fprintln(stderr, ec.Error())
		return ec.ExitCode()
	}
	fmt.Fprintf(stderr, "%s: %v\n", app.Name, err)
	return ExitUsage
}

// Action wraps a daemon's configure and serve steps into a cli action: a
// configuration error exits with ExitUsage, a failure while serving with
// ExitRuntime, each as one line naming the program.
func Action[C any](configure func(*cli.Context) (C, error), serve func(context.Context, C) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		name := c.App.Name
		if c.NArg() > 0 {
			if c.Args().First() == "help" && c.NArg() == 1 {
				return cli.ShowAppHelp(c) // the help command is hidden, not gone
			}
			return cli.Exit(name+": unexpected argument "+c.Args().First()+" (see --help)", ExitUsage)
		}
		cfg, err := configure(c)
		if err != nil {
			return cli.Exit(name+": "+err.Error(), ExitUsage)
		}
		stopProfile, err := cpuProfile(os.Getenv(CPUProfileEnv))
		if err != nil {
			return cli.Exit(name+": "+CPUProfileEnv+": "+err.Error(), ExitUsage)
		}
		defer stopProfile()
		if err := serve(c.Context, cfg); err != nil {
			return cli.Exit(name+": "+err.Error(), ExitRuntime)
		}
		return nil
	}
}

// CPUProfileEnv names the environment variable that makes a daemon write
// a CPU profile (go tool pprof) of its whole run to the file it names: for
// measuring where a daemon's CPU goes (tdfs-bench --profile), not a flag
// an operator needs.
const CPUProfileEnv = "TDFS_CPUPROFILE"

// cpuProfile starts a CPU profile into file ("" for none); stop ends it.
func cpuProfile(file string) (stop func(), err error) {
	if file == "" {
		return func() {}, nil
	}
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// StateDir resolves a --state value (default: root/<dir with / as _>) to
// an absolute path that lies outside each of the directories in outside.
func StateDir(value, root, dir string, outside ...string) (string, error) {
	if value == "" {
		value = filepath.Join(root, strings.ReplaceAll(dir, "/", "_"))
	}
	p, err := filepath.Abs(value)
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real
	}
	for _, o := range outside {
		if Within(p, o) {
			return "", fmt.Errorf("--state %s lies inside %s: it must be outside it", p, o)
		}
	}
	return p, nil
}

// LockDirs creates stateDir if needed and locks it and dir (the backing dir
// or the replica) for the life of the process; the returned function
// releases both.
func LockDirs(dir, stateDir string) (func(), error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w (use --state DIR)", err)
	}
	r1, err := Lock("-m", dir)
	if err != nil {
		return nil, err
	}
	r2, err := Lock("--state", stateDir)
	if err != nil {
		r1()
		return nil, err
	}
	return func() { r2(); r1() }, nil
}
