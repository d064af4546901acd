package daemon

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// notifySocket listens on a unixgram socket, the way systemd does, and
// points $NOTIFY_SOCKET at it. name "@..." makes an abstract socket.
func notifySocket(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	addr := name
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return conn
}

// receive returns the next datagram, failing after a generous timeout.
func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifyReadyStoppingWatchdog(t *testing.T) {
	conn := notifySocket(t, filepath.Join(t.TempDir(), "notify"))
	// 20ms: pings every 10ms.
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	stop := Ready("serving /mnt")
	if got := receive(t, conn); got != "READY=1\nSTATUS=serving /mnt" {
		t.Errorf("first notification %q", got)
	}
	for range 3 {
		if got := receive(t, conn); got != "WATCHDOG=1" {
			t.Errorf("watchdog ping %q", got)
		}
	}
	Stopping()
	// Pings still in flight may come first: the watchdog runs until stop.
	for {
		got := receive(t, conn)
		if got == "STOPPING=1\nSTATUS=shutting down" {
			break
		}
		if got != "WATCHDOG=1" {
			t.Fatalf("unexpected notification %q", got)
		}
	}
	stop()
	// After stop no more pings: the socket stays silent past several
	// intervals.
	conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 64)); err == nil {
		t.Errorf("a notification after stop: %d bytes", n)
	}
}

func TestNotifyAbstractSocket(t *testing.T) {
	conn := notifySocket(t, "@tdfs-test-"+strconv.Itoa(os.Getpid()))
	t.Setenv("WATCHDOG_USEC", "")
	stop := Ready("listening")
	defer stop()
	if got := receive(t, conn); got != "READY=1\nSTATUS=listening" {
		t.Errorf("abstract socket got %q", got)
	}
}

func TestNotifyWithoutManager(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if ok, err := Notify("READY=1"); ok || err != nil {
		t.Errorf("Notify without NOTIFY_SOCKET = %v, %v", ok, err)
	}
	Ready("x")() // does nothing, starts nothing
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent"))
	if ok, err := Notify("READY=1"); ok || err == nil {
		t.Errorf("Notify to an absent socket = %v, %v", ok, err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		{"", "", 0, false},
		{"30000000", "", 15 * time.Second, true},
		{"30000000", strconv.Itoa(os.Getpid()), 15 * time.Second, true},
		{"30000000", "1", 0, false}, // meant for another process
		{"0", "", 0, false},
		{"x", "", 0, false},
	} {
		t.Setenv("WATCHDOG_USEC", c.usec)
		t.Setenv("WATCHDOG_PID", c.pid)
		if got, ok := WatchdogInterval(); got != c.want || ok != c.ok {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, %v; want %v, %v", c.usec, c.pid, got, ok, c.want, c.ok)
		}
	}
}
