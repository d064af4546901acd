// Command tdfs-master mounts a FUSE filesystem over a backing directory and
// replicates every change made through it to tdfs slaves.
package main

import (
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/cmd/internal/version"
	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/wire"
)

func main() {
	os.Exit(run(os.Args, os.Stderr))
}

func newApp(stderr io.Writer) *cli.App {
	return &cli.App{
		Name:  "tdfs-master",
		Usage: "mount a directory and replicate every change to tdfs slaves",
		UsageText: "tdfs-master -m DIR --mount MNT -c HOST:PORT [-c ...] --cert FILE --key FILE --ca FILE\n" +
			"            [-z 0|1|LEVEL] [--sync async|fsync|sync]",
		Description:     description,
		Version:         version.String(),
		HideHelpCommand: true,
		OnUsageError:    daemon.OnUsageError,
		ErrWriter:       stderr,
		Writer:          os.Stdout, // --help, so it can be paged
		Flags:           daemon.WithConfigFile(append(flags(), daemon.LogFlags()...)),
		Before:          daemon.LoadConfigFile,
		Action:          daemon.Action(configure, serve),
		Commands:        []*cli.Command{verifyCommand(), resyncCommand(), statusCommand(), slaveCommand(), daemon.CompletionCommand("tdfs-master"), daemon.ManCommand()},

		// <TAB> completion of commands and flags: see tdfs-master completion.
		EnableBashCompletion: true,
	}
}

func run(args []string, stderr io.Writer) int {
	// The signal only starts the unmount: serve runs on until the mount is
	// gone and the drain is done.
	return daemon.Run(newApp(stderr), args, stderr)
}

// description is the help text under tdfs-master --help.
const description = "tdfs-master mounts MNT as a view of the backing directory DIR. Every change made through MNT\n" +
	"is applied to DIR and streamed, in order, to each slave given with -c (QUIC, mutual TLS).\n" +
	"Reads are served from DIR and never cross the network. It runs in the foreground until MNT is\n" +
	"unmounted (umount MNT) or it gets SIGTERM/SIGINT, then delivers what it still owes the slaves\n" +
	"(bounded by --drain-timeout) and exits 0. SIGHUP reloads the certificate, key, CA and CRL (also\n" +
	"done within seconds of a change to their files) and, when the slaves come from --config, applies\n" +
	"its connect: list (tdfs-master slave add/remove change the set too, without unmounting). Under\n" +
	"systemd (Type=notify) it reports READY=1 once the mount is up and the admin socket listens, and\n" +
	"pings the watchdog.\n\n" +
	"It does not replicate changes made directly in DIR (behind the mount's back), does not\n" +
	"detach from the terminal, and does not create DIR, MNT or certificates (see tdfs-certs).\n\n" +
	"Every flag can also come from an environment variable (shown as [$TDFS_...]) or from the\n" +
	"YAML file named by --config (keys are the long flag names); the command line wins over the\n" +
	"environment, which wins over the file.\n\n" +
	"Examples:\n" +
	"   tdfs-master -m /srv/data --mount /mnt/data -c web1.example.com -c web2.example.com \\\n" +
	"       --cert /etc/tdfs/master.crt --key /etc/tdfs/master.key --ca /etc/tdfs/ca.crt\n" +
	"   tdfs-master --config /etc/tdfs/master.yaml --log-level debug\n" +
	"   tdfs-master verify -m /srv/data"

// flags are the daemon's own flags (the log flags and --config are added
// to them).
func flags() []cli.Flag {
	return slices.Concat([]cli.Flag{
		&cli.StringFlag{Name: "dir", Aliases: []string{"m"}, EnvVars: []string{"TDFS_DIR"},
			Usage: "backing `DIR`: the directory that holds the truth (must exist)"},
		&cli.StringFlag{Name: "mount", EnvVars: []string{"TDFS_MOUNT"},
			Usage: "mount point `MNT` (an existing directory outside DIR)"},
		&cli.StringSliceFlag{Name: "connect", Aliases: []string{"c"}, EnvVars: []string{"TDFS_CONNECT"},
			Usage: fmt.Sprintf("`SLAVE` to replicate to, as [NAME@]HOST[:PORT] (repeatable; port default %d; "+
				"the slave's certificate must name NAME, default HOST)", quictransport.DefaultPort)},
	}, daemon.IdentityFlags("master", "slave"), []cli.Flag{
		&cli.StringFlag{Name: "compress", Aliases: []string{"z"}, Value: "0", EnvVars: []string{"TDFS_COMPRESS"},
			Usage: "compress data with zstd at `LEVEL`: 0 off, 1 fastest, 2 default, 3 better, 4 best " +
				"(incompressible data is sent raw)"},
		&cli.StringFlag{Name: "sync", Value: "fsync", EnvVars: []string{"TDFS_SYNC"},
			Usage: "durability `MODE`: async (nothing waits for slaves), fsync (fsync/fdatasync wait until " +
				"every connected slave made everything durable), sync (every change waits)"},
		&cli.DurationFlag{Name: "sync-timeout", Value: defaultSyncTimeout, EnvVars: []string{"TDFS_SYNC_TIMEOUT"},
			Usage: "a slave that has not answered within this `DURATION` is marked degraded and stops holding writers back"},
		&cli.IntFlag{Name: "min-slaves", EnvVars: []string{"TDFS_MIN_SLAVES"},
			Usage: "in fsync mode every fsync, in sync mode every op, returns only once at least `N` slaves made it " +
				"durable; with fewer within --sync-timeout it fails with EIO (and the fence fails) instead of " +
				"returning as if they had. 0: any number, none included"},
		&cli.DurationFlag{Name: "drain-timeout", Value: defaultDrainTimeout, EnvVars: []string{"TDFS_DRAIN_TIMEOUT"},
			Usage: "at shutdown, wait at most this `DURATION` for slaves to receive what they are owed"},
		&cli.IntFlag{Name: "lanes", Value: 1, EnvVars: []string{"TDFS_LANES"},
			Usage: fmt.Sprintf("QUIC connections per slave for bulk data, `N` from 1 to %d: each has its own "+
				"congestion window, so a lossy or long, fast WAN link (where one connection's window collapses "+
				"after every loss) carries several times more; ordering is unchanged. Raise it (4 is a good start) "+
				"when a slave far away lags while the link is not full; keep 1 on a LAN. The slave may allow "+
				"fewer (its --max-lanes)", wire.MaxLanes)},
		&cli.StringFlag{Name: "backlog", Value: "64M", EnvVars: []string{"TDFS_BACKLOG"},
			Usage: "`SIZE` of operations kept in memory for slaves that lag or are away (beyond it they are " +
				"read back from the journal); also the most sent to a slave and not yet applied by it. The " +
				"master's RSS peaks near twice SIZE plus 50 to 100 MiB"},
		&cli.StringFlag{Name: "journal", Aliases: []string{"state"}, EnvVars: []string{"TDFS_JOURNAL"},
			Usage: "journal `DIR` outside DIR and MNT: the master's epoch, its runs, and the operations slaves " +
				"have not yet made durable, kept across restarts (default " + defaultJournalRoot + "/<DIR with / as _>)"},
		&cli.StringFlag{Name: "journal-max", Value: "4G", EnvVars: []string{"TDFS_JOURNAL_MAX"},
			Usage: "`SIZE` bound of the journal on disk; a slave away for longer than it covers is " +
				"resynchronised by comparing trees (only what differs is sent)"},
		&cli.StringFlag{Name: "slave-state", EnvVars: []string{"TDFS_SLAVE_STATE"},
			Usage: "when promoting a slave (a new journal on a slave's DIR): that slave's state `DIR`, so the new " +
				"epoch fences the old master (default /var/lib/tdfs/slave/<DIR with / as _>, used if present)"},
		&cli.BoolFlag{Name: "allow-setuid", EnvVars: []string{"TDFS_ALLOW_SETUID"},
			Usage: "let applications make setuid and setgid files and set file capabilities (security.capability) " +
				"through the mount; without it those fail with EPERM (set-id bits on directories are always allowed). " +
				"Give every slave --allow-setuid too: the mount allows only what every connected slave holds"},
		&cli.BoolFlag{Name: "allow-devices", EnvVars: []string{"TDFS_ALLOW_DEVICES"},
			Usage: "let applications make character and block device nodes (mknod) through the mount; without it " +
				"mknod of a device fails with EPERM. Give every slave --allow-devices too"},
		&cli.BoolFlag{Name: "allow-other", EnvVars: []string{"TDFS_ALLOW_OTHER"},
			Usage: "let other users (a web server) use the mount; the kernel checks permissions, so the mount " +
				"never grants more than DIR"},
		&cli.StringFlag{Name: "metrics-addr", EnvVars: []string{"TDFS_METRICS_ADDR"},
			Usage: "serve Prometheus metrics at http://`HOST:PORT`/metrics (off by default; they carry no secrets, " +
				"but bind to a private address)"},
		&cli.BoolFlag{Name: "debug-fuse", EnvVars: []string{"TDFS_DEBUG_FUSE"},
			Usage: "log every FUSE request (very verbose)"},
	})
}
