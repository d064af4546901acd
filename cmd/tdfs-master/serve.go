package main

import (
	"context"
	"fmt"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/mirrorfs"
	"github.com/tdfs/tdfs/quictransport"
)

func serve(sigctx context.Context, cfg *config) error {
	log := cfg.log
	release, err := daemon.LockDirs(cfg.dir, cfg.stateDir)
	if err != nil {
		return err
	}
	defer release()
	// From here until the clean end below, a crash leaves this run marked
	// unclean: the next run cannot vouch for any slave's tree.
	if err := saveState(cfg.stateDir, cfg.transport.Run, 0, false); err != nil {
		return fmt.Errorf("state dir %s: %w (use --state DIR)", cfg.stateDir, err)
	}
	m, err := quictransport.NewMaster(cfg.transport)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.Run(ctx)
	}()
	stopTransport := func() {
		cancel()
		wg.Wait()
	}

	cfg.fuse.Sink = m
	srv, err := mirrorfs.Mount(cfg.mount, cfg.fuse)
	if err != nil {
		stopTransport()
		return fmt.Errorf("mount %s: %w", cfg.mount, err)
	}
	log.Info("mounted", "mount", cfg.mount, "dir", cfg.dir, "slaves", len(cfg.transport.Peers),
		"sync", cfg.transport.Mode.String())

	unmounted := make(chan struct{})
	go func() {
		srv.Wait()
		close(unmounted)
	}()
	select {
	case <-unmounted:
		log.Info("unmounted", "mount", cfg.mount)
	case <-sigctx.Done():
		// A second signal kills the process at once (the default action):
		// the way out of a mount that stays busy.
		signal.Reset(syscall.SIGTERM, syscall.SIGINT)
		log.Info("signal: unmounting (a second SIGTERM/SIGINT exits at once, without draining)", "mount", cfg.mount)
		unmount(cfg, unmounted)
	}

	start := time.Now()
	derr := m.Drain(cfg.drainTimeout)
	stopTransport()
	if derr != nil {
		log.Warn("drain incomplete: some slaves did not receive everything", "err", derr,
			"after", time.Since(start).Round(time.Millisecond))
	}
	// The backing dir is final as of LastSeq: a slave durable there may
	// follow the next run.
	if err := saveState(cfg.stateDir, cfg.transport.Run, srv.LastSeq(), true); err != nil {
		return fmt.Errorf("state dir %s: %w", cfg.stateDir, err)
	}
	log.Info("exiting", "last_seq", srv.LastSeq())
	return nil
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
