package metrics

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"time"
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
