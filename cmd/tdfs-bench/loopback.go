package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/mirrorfs"
)

// sigDump asks the loopback server to write its request counts.
const sigDump = syscall.SIGUSR1

// serveLoopback serves a bare go-fuse loopback of BACKING at MOUNTPOINT,
// with the mount options tdfs uses and no replication (with --passthrough,
// kernel passthrough too), until SIGTERM; on
// SIGUSR1 it writes its FUSE request counts, by opcode, to COUNTS-FILE as
// JSON. It runs in a process of its own: a process must not do I/O on a
// mount it serves.
func serveLoopback(c *cli.Context) error {
	if c.NArg() != 3 {
		return fmt.Errorf("usage: tdfs-bench loopback [--passthrough] BACKING MOUNTPOINT COUNTS-FILE")
	}
	backing, mnt, countsFile := c.Args().Get(0), c.Args().Get(1), c.Args().Get(2)
	// allow_other as tdfs-master --allow-other: PostgreSQL runs as its own user.
	srv, counter, err := mirrorfs.MountBareLoopback(backing, mnt, true, c.Bool("passthrough"))
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "loopback ready")
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, sigDump)
	done := make(chan struct{})
	go func() {
		srv.Wait()
		close(done)
	}()
	for {
		select {
		case <-done:
			return nil
		case s := <-sigs:
			if s == sigDump {
				b, _ := json.Marshal(counter.Counts())
				tmp := countsFile + ".tmp"
				if err := os.WriteFile(tmp, b, 0o644); err == nil {
					os.Rename(tmp, countsFile)
				}
				continue
			}
			return srv.Unmount()
		}
	}
}
