package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/certs"
	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/quictransport"
)

// The slave set changes while the master runs: `tdfs-master slave add`
// and `slave remove` through the admin socket, and SIGHUP, which reads the
// connect list of --config again and applies the difference. No unmount:
// an added slave is dialed and brought up to date (compared with the tree
// if it is a new replica), a removed one is disconnected and what the
// master held for it alone is released.

// peerFor makes the transport's view of the slave -c target names,
// registering its name for status (names).
func peerFor(identity *certs.Store, names *slaveNames, target string) (quictransport.Peer, error) {
	name, addr, err := parseTarget(target)
	if err != nil {
		return quictransport.Peer{}, err
	}
	given := "" // the NAME of -c NAME@HOST
	if strings.Contains(target, "@") {
		given = name
	}
	return quictransport.Peer{Addr: addr,
		TLSFunc: names.dial(addr, given, func() *tls.Config { return identity.ClientConfig(name) })}, nil
}

// slaveSet applies changes of the slave set to a running master.
type slaveSet struct {
	cfg *config
	m   *quictransport.Master
	pol *policies
	log *slog.Logger

	mu sync.Mutex // one change at a time
}

// add starts replicating to the slave target names ([NAME@]HOST[:PORT]).
func (s *slaveSet) add(target string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := peerFor(s.cfg.identity, s.cfg.names, target)
	if err != nil {
		return "", err
	}
	if err := s.m.AddPeer(p); err != nil {
		return "", err
	}
	s.log.Info("slave added to the set", "slave", p.Addr, "target", target)
	return p.Addr, nil
}

// remove stops replicating to the slave named (its name or address).
func (s *slaveSet) remove(ctx context.Context, name string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.m.Status()); n-1 < s.cfg.transport.MinSlaves {
		return "", fmt.Errorf("removing a slave would leave %d, fewer than --min-slaves %d: every fsync would fail", n-1, s.cfg.transport.MinSlaves)
	}
	addr, err := s.m.RemovePeer(ctx, name)
	if addr != "" {
		s.pol.forget(addr)
		s.log.Info("slave removed from the set", "slave", addr)
	}
	return addr, err
}

// apply makes the set the one targets lists (SIGHUP): adds what is new,
// removes what is gone, and says what it did.
func (s *slaveSet) apply(ctx context.Context, targets []string) error {
	want := map[string]string{} // address -> target
	for _, t := range targets {
		_, addr, err := parseTarget(t)
		if err != nil {
			return err
		}
		want[addr] = t
	}
	var errs []error
	have := map[string]bool{}
	for _, st := range s.m.Status() {
		have[st.Addr] = true
		if _, ok := want[st.Addr]; !ok {
			if _, err := s.remove(ctx, st.Addr); err != nil {
				errs = append(errs, err)
			}
		}
	}
	addrs := make([]string, 0, len(want))
	for a := range want {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	for _, a := range addrs {
		if !have[a] {
			if _, err := s.add(want[a]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// serveSlaveOp answers the admin requests "slave-add" and "slave-remove".
func (s *slaveSet) serveSlaveOp(req adminRequest) adminLine {
	var addr string
	var err error
	switch req.Op {
	case "slave-add":
		addr, err = s.add(req.Slave)
	case "slave-remove":
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		addr, err = s.remove(ctx, req.Slave)
	}
	if err != nil {
		return adminLine{Error: err.Error()}
	}
	return adminLine{Resync: addr}
}

// slaveCommand is `tdfs-master slave add|remove|list`.
func slaveCommand() *cli.Command {
	change := func(op, verb string) cli.ActionFunc {
		return func(c *cli.Context) error {
			name := "tdfs-master slave " + verb
			if c.NArg() != 1 {
				return cli.Exit(name+": give one slave ([NAME@]HOST[:PORT] to add, its name or address to remove)", daemon.ExitUsage)
			}
			l, err := askAdmin(c, name, adminRequest{Op: op, Slave: c.Args().First()}, 90*time.Second)
			if err != nil {
				return err
			}
			if op == "slave-add" {
				fmt.Fprintf(c.App.Writer, "%s: added: the master dials it and brings it up to date (tdfs-master status shows it)\n", l.Resync)
			} else {
				fmt.Fprintf(c.App.Writer, "%s: removed: disconnected, and no longer held for\n", l.Resync)
			}
			return nil
		}
	}
	list := statusCommand()
	list.Name, list.Usage = "list", "the slaves and their state (the same as tdfs-master status)"
	list.UsageText = strings.Replace(list.UsageText, "tdfs-master status", "tdfs-master slave list", 1)
	return &cli.Command{
		Name:  "slave",
		Usage: "add or remove a slave of the running master, or list them, without unmounting",
		Description: "add starts replicating to another slave at once: the master dials it and brings it up to date\n" +
			"(a new replica is compared with the backing dir and filled while writes go on). remove disconnects\n" +
			"a slave and releases what the master kept for it alone (memory, journal). Neither is remembered\n" +
			"across a restart: change -c or the connect: list of --config too (SIGHUP applies a changed\n" +
			"connect: list the same way).",
		OnUsageError: daemon.OnUsageError,
		Subcommands: []*cli.Command{
			{Name: "add", Usage: "replicate to another slave", ArgsUsage: "[NAME@]HOST[:PORT]",
				OnUsageError: daemon.OnUsageError, Flags: adminFlags(), Action: change("slave-add", "add")},
			{Name: "remove", Usage: "stop replicating to a slave", ArgsUsage: "NAME|HOST:PORT",
				OnUsageError: daemon.OnUsageError, Flags: adminFlags(), Action: change("slave-remove", "remove")},
			list,
		},
	}
}

// reload applies the connect: list of --config again (SIGHUP), when the
// slaves came from it.
func (s *slaveSet) reload() {
	cfg := s.cfg
	switch {
	case cfg.configFile == "":
		return
	case !cfg.connectFromFile:
		s.log.Info("SIGHUP: the slaves come from -c or TDFS_CONNECT, not from --config: the slave set is unchanged " +
			"(tdfs-master slave add/remove change it)")
		return
	}
	app := newApp(nil)
	list, ok, err := daemon.ConfigList(cfg.configFile, app.Flags, "connect")
	switch {
	case err != nil:
		s.log.Error("SIGHUP: the slave set is unchanged", "err", err)
		return
	case !ok || len(list) == 0:
		s.log.Error("SIGHUP: --config has no connect: list any more; the slave set is unchanged", "config", cfg.configFile)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.apply(ctx, list); err != nil {
		s.log.Error("SIGHUP: the slave set was changed only in part", "err", err)
		return
	}
	s.log.Info("SIGHUP: the slave set is the connect: list of --config", "slaves", len(list))
}
