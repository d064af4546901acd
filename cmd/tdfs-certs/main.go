// Command tdfs-certs creates a private certificate authority and issues
// master and slave certificates from it:
//
//	tdfs-certs ca     --dir DIR                     # DIR/ca.crt, DIR/ca.key
//	tdfs-certs master --dir DIR NAME                # DIR/NAME.crt, DIR/NAME.key (clientAuth)
//	tdfs-certs slave  --dir DIR NAME [HOST|IP ...]  # DIR/NAME.crt, DIR/NAME.key (serverAuth, SANs)
//	tdfs-certs revoke --dir DIR NAME|FILE.crt       # adds it to DIR/ca.crl (a CRL signed by the CA)
//
// It never overwrites a certificate or key file and writes keys with mode
// 0600; ca.crl is replaced atomically, its entries kept. It is a thin layer
// over package certs: flags in, certs calls, paths out. It does not renew
// (issue anew) or distribute certificates.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/cmd/internal/version"
)

// Exit codes of tdfs-certs (the same values as tdfs-master and tdfs-slave).
const (
	exitOK      = 0 // every file was written
	exitUsage   = 1 // bad command line or configuration (bad NAME, file exists, no CA in DIR): nothing written
	exitRuntime = 2 // failed while generating or writing (I/O error): nothing left behind
)

const progName = "tdfs-certs"

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// exitError carries the exit code of a failure to run.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

func runtimeError(err error) error {
	return &exitError{code: exitRuntime, err: err}
}

// run runs tdfs-certs with args (args[0] is the program name) and returns
// the exit code. Help and the paths written go to stdout; an error is one
// line on stderr.
func run(args []string, stdout, stderr io.Writer) int {
	err := newApp(stdout, stderr).Run(args)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "%s: %v\n", progName, err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	// Errors urfave/cli returns itself are about the command line.
	return exitUsage
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:  progName,
		Usage: "create a private CA, issue tdfs master and slave certificates, revoke them",
		Description: "Run \"ca\" once, then \"master\" for each master and \"slave\" for each slave, all with\n" +
			"the same --dir. Copy DIR/ca.crt and a host's NAME.crt and NAME.key to that host; keep\n" +
			"DIR/ca.key on the machine that issues certificates. Existing files are never overwritten.\n" +
			"\"revoke\" adds a certificate to DIR/ca.crl: copy that to the hosts whose daemons run with --crl.",
		HideHelpCommand: true, // exactly the commands below
		Version:         version.String(),
		Writer:          stdout,
		ErrWriter:       stderr,
		// run prints the error and picks the exit code; by default urfave/cli
		// would call os.Exit itself, which in-process tests cannot survive.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("unknown command %q (commands: ca, master, slave, revoke; see %s --help)", c.Args().First(), progName)
			}
			return usageError("no command given: use ca, master, slave or revoke (see %s --help)", progName)
		},
		Commands: []*cli.Command{caCommand(), masterCommand(), slaveCommand(), revokeCommand(),
			daemon.CompletionCommand(progName), daemon.ManCommand()},

		// <TAB> completion of commands and flags: see tdfs-certs completion.
		EnableBashCompletion: true,
	}
}

// onUsageError turns a flag parse error (unknown flag, unparsable value,
// also from an environment variable) into one line with a pointer to help.
func onUsageError(c *cli.Context, err error, isSubcommand bool) error {
	help := progName + " --help"
	if isSubcommand && c.Command != nil {
		help = progName + " " + c.Command.Name + " --help"
	}
	return usageError("%v (see %s)", err, help)
}
