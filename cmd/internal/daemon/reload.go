package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/certs"
)

// hup receives the SIGHUPs Run catches: from the start of Run a SIGHUP no
// longer ends a daemon (its default action) but asks it to reload its
// certificates. One buffered slot: signals arriving during a reload fold
// into one more reload.
var hup = make(chan os.Signal, 1)

// hupHooks are called at every SIGHUP, after the certificates reload
// (OnSIGHUP).
var (
	hupMu    sync.Mutex
	hupHooks []func()
)

// OnSIGHUP calls f at every SIGHUP (after the certificates have been
// reloaded), from WatchIdentity's goroutine, until remove is called: a
// daemon rereads what else it reloads (tdfs-master: the slave set).
func OnSIGHUP(f func()) (remove func()) {
	hupMu.Lock()
	defer hupMu.Unlock()
	hupHooks = append(hupHooks, f)
	id := len(hupHooks) - 1
	return func() {
		hupMu.Lock()
		defer hupMu.Unlock()
		hupHooks[id] = nil
	}
}

func runHUPHooks() {
	hupMu.Lock()
	hooks := slices.Clone(hupHooks)
	hupMu.Unlock()
	for _, f := range hooks {
		if f != nil {
			f()
		}
	}
}

// reloadPoll is how often the certificate, key, CA and CRL files are
// checked for changes (size and modification time: no inotify, which
// misses a file replaced by a rename in a watched directory's parent, and
// costs a dependency). A change is loaded once it has held still for one
// poll, so within two polls.
const reloadPoll = 3 * time.Second

// IdentityFlags are --cert, --key, --ca and --crl, the same for both
// daemons: self is this daemon ("master"), peer the other ("slave"); the
// tdfs-certs command named self issues self's certificate.
func IdentityFlags(self, peer string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "cert", EnvVars: []string{"TDFS_CERT"}, TakesFile: true,
			Usage: "this " + self + "'s certificate `FILE` (PEM, from tdfs-certs " + self + ")"},
		&cli.StringFlag{Name: "key", EnvVars: []string{"TDFS_KEY"}, TakesFile: true,
			Usage: "this " + self + "'s private key `FILE` (PEM, mode 0600)"},
		&cli.StringFlag{Name: "ca", EnvVars: []string{"TDFS_CA"}, TakesFile: true,
			Usage: "CA certificate `FILE` that " + peer + " certificates must chain to"},
		&cli.StringFlag{Name: "crl", EnvVars: []string{"TDFS_CRL"}, TakesFile: true,
			Usage: "revocation list `FILE` (PEM, from tdfs-certs revoke): " + peer + " certificates whose serial it " +
				"lists are refused; reloaded with the certificates on SIGHUP or when it changes"},
	}
}

// Identity loads the --cert/--key pair, which must be a certificate for
// role, the --ca certificates and, with --crl, the revocation list, which
// must be signed by a CA of --ca. The store's TLS configurations use what
// it holds at each handshake; WatchIdentity keeps it current.
func Identity(c *cli.Context, role certs.Role, log *slog.Logger) (*certs.Store, error) {
	for _, f := range []string{"cert", "key", "ca"} {
		if c.String(f) == "" {
			return nil, fmt.Errorf("--%s is required (see --help)", f)
		}
	}
	return certs.LoadStore(certs.Files{
		Cert: c.String("cert"), Key: c.String("key"), CA: c.String("ca"), CRL: c.String("crl"),
	}, role, log)
}

// WatchIdentity reloads s on SIGHUP and when its files change, and logs
// the expiry warnings of certs.Store.CheckExpiry, until the returned
// function is called. A reload that fails is logged as an error naming the
// file, and the previous material stays in use.
//
// After each reload that succeeds, reloaded (if not nil) is called: the
// daemon closes the connections of peers the new revocation list revokes.
func WatchIdentity(s *certs.Store, log *slog.Logger, reloaded func()) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	tick := time.NewTicker(reloadPoll)
	done := make(chan struct{})
	go func() {
		defer close(done)
		watch(ctx, s, log, hup, tick.C, reloaded)
	}()
	return func() {
		cancel()
		tick.Stop()
		<-done
	}
}

func watch(ctx context.Context, s *certs.Store, log *slog.Logger, hup <-chan os.Signal, tick <-chan time.Time, reloaded func()) {
	s.CheckExpiry()
	for {
		var err error
		done := false
		select {
		case <-ctx.Done():
			return
		case <-hup:
			err = s.Reload()
			logReload(s, log, "SIGHUP", err)
			done = true
			runHUPHooks()
		case <-tick:
			var ok bool
			if ok, err = s.ReloadIfChanged(); ok || err != nil {
				logReload(s, log, "file change", err)
				done = ok
			}
		}
		if done && err == nil && reloaded != nil {
			reloaded()
		}
		// Rate-limited inside (once a day per certificate): cheap to ask.
		s.CheckExpiry()
	}
}

func logReload(s *certs.Store, log *slog.Logger, trigger string, err error) {
	if err != nil {
		log.Error("certificate reload failed, keeping the previous certificates: "+err.Error(), "trigger", trigger)
		return
	}
	f, leaf := s.Files(), s.Leaf()
	args := []any{"trigger", trigger, "cert", f.Cert, "serial", certs.Serial(leaf.SerialNumber),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "ca", f.CA}
	if f.CRL != "" {
		args = append(args, "crl", f.CRL, "revoked", s.Revoked())
	}
	log.Info("certificates reloaded: new connections use them; established ones stay up unless the list revokes their peer", args...)
}
