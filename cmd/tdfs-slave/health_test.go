package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/cmd/internal/metrics/metricstest"
)

func TestSlaveProblems(t *testing.T) {
	since := time.Now().Add(-time.Minute)
	for _, c := range []struct {
		st   slaveStatus
		want string
	}{
		{slaveStatus{Master: "127.0.0.1:4000 (master)"}, ""},
		{slaveStatus{}, "no master connected"},
		{slaveStatus{Master: "m", Resyncing: true}, "resyncing: the tree is of unknown state until the master's resync pass ends"},
		{slaveStatus{Master: "m", Stalled: "disk full: no space left on device", StalledSince: &since},
			"stalled for 1m0s: disk full: no space left on device"},
		{slaveStatus{Stalled: "disk full", Resyncing: true}, "stalled: disk full|resyncing: the tree is of unknown state until the master's resync pass ends|no master connected"},
	} {
		if got := strings.Join(slaveProblems(c.st), "|"); got != c.want {
			t.Errorf("%+v: %q, want %q", c.st, got, c.want)
		}
	}
}

// serveStatus answers status requests on a socket in dir with st, as the
// slave does.
func serveStatus(t *testing.T, sock string, st slaveStatus) {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			json.NewEncoder(c).Encode(st)
			c.Close()
		}
	}()
}

// TestStatusCheck: the exit codes and lines of status --check, the
// socket found through --config (or --admin-socket), and --watch --count.
func TestStatusCheck(t *testing.T) {
	base := t.TempDir()
	dir, state := filepath.Join(base, "replica"), filepath.Join(base, "state")
	for _, d := range []string{dir, state} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(base, "slave.yaml")
	if err := os.WriteFile(conf, []byte("dir: "+dir+"\nstate: "+state+"\nlisten: 127.0.0.1:7430\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string, string) {
		var stdout, stderr strings.Builder
		app := newApp(&stderr)
		app.Writer = &stdout
		app.ExitErrHandler = func(*cli.Context, error) {}
		code := daemon.Run(app, append([]string{"tdfs-slave"}, args...), &stderr)
		return code, stdout.String(), stderr.String()
	}
	sock := filepath.Join(state, daemon.AdminSocketName)
	if code, _, stderr := run("status", "--config", conf, "--check"); code != 2 || !strings.Contains(stderr, "no slave answers on "+sock) {
		t.Errorf("no slave: exit %d, %s", code, stderr)
	}
	if code, _, stderr := run("--config", conf, "status"); code != 1 || !strings.Contains(stderr, "no slave answers on "+sock) {
		t.Errorf("no slave, without --check: exit %d, %s", code, stderr)
	}
	serveStatus(t, sock, slaveStatus{Dir: dir, Master: "127.0.0.1:1 (master)"})
	if code, out, stderr := run("status", "--config", conf, "--check"); code != 0 || out != "ok\n" {
		t.Errorf("a healthy slave: exit %d, %q, %s", code, out, stderr)
	}
	if code, out, _ := run("status", "-m", dir, "--state", state, "--watch", "--interval", "10ms", "--count", "2"); code != 0 ||
		strings.Count(out, "Every 10ms: tdfs-slave status") != 2 || strings.Count(out, dir+"\n") != 2 || !strings.Contains(out, "\n\nEvery") {
		t.Errorf("--watch --count 2: exit %d\n%s", code, out)
	}
	other := filepath.Join(base, "other.sock")
	serveStatus(t, other, slaveStatus{Dir: dir, Resyncing: true})
	if code, out, stderr := run("status", "--config", conf, "--admin-socket", other, "--check"); code != 1 ||
		out != "resyncing: the tree is of unknown state until the master's resync pass ends\nno master connected\n" ||
		!strings.Contains(stderr, "not all is well") {
		t.Errorf("an unhealthy slave: exit %d, %q, %s", code, out, stderr)
	}
	if code, out, _ := run("status", "--admin-socket", other, "--check", "--json"); code != 1 || !strings.HasPrefix(out, `{"ok":false,"problems":["resyncing`) {
		t.Errorf("--check --json: exit %d, %q", code, out)
	}
}

// TestContribSlaveMetrics: the alerting rules and the dashboard name only
// tdfs_slave_ metrics the slave exports.
func TestContribSlaveMetrics(t *testing.T) {
	names := metricstest.Described(newSlaveCollector(nil))
	if !names["tdfs_slave_stalled"] {
		t.Fatalf("the slave's metrics were not found: %v", names)
	}
	if n := metricstest.CheckPrefix(t, "tdfs_slave_", names); n < 5 {
		t.Errorf("only %d uses of the slave's metrics in the contrib files", n)
	}
}
