package daemon

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// ListenAdmin listens on the unix socket p, a daemon's admin socket in a
// directory it holds locked: mode 0600, so only the daemon's user (root)
// may talk to it. A socket left there by a daemon that was killed is
// removed first: the lock says no other daemon uses it.
func ListenAdmin(p string) (net.Listener, error) {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	// The umask makes the socket 0600 from its creation on: a chmod
	// afterwards would leave a window. It is process-wide, and the
	// daemons listen on their admin socket once, at startup.
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", p)
	unix.Umask(old)
	return ln, err
}

// AdminSocketName is the admin socket's name in a daemon's state dir (the
// master's journal dir, the slave's state dir).
const AdminSocketName = "admin.sock"

// AdminSocket is the admin socket a subcommand's flags name:
// --admin-socket; else the one in the state dir of -m and stateFlag
// (--journal, --state; defaultRoot as the daemon defaults it); else of those
// the daemon runs with from --config, read as the daemon reads it: by
// app, its own command line, with the environment's TDFS_* variables over
// the file.
func AdminSocket(c *cli.Context, app func() *cli.App, stateFlag, defaultRoot string) (string, error) {
	if p := c.String("admin-socket"); p != "" {
		return p, nil
	}
	dirArg, stateArg := c.String("dir"), c.String(stateFlag)
	file := ""
	for _, x := range c.Lineage() {
		if file = x.String("config"); file != "" {
			break
		}
	}
	if file != "" && !(c.IsSet("dir") && c.IsSet(stateFlag)) {
		fdir, fstate, err := configDirs(app(), file, stateFlag)
		if err != nil {
			return "", err
		}
		if !c.IsSet("dir") {
			dirArg = fdir
		}
		if !c.IsSet(stateFlag) {
			stateArg = fstate
		}
	}
	dir, err := Dir("-m", dirArg)
	if err != nil {
		return "", err
	}
	sdir, err := StateDir(stateArg, defaultRoot, dir)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", stateFlag, err)
	}
	return filepath.Join(sdir, AdminSocketName), nil
}

// configDirs is the -m and stateFlag app runs with from the config file.
func configDirs(app *cli.App, file, stateFlag string) (dir, state string, err error) {
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	app.ExitErrHandler = func(*cli.Context, error) {}
	app.Commands = nil
	app.Action = func(c *cli.Context) error {
		dir, state = c.String("dir"), c.String(stateFlag)
		return nil
	}
	if err := app.Run([]string{app.Name, "--config", file}); err != nil {
		return "", "", err
	}
	return dir, state, nil
}
