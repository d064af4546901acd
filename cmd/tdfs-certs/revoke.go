package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/certs"
)

// crlDays is the default validity of the revocation list (its NextUpdate):
// certs.CRLValidity.
const crlDays = 365

func revokeCommand() *cli.Command {
	return &cli.Command{
		Name:      "revoke",
		Usage:     "revoke a certificate: add it to DIR/ca.crl, the revocation list daemons read with --crl",
		UsageText: progName + " revoke [--dir DIR] [--days N] NAME|FILE.crt",
		ArgsUsage: "NAME|FILE.crt",
		Description: "Adds DIR/NAME.crt (or the certificate FILE.crt, for one moved aside when it was renewed) to\n" +
			"DIR/ca.crl, signed by the CA in DIR, keeping the entries already there and raising the CRL number.\n" +
			"The list is current for --days (daemons keep using an outdated list, and warn daily); revoking a\n" +
			"certificate again re-signs the list for --days more. Copy DIR/ca.crl to every host whose daemon\n" +
			"runs with --crl: they reload it within seconds, or at once on SIGHUP, and close a connection\n" +
			"already established with the revoked certificate.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Value: ".", EnvVars: []string{"TDFS_CERT_DIR"}, TakesFile: true,
				Usage: "`DIR` holding ca.crt, ca.key and ca.crl"},
			&cli.IntFlag{Name: "days", Value: crlDays, EnvVars: []string{"TDFS_CRL_DAYS"},
				Usage: "the revocation list is current for `N` days (its next update)"},
		},
		OnUsageError: onUsageError,
		Action:       revoke,
	}
}

func revoke(c *cli.Context) error {
	if err := checkArgs(c); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return usageError("revoke takes one NAME or FILE.crt, got %q (usage: %s)", c.Args().Slice(), c.Command.UsageText)
	}
	dir, days := c.String("dir"), c.Int("days")
	if dir == "" {
		return usageError("--dir is empty")
	}
	if days < 1 || days > maxDays {
		return usageError("--days %d: want 1 to %d", days, maxDays)
	}
	arg := c.Args().First()
	file := arg
	if !strings.ContainsRune(arg, '/') && !strings.HasSuffix(arg, ".crt") {
		if err := certs.CheckName(arg); err != nil {
			return usageError("%v", err)
		}
		if strings.EqualFold(arg, "ca") {
			return usageError("%q is the CA itself: to retire a CA, stop trusting it (remove it from --ca files)", arg)
		}
		file = filepath.Join(dir, arg+".crt")
	}
	cert, err := readCert(file)
	if err != nil {
		return err
	}
	if cert.IsCA {
		return usageError("%s is a CA certificate: to retire a CA, stop trusting it (remove it from --ca files)", file)
	}
	ca, err := loadCA(dir)
	if err != nil {
		return err
	}
	crl := filepath.Join(dir, "ca.crl")
	validity := time.Duration(days) * 24 * time.Hour
	already, err := certs.RevokeFile(crl, ca, cert, validity)
	if err != nil {
		if isIOError(err) {
			return runtimeError(err)
		}
		return usageError("%v", err)
	}
	what := "revoked"
	if already {
		what = "was already revoked; re-signed the list"
	}
	fmt.Fprintf(c.App.ErrWriter, "%s: %s %q (serial %s, %s); the list is current until %s: copy it to the hosts running with --crl\n",
		progName, what, cert.Subject.CommonName, certs.Serial(cert.SerialNumber), file,
		time.Now().Add(validity).Format(time.DateOnly))
	fmt.Fprintln(c.App.Writer, crl)
	return nil
}

// readCert reads the first PEM certificate of file.
func readCert(file string) (*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, usageError("%s: no such certificate", file)
		}
		return nil, usageError("%v", err)
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, usageError("%s holds no PEM certificate", file)
		}
		if b.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, usageError("%s: %v", file, err)
			}
			return cert, nil
		}
	}
}

// isIOError tells a failure to read or write the list (a runtime failure)
// from a refusal of what is there (not signed by this CA, garbage).
func isIOError(err error) bool {
	var pe *fs.PathError
	var le *os.LinkError
	return errors.As(err, &pe) || errors.As(err, &le)
}
