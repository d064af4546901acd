package metrics

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/cmd/internal/daemon"
)

// Status is a daemon's status command: it asks the daemon once, or every
// interval with --watch, and prints the answer, or with --check only what
// is wrong, returning the exit code each answer stands for.
type Status[S any] struct {
	Name string // the command, for errors: "tdfs-master status"
	Who  string // the daemon: "master", "slave"
	// JSON prints the answer (or the check's result) as JSON; Check prints
	// only the problems and exits 1 if there are any, 2 if no answer.
	JSON, Check bool
	Ask         func() (S, error)
	Problems    func(st S) []string
	Print       func(w io.Writer, st S)
}

// CheckAnswer is status --check --json.
type CheckAnswer struct {
	OK       bool     `json:"ok"`
	Problems []string `json:"problems"`
}

// Run asks and prints: once, or with watch every interval until ctx ends
// or count snapshots were shown (0: no bound). Its error carries the exit
// code (cli.Exit).
func (s Status[S]) Run(ctx context.Context, out io.Writer, watch bool, every time.Duration, count int) error {
	st, err := s.Ask()
	if err != nil && (!watch || !s.Check) {
		// The first answer fails: the flags are wrong, or no daemon runs.
		// Later ones, while watching, are shown and waited out.
		code := ExitCodeOf(err)
		if s.Check {
			code = ExitNoAnswer
		}
		return cli.Exit(s.Name+": "+err.Error(), code)
	}
	if !watch {
		return ExitStatus(s.Name, s.Who, s.Render(out, st, nil), s.Check)
	}
	first := true
	code := Watch{Out: out, Terminal: daemon.IsTerminal(out), Every: every, Count: count,
		Command: s.Name, JSON: s.JSON}.Run(ctx, func(w io.Writer) int {
		if !first {
			st, err = s.Ask()
		}
		first = false
		return s.Render(w, st, err)
	})
	return ExitStatus(s.Name, s.Who, code, s.Check)
}

// Render prints the answer (or the error getting it) to w and returns the
// exit code it stands for.
func (s Status[S]) Render(w io.Writer, st S, err error) int {
	if err != nil {
		code := ExitCodeOf(err)
		if s.Check {
			code = ExitNoAnswer
		}
		if s.JSON {
			json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		} else {
			fmt.Fprintln(w, err)
		}
		return code
	}
	if s.Check {
		ps := s.Problems(st)
		switch {
		case s.JSON:
			json.NewEncoder(w).Encode(CheckAnswer{OK: len(ps) == 0, Problems: ps})
		case len(ps) == 0:
			fmt.Fprintln(w, "ok")
		default:
			fmt.Fprintln(w, strings.Join(ps, "\n"))
		}
		if len(ps) > 0 {
			return daemon.ExitUsage // 1
		}
		return daemon.ExitOK
	}
	if s.JSON {
		json.NewEncoder(w).Encode(st)
		return daemon.ExitOK
	}
	s.Print(w, st)
	return daemon.ExitOK
}
