// Package daemon holds what tdfs-master and tdfs-slave share on the command
// line: exit codes, logging flags, size parsing and path checks. It wires
// nothing together; each main does that.
package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// Exit codes of tdfs-master and tdfs-slave.
const (
	ExitOK      = 0 // clean shutdown (signal, or the mount was unmounted)
	ExitUsage   = 1 // bad flags or misconfiguration: nothing was started
	ExitRuntime = 2 // failed while running
)

// Flags for logging, shared by both daemons.
func LogFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"TDFS_LOG_LEVEL"},
			Usage: "log `LEVEL`: debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: []string{"TDFS_LOG_FORMAT"},
			Usage: "log `FORMAT`: text or json (one record per line on stderr)"},
	}
}

// Stderr is where the daemons log: os.Stderr, with a status line below
// the log when it is a terminal.
var Stderr = NewStatusLine(os.Stderr)

// Logger builds the logger the log flags ask for, writing to Stderr.
func Logger(c *cli.Context, name string) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	o := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch c.String("log-format") {
	case "text":
		h = slog.NewTextHandler(Stderr, o)
	case "json":
		h = slog.NewJSONHandler(Stderr, o)
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", c.String("log-format"))
	}
	return slog.New(h).With("prog", name), nil
}

// ParseSize parses a byte count such as 1048576, 512K, 256M, 2G or 1T
// (powers of 1024).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			t = strings.TrimSpace(t[:n-1])
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with K, M, G or T", s)
	}
	return v * mult, nil
}

// Dir resolves path to an absolute, symlink-free path of an existing
// directory, or says clearly what is wrong with it.
func Dir(flag, path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("%s is required", flag)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", flag, path, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s %s: no such directory", flag, path)
		}
		return "", fmt.Errorf("%s %s: %w", flag, path, err)
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", flag, path, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%s %s: not a directory", flag, path)
	}
	return real, nil
}

// Within reports whether path is dir or lies beneath it (both absolute and
// clean).
func Within(path, dir string) bool {
	if path == dir {
		return true
	}
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// OnUsageError turns a flag parsing error into one line and ExitUsage
// instead of urfave/cli's "Incorrect Usage" followed by the whole help.
func OnUsageError(c *cli.Context, err error, _ bool) error {
	name := c.App.Name
	return cli.Exit(fmt.Sprintf("%s: %s (see %s --help)", name, longFlags(err.Error()), name), ExitUsage)
}

// flagInMessage is a flag as Go's flag package names it in its errors:
// "-name", whatever the user typed.
var flagInMessage = regexp.MustCompile(`(^|[\s:])-([A-Za-z0-9][A-Za-z0-9-]+)`)

// longFlags writes the long flags an error names as --name, as --help
// shows them (one-letter flags keep their single dash).
func longFlags(msg string) string {
	return flagInMessage.ReplaceAllString(msg, "$1--$2")
}
