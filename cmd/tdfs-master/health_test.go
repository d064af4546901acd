package main

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/cmd/internal/metrics"
	"github.com/tdfs/tdfs/cmd/internal/metrics/metricstest"
)

func TestMasterProblems(t *testing.T) {
	eta, prog := 130.0, 0.45
	st := masterStatus{Slaves: []slaveStatus{
		{Addr: "10.0.0.1:7430", Name: "web1", State: "streaming", LagSeconds: 2},
		{Addr: "10.0.0.2:7430", Name: "web2", State: "catching-up", LagSeconds: 31, LagOps: 7, LagBytes: 2e6},
		{Addr: "10.0.0.3:7430", Name: "web3", State: "connecting", LastError: "dial: refused"},
		{Addr: "10.0.0.4:7430", Name: "web4", State: "resyncing", ResyncKind: "resync", ResyncProgress: &prog, ResyncETASeconds: &eta},
		{Addr: "10.0.0.5:7430", Name: "web5", State: "degraded", Cause: "disk full: no space left on device"},
		{Addr: "10.0.0.6:7430", Name: "10.0.0.6:7430", State: "verifying"},
		{Addr: "10.0.0.7:7430", Name: "web7", State: "fenced"},
	}}
	got := masterProblems(st, 30*time.Second)
	want := []string{
		"web2 (10.0.0.2:7430): lagging 31s behind (over --max-lag 30s): 7 ops, 2.0 MB",
		"web3 (10.0.0.3:7430): not streaming: connecting: dial: refused",
		"web4 (10.0.0.4:7430): not streaming: resyncing 45% ETA 2m10s",
		"web5 (10.0.0.5:7430): degraded: disk full: no space left on device",
		"web7 (10.0.0.7:7430): not streaming: fenced",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// No bound on the lag: only the states.
	if got := masterProblems(st, 0); len(got) != 4 {
		t.Errorf("--max-lag 0: %q", got)
	}
	if got := masterProblems(masterStatus{Slaves: st.Slaves[:1]}, 30*time.Second); len(got) != 0 {
		t.Errorf("a streaming slave: %q", got)
	}
}

func TestStatusView(t *testing.T) {
	healthy := masterStatus{Slaves: []slaveStatus{{Addr: "a:1", Name: "a", State: "streaming"}}}
	sick := masterStatus{Slaves: []slaveStatus{{Addr: "a:1", Name: "a", State: "stopped"}}}
	for _, c := range []struct {
		view struct{ json, check bool }
		st   masterStatus
		err  error
		code int
		out  string
	}{
		{struct{ json, check bool }{check: true}, healthy, nil, 0, "ok\n"},
		{struct{ json, check bool }{check: true}, sick, nil, 1, "a (a:1): not streaming: stopped\n"},
		{struct{ json, check bool }{check: true, json: true}, sick, nil, 1, `{"ok":false,"problems":["a (a:1): not streaming: stopped"]}` + "\n"},
		{struct{ json, check bool }{check: true}, healthy, &metrics.AdminError{Code: daemon.ExitUsage, Err: errors.New("no master answers")}, 2, "no master answers\n"},
		{struct{ json, check bool }{}, healthy, &metrics.AdminError{Code: daemon.ExitUsage, Err: errors.New("no master answers")}, 1, "no master answers\n"},
		{struct{ json, check bool }{}, sick, nil, 0, ""},
	} {
		var out strings.Builder
		code := statusQuery(c.view.json, c.view.check, 0, "").Render(&out, c.st, c.err)
		if code != c.code || (c.out != "" && out.String() != c.out) {
			t.Errorf("%+v %+v %v: exit %d, %q; want %d, %q", c.view, c.st, c.err, code, out.String(), c.code, c.out)
		}
	}
}

func TestPassProgress(t *testing.T) {
	p, eta := passETA(progressLine{Entries: 45, TotalEntries: 100, ElapsedMs: 45_000})
	if p == nil || *p != 0.45 || eta == nil || *eta < 54.999 || *eta > 55.001 {
		t.Fatalf("45 of 100 in 45s: %v %v", p, eta)
	}
	if p, eta := passETA(progressLine{Entries: 45}); p != nil || eta != nil {
		t.Errorf("no total known: %v %v", p, eta)
	}
	if p, eta := passETA(progressLine{TotalEntries: 10}); p == nil || *p != 0 || eta != nil {
		t.Errorf("not started: %v %v", p, eta)
	}
	s := slaveStatus{State: "resyncing", ResyncKind: "resync", ResyncProgress: p, ResyncETASeconds: eta}
	if got := stateText(s); got != "resyncing 45% ETA 55s" {
		t.Errorf("stateText %q", got)
	}
	if got := stateText(slaveStatus{State: "checking", ResyncKind: "check", ResyncEntries: 12}); got != "checking 12 entries" {
		t.Errorf("stateText %q", got)
	}
	var out strings.Builder
	p, eta = passETA(progressLine{Entries: 1, TotalEntries: 4, ElapsedMs: 10_000})
	printStatus(&out, masterStatus{Slaves: []slaveStatus{{Addr: "a:1", Name: "a", State: "resyncing", ResyncKind: "resync",
		ResyncProgress: p, ResyncETASeconds: eta}}}, time.Now())
	if !strings.Contains(out.String(), "resyncing 25% ETA 30s") {
		t.Errorf("the table lacks the progress:\n%s", out.String())
	}
}

// TestSlaveNames: a slave is named by -c NAME@HOST, else by the common
// name of the certificate it presented, else by its host.
func TestSlaveNames(t *testing.T) {
	var n slaveNames
	f := n.dial("10.0.0.1:7430", "", func() *tls.Config { return &tls.Config{ServerName: "10.0.0.1"} })
	g := n.dial("10.0.0.2:7430", "web2", func() *tls.Config {
		return &tls.Config{ServerName: "web2", VerifyConnection: func(tls.ConnectionState) error { return errors.New("revoked") }}
	})
	if got := n.of("10.0.0.1:7430", "10.0.0.1"); got != "10.0.0.1" {
		t.Errorf("before a handshake: %q", got)
	}
	cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{{Subject: pkix.Name{CommonName: "web1"}}}}
	if err := f().VerifyConnection(cs); err != nil {
		t.Fatal(err)
	}
	if got := n.of("10.0.0.1:7430", "10.0.0.1"); got != "web1" {
		t.Errorf("after a handshake: %q", got)
	}
	if err := g().VerifyConnection(cs); err == nil || err.Error() != "revoked" {
		t.Errorf("the certificate's own check was lost: %v", err)
	}
	if got := n.of("10.0.0.2:7430", "web2"); got != "web2" {
		t.Errorf("-c web2@...: %q", got)
	}
	var none *slaveNames
	if got := none.of("a:1", "a"); got != "a" {
		t.Errorf("no names: %q", got)
	}
}

// TestStatusConfig: status --config finds the master where tdfs-master
// --config FILE runs (its journal dir from the file); -m and --journal
// override the file.
func TestStatusConfig(t *testing.T) {
	base := t.TempDir()
	dir, journal := filepath.Join(base, "dir"), filepath.Join(base, "journal")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := writeFile(t, "master.yaml", "dir: "+dir+"\nmount: /mnt\njournal: "+journal+"\nsync: sync\n")
	run := func(args ...string) (int, string) {
		var stderr strings.Builder
		app := newApp(&stderr)
		app.ExitErrHandler = func(*cli.Context, error) {} // errors come back to daemon.Run, not os.Exit
		code := daemon.Run(app, append([]string{"tdfs-master"}, args...), &stderr)
		return code, stderr.String()
	}
	sock := filepath.Join(journal, daemon.AdminSocketName)
	for _, args := range [][]string{
		{"status", "--check", "--config", p},
		{"--config", p, "status", "--check"},
		{"verify", "--config", p},
		{"resync", "--config", p, "web1"},
	} {
		code, stderr := run(args...)
		if !strings.Contains(stderr, "no master answers on "+sock) || (args[0] == "status" && code != 2) {
			t.Errorf("%q: exit %d, %s; want no master on %s", args, code, stderr, sock)
		}
	}
	other := filepath.Join(base, "other")
	if code, stderr := run("status", "--config", p, "--journal", other); code != 1 ||
		!strings.Contains(stderr, "no master answers on "+filepath.Join(other, daemon.AdminSocketName)) {
		t.Errorf("--journal over --config: exit %d, %s", code, stderr)
	}
	if code, stderr := run("status", "--config", filepath.Join(base, "nope.yaml")); code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("a missing config file: exit %d, %s", code, stderr)
	}
	if code, stderr := run("status", "--config", writeFile(t, "bad.yaml", "mountpoint: /x\n")); code != 1 ||
		!strings.Contains(stderr, `unknown key "mountpoint"`) {
		t.Errorf("a bad config file: exit %d, %s", code, stderr)
	}
	if code, stderr := run("status", "--watch", "1s", "extra"); code != 1 || !strings.Contains(stderr, "unexpected argument") {
		t.Errorf("an extra argument: exit %d, %s", code, stderr)
	}
	if code, stderr := run("status", "--interval", "0s"); code != 1 || !strings.Contains(stderr, "--interval") {
		t.Errorf("--interval 0s: exit %d, %s", code, stderr)
	}
}

// TestContribMasterMetrics: the alerting rules and the dashboard name
// only tdfs_master_ metrics the master exports.
func TestContribMasterMetrics(t *testing.T) {
	names := metricstest.Described(newMasterCollector(nil, nil), newWaitHistogram())
	if !names["tdfs_master_slave_lag_seconds"] || !names["tdfs_master_sync_wait_seconds_bucket"] {
		t.Fatalf("the master's metrics were not found: %v", names)
	}
	if n := metricstest.CheckPrefix(t, "tdfs_master_", names); n < 10 {
		t.Errorf("only %d uses of the master's metrics in the contrib files", n)
	}
}
