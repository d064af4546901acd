package main

import (
	"context"
	"fmt"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/cmd/internal/metrics"
	"github.com/tdfs/tdfs/journal"
	"github.com/tdfs/tdfs/mirrorfs"
	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/slave"
	"github.com/tdfs/tdfs/wire"
)

// serve runs the master until its mount is unmounted or a signal asks it
// to stop: it opens the run (epoch, journal), starts the transport and the
// metrics, mounts, waits, drains, and records the run's clean end.
func serve(sigctx context.Context, cfg *config) error {
	log := cfg.log
	release, err := daemon.LockDirs(cfg.dir, cfg.journalDir)
	if err != nil {
		return err
	}
	defer release()
	// Certificates reload on SIGHUP and on file change, for new dials only.
	var master atomic.Pointer[quictransport.Master] // set once the transport exists
	defer daemon.WatchIdentity(cfg.identity, log, func() {
		if m := master.Load(); m != nil {
			m.Recheck()
		}
	})()
	j, tc, st, err := openRun(cfg)
	if err != nil {
		return err
	}
	defer j.Close()
	hub := &progressHub{}
	tc.OnProgress = hub.publish
	stopBar := make(chan struct{})
	defer close(stopBar)
	go showPasses(hub, stopBar)
	m, pol, stopMetrics, err := startTransport(cfg, &tc, hub)
	if err != nil {
		return err
	}
	defer stopMetrics()
	master.Store(m)
	srv, err := mountTree(cfg, m, tc, pol)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { m.Run(ctx) })
	cfg.slaves = &slaveSet{cfg: cfg, m: m, pol: pol, log: log}
	defer daemon.OnSIGHUP(cfg.slaves.reload)()
	admin, err := listenAdmin(cfg, m, hub)
	if err != nil {
		log.Warn("no admin socket: tdfs-master verify will not reach this master", "err", err)
	} else {
		defer admin.Close()
	}
	log.Info("mounted", "mount", cfg.mount, "dir", cfg.dir, "slaves", len(tc.Peers),
		"sync", tc.Mode.String(), "epoch", encodeID(tc.Epoch)[:8], "first_seq", tc.Head+1, "check_slaves", tc.CheckAll)
	// Serving: the mount is up and the admin socket listens. The
	// watchdog pings go on through the drain, until serve returns.
	stopWatchdog := daemon.Ready(fmt.Sprintf("serving %s from %s to %d slaves", cfg.mount, cfg.dir, len(tc.Peers)))
	defer stopWatchdog()
	waitUnmounted(sigctx, cfg, srv)

	daemon.Stopping()
	start := time.Now()
	derr := m.Drain(cfg.drainTimeout)
	cancel()
	wg.Wait() // the transport stops and syncs the journal
	if derr != nil {
		log.Warn("drain incomplete: some slaves did not receive everything; the journal keeps it for them", "err", derr,
			"after", time.Since(start).Round(time.Millisecond))
	}
	// The backing dir is final as of LastSeq.
	last := &st.Runs[len(st.Runs)-1]
	last.End, last.Clean = srv.LastSeq(), true
	if err := saveState(cfg.journalDir, st); err != nil {
		return fmt.Errorf("--journal %s: %w", cfg.journalDir, err)
	}
	log.Info("exiting", "last_seq", srv.LastSeq())
	return nil
}

// openRun opens the journal and starts this run in the journal dir's state
// (a new epoch, or the next run of the current one). The caller closes the
// journal.
func openRun(cfg *config) (*journal.Journal, quictransport.MasterConfig, masterState, error) {
	st, err := openEpoch(cfg)
	if err != nil {
		return nil, quictransport.MasterConfig{}, st, err
	}
	j, err := journal.Open(filepath.Join(cfg.journalDir, "ops"), journal.Options{MaxBytes: cfg.journalMax})
	if err != nil {
		return nil, quictransport.MasterConfig{}, st, fmt.Errorf("--journal %s: %w", cfg.journalDir, err)
	}
	if rep := j.Recovered(); !rep.Clean() {
		cfg.log.Warn("journal recovered: " + rep.String())
	}
	tc, st, err := startRun(cfg, st, j)
	if err == nil {
		cfg.epoch = encodeID(tc.Epoch)
		// From here until the clean end, a crash leaves this run marked
		// unclean: the next run checks every slave by comparison.
		if err = saveState(cfg.journalDir, st); err != nil {
			err = fmt.Errorf("--journal %s: %w", cfg.journalDir, err)
		}
	}
	if err != nil {
		j.Close()
		return nil, tc, st, err
	}
	return j, tc, st, nil
}

// startTransport makes the transport of tc, with the slaves' policies as
// last announced, and serves the metrics (before the mount: a bad address
// stops the start). stop ends the metrics server.
func startTransport(cfg *config, tc *quictransport.MasterConfig, hub *progressHub) (m *quictransport.Master, pol *policies, stop func(), err error) {
	var reg *prometheus.Registry
	if cfg.metricsAddr != "" {
		reg = metrics.NewRegistry()
		wait := newWaitHistogram()
		reg.MustRegister(wait)
		tc.OnWait = func(d time.Duration) { wait.Observe(d.Seconds()) }
	}
	var addrs []string
	for _, peer := range tc.Peers {
		addrs = append(addrs, peer.Addr)
	}
	pol = loadPolicies(cfg.log, cfg.journalDir, cfg.policy, addrs)
	tc.OnPolicy = pol.announce
	if m, err = quictransport.NewMaster(*tc); err != nil {
		return nil, nil, nil, err
	}
	if reg == nil {
		return m, pol, func() {}, nil
	}
	reg.MustRegister(newMasterCollector(m, hub))
	mctx, stopMetrics := context.WithCancel(context.Background())
	addr, err := metrics.Serve(mctx, cfg.metricsAddr, reg, statusHandlers(cfg, m, hub), cfg.log) // status.go
	if err != nil {
		stopMetrics()
		return nil, nil, nil, err
	}
	cfg.log.Info("metrics", "url", "http://"+addr+"/metrics")
	return m, pol, stopMetrics, nil
}

// mountTree mounts the mirror of the backing dir, feeding m, enforcing the
// strictest of this master's and the slaves' policies from its first op.
func mountTree(cfg *config, m *quictransport.Master, tc quictransport.MasterConfig, pol *policies) (*mirrorfs.Server, error) {
	cfg.fuse.Sink = m
	cfg.fuse.Run, cfg.fuse.Head, cfg.fuse.Unclean = tc.Run, tc.Head, tc.CheckAll
	first := pol.effective()
	cfg.fuse.Policy = &first
	srv, err := mirrorfs.Mount(cfg.mount, cfg.fuse)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", cfg.mount, err)
	}
	pol.attach(srv)
	m.SetTree(srv)
	return srv, nil
}

// waitUnmounted returns once the mount is gone: unmounted from outside, or
// by this process after a signal.
func waitUnmounted(sigctx context.Context, cfg *config, srv *mirrorfs.Server) {
	unmounted := make(chan struct{})
	go func() {
		srv.Wait()
		close(unmounted)
	}()
	select {
	case <-unmounted:
		cfg.log.Info("unmounted", "mount", cfg.mount)
	case <-sigctx.Done():
		// A second signal kills the process at once (the default action):
		// the way out of a mount that stays busy.
		signal.Reset(syscall.SIGTERM, syscall.SIGINT)
		cfg.log.Info("signal: unmounting (a second SIGTERM/SIGINT exits at once, without draining)", "mount", cfg.mount)
		unmount(cfg, unmounted)
	}
}

// openEpoch loads the journal dir's state, or mints a new epoch: for a
// promoted slave (its state dir is found), one that succeeds the epoch the
// slave followed, so slaves that followed it accept this master and
// refuse the old one.
func openEpoch(cfg *config) (masterState, error) {
	log := cfg.log
	st, found, err := loadState(cfg.journalDir)
	if err != nil || found {
		return st, err
	}
	epoch, err := newID()
	if err != nil {
		return st, err
	}
	st = masterState{Epoch: encodeID(epoch)}
	if cfg.slaveState != "" {
		rel, err := daemon.Lock("slave state", cfg.slaveState)
		if err != nil {
			return st, fmt.Errorf("promoting the slave of %s: %w (stop tdfs-slave first)", cfg.dir, err)
		}
		rel()
		ss, err := slave.LoadState(cfg.slaveState)
		if err != nil {
			return st, fmt.Errorf("promoting the slave of %s: --slave-state %s: %w", cfg.dir, cfg.slaveState, err)
		}
		if ss.Epoch != (wire.Epoch{}) {
			st.Lineage = append(st.Lineage, encodeID(ss.Epoch))
			for _, e := range ss.Lineage {
				if len(st.Lineage) < wire.MaxLineage {
					st.Lineage = append(st.Lineage, encodeID(e))
				}
			}
			log.Warn("promoted: this master's new epoch succeeds the one its slave state followed; "+
				"slaves of that epoch will follow this master, and refuse the old one",
				"epoch", encodeID(epoch)[:8], "succeeds", encodeID(ss.Epoch)[:8], "slave_state", cfg.slaveState)
			return st, nil
		}
	}
	log.Info("new epoch: first start of a master on this backing dir", "epoch", encodeID(epoch)[:8],
		"journal", cfg.journalDir)
	return st, nil
}

// startRun works out where this run's seqs start and what the transport
// must know of earlier runs, and records the new run in st.
func startRun(cfg *config, st masterState, j *journal.Journal) (quictransport.MasterConfig, masterState, error) {
	tc := cfg.transport
	epoch, lineage, err := st.epochs()
	if err != nil {
		return tc, st, err
	}
	head := j.Last()
	if n := len(st.Runs); n > 0 {
		last := &st.Runs[n-1]
		if last.Clean {
			head = max(head, last.End)
		} else {
			// Crashed: the journal knows how far it got; its last ops
			// may have reached the backing dir unjournaled, so every
			// slave is compared once.
			last.End = max(head, last.Start-1)
			head = last.End
			tc.CheckAll = true
			cfg.log.Warn("the previous run did not end cleanly (crash or kill): resuming slaves from the journal, "+
				"then comparing each with the backing dir once", "journal_last", j.Last())
		}
	}
	runs, err := st.runRecords()
	if err != nil {
		return tc, st, err
	}
	run, err := newID()
	if err != nil {
		return tc, st, err
	}
	st.Runs = append(st.Runs, runState{Run: encodeID(run), Start: head + 1})
	tc.Epoch, tc.Lineage, tc.Run, tc.Head, tc.Runs, tc.Journal = epoch, lineage, run, head, runs, j
	return tc, st, nil
}

// unmount unmounts and waits for the server to stop. A busy mount (open
// files, a shell inside it) cannot be unmounted at once: it is detached
// lazily, and the server stops when its last user leaves.
func unmount(cfg *config, unmounted <-chan struct{}) {
	log := cfg.log
	for attempt := 0; ; attempt++ {
		// umount(2) itself, not go-fuse's Unmount: that one falls back to
		// fusermount, whose absence would then be the error reported.
		err := syscall.Unmount(cfg.mount, 0)
		if err == nil {
			break
		}
		if attempt == 0 {
			log.Warn("unmount failed, retrying", "err", err)
		}
		if attempt >= 10 {
			log.Warn("mount still busy: detaching it lazily; exiting once its last user leaves", "err", err)
			lazyUnmount(cfg.mount)
			break
		}
		select {
		case <-unmounted:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	<-unmounted
}
