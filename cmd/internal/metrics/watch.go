package metrics

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/cmd/internal/daemon"
)

// Watch is the --watch of the status commands: it draws a snapshot again
// and again, as watch(1) does. On a terminal each snapshot replaces the
// last (the screen is cleared with ANSI codes); elsewhere (a pipe, a file)
// snapshots follow each other, separated by a blank line. Each starts with
// a header naming the command, the interval, the host and the time, unless
// JSON (then each snapshot is one JSON document on its own line).
type Watch struct {
	Out      io.Writer
	Terminal bool          // Out is a terminal: redraw in place
	Every    time.Duration // between snapshots
	Count    int           // stop after this many snapshots (0: only when ctx ends)
	Command  string        // for the header
	JSON     bool
	Now      func() time.Time // for tests (nil: time.Now)
}

// clearScreen moves the cursor home and erases the screen.
const clearScreen = "\033[H\033[2J"

// Run draws snapshots until ctx ends (it then returns 0) or Count of them
// were drawn (it then returns the last one's code). draw writes one
// snapshot and returns its code.
func (w Watch) Run(ctx context.Context, draw func(out io.Writer) int) int {
	now := w.Now
	if now == nil {
		now = time.Now
	}
	host, _ := os.Hostname()
	var buf bytes.Buffer
	for i := 1; ; i++ {
		buf.Reset()
		if w.Terminal {
			buf.WriteString(clearScreen)
		} else if i > 1 && !w.JSON {
			buf.WriteString("\n")
		}
		if !w.JSON {
			fmt.Fprintf(&buf, "Every %v: %s    %s: %s\n\n", w.Every, w.Command, host, now().Format(time.DateTime))
		}
		// The snapshot is drawn into the buffer and written at once: on a
		// terminal the screen is never left blank while the daemon answers.
		code := draw(&buf)
		w.Out.Write(buf.Bytes())
		if w.Count > 0 && i >= w.Count {
			return code
		}
		t := time.NewTimer(w.Every)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0
		case <-t.C:
		}
	}
}

// WatchFlags reads a status command's --watch, --interval and --count
// (either of the last two implies --watch). A duration after --watch
// (--watch 1s, as status once took it) is the interval.
func WatchFlags(c *cli.Context) (watch bool, every time.Duration, err error) {
	watch = c.Bool("watch") || c.IsSet("interval") || c.IsSet("count")
	every = c.Duration("interval")
	if c.NArg() > 0 {
		d, perr := time.ParseDuration(c.Args().First())
		if !c.Bool("watch") || c.NArg() > 1 || perr != nil || c.IsSet("interval") {
			return false, 0, fmt.Errorf("unexpected argument %q (see --help)", c.Args().First())
		}
		every = d
	}
	if every <= 0 {
		return false, 0, fmt.Errorf("--interval %v: want a positive duration", every)
	}
	if n := c.Int("count"); n < 0 {
		return false, 0, fmt.Errorf("--count %d: want 1 or more", n)
	}
	return watch, every, nil
}

// ExitNoAnswer is a status --check's exit code when the daemon does not
// answer (1: it answers, and not all is well).
const ExitNoAnswer = 2

// ExitStatus is a status command's result for exit code code; who names
// the daemon ("master", "slave").
func ExitStatus(name, who string, code int, check bool) error {
	switch {
	case code == daemon.ExitOK:
		return nil
	case check && code == ExitNoAnswer:
		return cli.Exit(name+" --check: no "+who+" answers", code)
	case check:
		return cli.Exit(name+" --check: not all is well", code)
	}
	return cli.Exit(name+": the "+who+"'s last answer failed", code)
}

// AdminError is an error asking a daemon through its admin socket, with
// the exit code it means.
type AdminError struct {
	Code int
	Err  error
}

func (e *AdminError) Error() string { return e.Err.Error() }

// ExitCodeOf is err's exit code: an AdminError's, else daemon.ExitRuntime.
func ExitCodeOf(err error) int {
	if ae, ok := err.(*AdminError); ok {
		return ae.Code
	}
	return daemon.ExitRuntime
}
