package daemon

import (
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// StatusLine is the daemons' stderr. On a terminal it keeps one status
// line (a progress bar) below the log: each log record clears the line,
// is written, and the line is drawn again, so the two never mix. Elsewhere
// (a file, a pipe, journald) it passes log records through and draws
// nothing: a log must not fill with redrawn bars.
type StatusLine struct {
	mu   sync.Mutex
	w    io.Writer
	tty  bool
	line string
}

// NewStatusLine wraps w; the status line is drawn only if w is a terminal.
func NewStatusLine(w io.Writer) *StatusLine {
	return &StatusLine{w: w, tty: IsTerminal(w)}
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Terminal reports whether the status line is drawn.
func (s *StatusLine) Terminal() bool { return s.tty }

// clearSeq returns to the start of the line and erases it.
const clearSeq = "\r\033[K"

// Write writes one log record above the status line.
func (s *StatusLine) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.line != "" {
		io.WriteString(s.w, clearSeq)
	}
	n, err := s.w.Write(p)
	if s.line != "" {
		io.WriteString(s.w, s.line)
	}
	return n, err
}

// Set draws line as the status line ("" removes it), cut to the
// terminal's width (a line that wraps could not be erased). On anything
// but a terminal it does nothing.
func (s *StatusLine) Set(line string) {
	if !s.tty {
		return
	}
	if f, ok := s.w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 1 && len(line) >= int(ws.Col) {
			line = line[:ws.Col-1]
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if line == s.line {
		return
	}
	io.WriteString(s.w, clearSeq+line)
	s.line = line
}
