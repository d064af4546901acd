package main

import (
	"crypto"
	"crypto/x509"
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

// Default validity in days: certs.CAValidity and certs.LeafValidity.
const (
	caDays   = 3650
	leafDays = 730
	// maxDays keeps NotAfter within what anyone can mean (100 years).
	maxDays = 36500
)

// flags are the same for every command; only the default of --days differs.
func flags(days int) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "dir", Value: ".", EnvVars: []string{"TDFS_CERT_DIR"}, TakesFile: true,
			Usage: "`DIR` holding ca.crt and ca.key, where certificates are written"},
		&cli.StringFlag{Name: "key-type", Value: "ed25519", EnvVars: []string{"TDFS_KEY_TYPE"},
			Usage: "key `TYPE`: ed25519 (small certificates, quick QUIC handshakes) or p256 (ECDSA P-256)"},
		&cli.IntFlag{Name: "days", Value: days, EnvVars: []string{"TDFS_CERT_DAYS"},
			Usage: "validity of the new certificate in `N` days"},
	}
}

func caCommand() *cli.Command {
	return &cli.Command{
		Name:         "ca",
		Usage:        "create the certificate authority: DIR/ca.crt and DIR/ca.key (mode 0600)",
		UsageText:    progName + " ca [--dir DIR] [--key-type TYPE] [--days N]",
		Description:  "Creates DIR (mode 0700) if it is missing. Refuses to overwrite an existing CA.",
		Flags:        flags(caDays),
		OnUsageError: onUsageError,
		Action:       newCA,
	}
}

func masterCommand() *cli.Command {
	return &cli.Command{
		Name:         "master",
		Usage:        "issue a master certificate (clientAuth): DIR/NAME.crt and DIR/NAME.key",
		UsageText:    progName + " master [--dir DIR] [--key-type TYPE] [--days N] NAME",
		ArgsUsage:    "NAME",
		Description:  "NAME is what slaves match with --allow-master. Needs the CA in DIR.",
		Flags:        flags(leafDays),
		OnUsageError: onUsageError,
		Action:       func(c *cli.Context) error { return issue(c, certs.RoleMaster) },
	}
}

func slaveCommand() *cli.Command {
	return &cli.Command{
		Name:      "slave",
		Usage:     "issue a slave certificate (serverAuth): DIR/NAME.crt and DIR/NAME.key",
		UsageText: progName + " slave [--dir DIR] [--key-type TYPE] [--days N] NAME [HOST|IP ...]",
		ArgsUsage: "NAME [HOST|IP ...]",
		Description: "The certificate is valid for NAME and each HOST or IP: list every name or address masters\n" +
			"dial this slave by. Needs the CA in DIR.",
		Flags:        flags(leafDays),
		OnUsageError: onUsageError,
		Action:       func(c *cli.Context) error { return issue(c, certs.RoleSlave) },
	}
}

// options are the flags every command shares, checked.
type options struct {
	dir     string
	keyType certs.KeyType
	days    int
}

func parseOptions(c *cli.Context) (options, error) {
	o := options{dir: c.String("dir"), days: c.Int("days")}
	if o.dir == "" {
		return o, usageError("--dir is empty")
	}
	kt, err := certs.ParseKeyType(c.String("key-type"))
	if err != nil {
		return o, usageError("--key-type: %v", err)
	}
	o.keyType = kt
	if o.days < 1 || o.days > maxDays {
		return o, usageError("--days %d: want 1 to %d", o.days, maxDays)
	}
	return o, nil
}

func (o options) validity() time.Duration { return time.Duration(o.days) * 24 * time.Hour }

// checkArgs refuses a flag given after the arguments: Go's flag package
// stops parsing at the first argument, so it would be taken for a name.
func checkArgs(c *cli.Context) error {
	for _, a := range c.Args().Slice() {
		if strings.HasPrefix(a, "-") {
			return usageError("%s: flags go before the arguments (usage: %s)", a, c.Command.UsageText)
		}
	}
	return nil
}

func newCA(c *cli.Context) error {
	if err := checkArgs(c); err != nil {
		return err
	}
	if c.NArg() > 0 {
		return usageError("ca takes no arguments, got %q (usage: %s)", c.Args().Slice(), c.Command.UsageText)
	}
	o, err := parseOptions(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return runtimeError(fmt.Errorf("create CA directory: %w", err))
	}
	// Check before the key is made: the common case of running ca twice
	// should answer at once and the same way as SavePair would.
	for _, f := range []string{"ca.crt", "ca.key"} {
		if p := filepath.Join(o.dir, f); exists(p) {
			return usageError("%s already exists: refusing to overwrite it", p)
		}
	}
	name := "tdfs CA"
	if h, err := os.Hostname(); err == nil && h != "" {
		name += " " + h // tells CAs apart in x509 errors ("candidate authority certificate ...")
	}
	ca, err := certs.NewCAWithValidity(name, o.keyType, o.validity())
	if err != nil {
		return runtimeError(err)
	}
	return save(c, o.dir, "ca", ca.Cert, ca.Key)
}

func issue(c *cli.Context, role certs.Role) error {
	if err := checkArgs(c); err != nil {
		return err
	}
	args := c.Args().Slice()
	switch {
	case len(args) == 0:
		return usageError("%s: NAME is missing (usage: %s)", c.Command.Name, c.Command.UsageText)
	case role == certs.RoleMaster && len(args) > 1:
		return usageError("master takes one NAME, got %q (usage: %s)", args, c.Command.UsageText)
	}
	name, hosts := args[0], args[1:]
	if err := certs.CheckName(name); err != nil {
		return usageError("%v", err)
	}
	if strings.EqualFold(name, "ca") {
		return usageError("NAME %q is reserved for the CA's own files", name)
	}
	for _, h := range hosts {
		if err := certs.CheckHost(h); err != nil {
			return usageError("%v", err)
		}
	}
	o, err := parseOptions(c)
	if err != nil {
		return err
	}
	ca, err := loadCA(o.dir)
	if err != nil {
		return err
	}
	for _, f := range []string{name + ".crt", name + ".key"} {
		if p := filepath.Join(o.dir, f); exists(p) {
			return usageError("%s already exists: refusing to overwrite it", p)
		}
	}
	notAfter := time.Now().Add(o.validity())
	cert, key, err := ca.Issue(certs.IssueOptions{Name: name, Hosts: hosts, Role: role, KeyType: o.keyType, NotAfter: notAfter})
	if err != nil {
		return runtimeError(err)
	}
	if err := save(c, o.dir, name, cert, key); err != nil {
		return err
	}
	if notAfter.After(ca.Cert.NotAfter.Add(24 * time.Hour)) {
		// Not an error: the certificate is good until then, but the chain
		// stops verifying when the CA expires. A day of slack keeps quiet
		// about a leaf issued with the CA's own --days.
		fmt.Fprintf(c.App.ErrWriter, "%s: warning: the CA expires %s, before %s.crt (%d days): it stops working then\n",
			progName, ca.Cert.NotAfter.Format(time.DateOnly), name, o.days)
	}
	return nil
}

// loadCA loads the CA from dir, telling a missing CA apart from a broken one.
func loadCA(dir string) (*certs.CA, error) {
	ca, err := certs.LoadCA(dir)
	if err == nil {
		return ca, nil
	}
	if errors.Is(err, fs.ErrNotExist) && !exists(filepath.Join(dir, "ca.crt")) && !exists(filepath.Join(dir, "ca.key")) {
		return nil, usageError("no CA in %s (run: %s ca --dir %s)", dir, progName, dir)
	}
	return nil, usageError("CA in %s: %v", dir, err)
}

func save(c *cli.Context, dir, name string, cert *x509.Certificate, key crypto.Signer) error {
	if err := certs.SavePair(dir, name, cert, key); err != nil {
		if errors.Is(err, certs.ErrExists) {
			return usageError("%v", err)
		}
		return runtimeError(err)
	}
	fmt.Fprintln(c.App.Writer, filepath.Join(dir, name+".crt"))
	fmt.Fprintln(c.App.Writer, filepath.Join(dir, name+".key"))
	return nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
