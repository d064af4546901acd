package daemon

import (
	"context"
	"net"
	"os"
	"strconv"
	"time"
)

// The service manager protocol of sd_notify(3), without libsystemd: each
// state is one datagram of "KEY=VALUE" lines sent to the unix socket named
// by $NOTIFY_SOCKET (a leading '@' names an abstract socket). Under
// Type=notify, systemd considers the daemon started at READY=1, and with
// WatchdogSec= it restarts a daemon whose WATCHDOG=1 pings stop for that
// long. Outside systemd (no $NOTIFY_SOCKET) every call does nothing.

// Notify sends state (such as "READY=1\nSTATUS=listening") to the service
// manager. It reports whether a service manager was there to tell.
func Notify(state string) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return false, nil
	}
	if addr[0] == '@' {
		// Go spells an abstract socket with a leading NUL byte; so does
		// the kernel.
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return false, err
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, err
	}
	return true, nil
}

// Ready tells the service manager the daemon is serving, with status as
// its one-line STATUS= (shown by systemctl status), and starts the
// watchdog pings the manager asked for. The returned function stops them:
// defer it, so the pings go on through shutdown (systemd keeps watching
// while a stopping daemon drains) and end only when serving does.
// Errors go nowhere: a daemon must not fail because its supervisor is
// unreachable (sd_notify(3) callers ignore them too).
func Ready(status string) (stop func()) {
	if ok, _ := Notify("READY=1\nSTATUS=" + status); !ok {
		return func() {}
	}
	interval, ok := WatchdogInterval()
	if !ok {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchdog(ctx, interval)
	}()
	return func() {
		cancel()
		<-done
	}
}

// Stopping tells the service manager the daemon is shutting down.
func Stopping() {
	Notify("STOPPING=1\nSTATUS=shutting down")
}

// WatchdogInterval returns how often to send WATCHDOG=1: half of
// $WATCHDOG_USEC, as sd_watchdog_enabled(3) recommends, and only if the
// watchdog is meant for this process ($WATCHDOG_PID unset or ours).
func WatchdogInterval() (time.Duration, bool) {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0, false
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0, false
	}
	return time.Duration(usec) * time.Microsecond / 2, true
}

// watchdog pings every interval until ctx is done.
func watchdog(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			Notify("WATCHDOG=1")
		}
	}
}
