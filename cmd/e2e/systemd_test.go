package e2e

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifySocket is a stand-in for systemd's notification socket: a
// unixgram socket whose datagrams (sd_notify states) arrive on a channel.
type notifySocket struct {
	path string
	msgs chan string
}

// listenNotify creates the socket and points $NOTIFY_SOCKET at it for the
// daemons this test starts (they inherit the environment).
func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: path, msgs: make(chan string, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	t.Setenv("NOTIFY_SOCKET", path)
	return n
}

// wait returns the next notification that starts with prefix, skipping
// the others (watchdog pings), or fails after timeout.
func (n *notifySocket) wait(t *testing.T, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	var skipped []string
	for {
		select {
		case m := <-n.msgs:
			if strings.HasPrefix(m, prefix) {
				return m
			}
			skipped = append(skipped, m)
		case <-deadline:
			t.Fatalf("no %q notification within %v; got %q", prefix, timeout, skipped)
		}
	}
}

func TestNotifySlave(t *testing.T) {
	k := newPKI(t, "s1")
	n := listenNotify(t)
	// The watchdog as systemd asks for it: pings every 100ms.
	t.Setenv("WATCHDOG_USEC", "200000")
	base := t.TempDir()
	dir := filepath.Join(base, "replica")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The slave's flags come from a config file, as under the unit; the
	// listen address from the command line, overriding the file's.
	cfg := filepath.Join(base, "slave.yaml")
	yaml := "dir: " + dir + "\nstate: " + filepath.Join(base, "state") + "\nlisten: 127.0.0.1:1\n" +
		"cert: " + filepath.Join(k.dir, "s1.crt") + "\nkey: " + filepath.Join(k.dir, "s1.key") +
		"\nca: " + filepath.Join(k.dir, "ca.crt") + "\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, "tdfs-slave", "--config", cfg, "--listen", "127.0.0.1:0")

	ready := n.wait(t, "READY=1", 30*time.Second)
	// READY=1 comes once the slave listens: the port it names is taken.
	_, addr, ok := strings.Cut(ready, "STATUS=listening on ")
	addr, _, _ = strings.Cut(addr, ",")
	if !ok || !strings.HasPrefix(addr, "127.0.0.1:") || addr == "127.0.0.1:0" {
		t.Fatalf("READY without the address listened on: %q", ready)
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := net.ListenUDP("udp", ua); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("READY=1 before the slave listens on %s: %v", addr, err)
	}
	p.waitLine(`msg=listening .*addr=`+addr, 10*time.Second)

	n.wait(t, "WATCHDOG=1", 10*time.Second)
	n.wait(t, "WATCHDOG=1", 10*time.Second)

	p.cmd.Process.Signal(syscall.SIGTERM)
	n.wait(t, "STOPPING=1", 30*time.Second)
	// Wait for the exit that SIGTERM started: a second SIGTERM could come
	// after the daemon stopped handling signals, and kill it.
	p.stop(0, 30*time.Second)
}

func TestNotifyMaster(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	n := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "200000")
	m := startMaster(t, k, []*slave{s})
	ready := n.wait(t, "READY=1", 30*time.Second)
	// READY=1 comes once the mount is up (and the admin socket listens).
	if !mounted(m.mnt) {
		t.Fatalf("READY=1 (%q) before %s is mounted", ready, m.mnt)
	}
	if _, err := os.Stat(filepath.Join(m.journal, "admin.sock")); err != nil {
		t.Errorf("READY=1 before the admin socket listens: %v", err)
	}
	if !strings.Contains(ready, "STATUS=serving "+m.mnt) {
		t.Errorf("READY without a status naming the mount: %q", ready)
	}
	n.wait(t, "WATCHDOG=1", 10*time.Second)

	// Unmounted from outside: the master says it is stopping, drains and
	// exits 0.
	if err := syscall.Unmount(m.mnt, 0); err != nil {
		t.Fatal(err)
	}
	n.wait(t, "STOPPING=1", 30*time.Second)
	select {
	case <-m.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the master did not exit after the unmount")
	}
	if m.err != nil {
		t.Fatalf("master exited with %v", m.err)
	}
}

// TestSystemdMasterRestartAfterKill: a master killed (by the watchdog,
// SIGABRT, or SIGKILL) leaves its mount behind, dead; a restart, as
// Restart=on-failure does, must clear it and mount again.
func TestSystemdMasterRestartAfterKill(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s})
	m.kill()
	var st syscall.Statfs_t
	if err := syscall.Statfs(m.mnt, &st); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after the kill, statfs %s: %v; want ENOTCONN (a dead mount)", m.mnt, err)
	}
	m2 := m.restart(t)
	m2.waitLine(`cleared the dead mount`, 10*time.Second)
	if err := os.WriteFile(filepath.Join(m2.mnt, "after-restart"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	converge(t, m2, []*slave{s}, 60*time.Second)
	m2.stop(syscall.SIGTERM, 60*time.Second)
	// Nothing is left at the mount point: not the new mount, not the dead
	// one beneath it.
	if mounted(m.mnt) {
		t.Errorf("%s is still mounted after the restarted master exited", m.mnt)
	}
}

// TestSystemdUnitsVerify checks the unit files with systemd-analyze
// verify, with ExecStart pointing at the binaries built for this run (it
// checks that they exist and are executable).
func TestSystemdUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("SKIP: systemd-analyze is not installed: the unit files in contrib/systemd are not verified")
	}
	dir := t.TempDir()
	var units []string
	for _, name := range []string{"tdfs-master.service", "tdfs-slave.service"} {
		text, err := os.ReadFile(filepath.Join("..", "..", "contrib", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(text), "ExecStart=/usr/local/bin/") {
			t.Fatalf("%s: no ExecStart=/usr/local/bin/...", name)
		}
		u := filepath.Join(dir, name)
		if err := os.WriteFile(u, []byte(strings.ReplaceAll(string(text), "ExecStart=/usr/local/bin/", "ExecStart="+binDir+"/")), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, u)
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "tdfs-") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
