package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tdfs/tdfs/cmd/internal/metrics/metricstest"
)

func TestBuildInfo(t *testing.T) {
	fams, err := NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "tdfs_build_info" {
			continue
		}
		m := f.GetMetric()[0]
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if m.GetGauge().GetValue() != 1 || labels["goversion"] != runtime.Version() || labels["version"] == "" || labels["commit"] == "" {
			t.Errorf("tdfs_build_info: %v", m)
		}
		return
	}
	t.Fatal("no tdfs_build_info")
}

func TestStatusHandlers(t *testing.T) {
	type st struct {
		Bad []string `json:"bad"`
	}
	cur := st{}
	hs := StatusHandlers(func() st { return cur }, func(s st, q url.Values) ([]string, error) {
		if q.Get("fail") != "" {
			return nil, io.ErrUnexpectedEOF
		}
		return s.Bad, nil
	})
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		u, _ := url.Parse(path)
		hs[u.Path].ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("healthy: %d %q", code, body)
	}
	cur.Bad = []string{"a is down", "b lags"}
	if code, body := get("/healthz"); code != 503 || body != "a is down\nb lags\n" {
		t.Errorf("unhealthy: %d %q", code, body)
	}
	if code, body := get("/status"); code != 200 || body != `{"bad":["a is down","b lags"]}`+"\n" {
		t.Errorf("/status: %d %q", code, body)
	}
	if code, _ := get("/healthz?fail=1"); code != 400 {
		t.Errorf("a bad query: %d", code)
	}
}

func TestWatch(t *testing.T) {
	now := func() time.Time { return time.Date(2026, 1, 2, 15, 4, 5, 0, time.Local) }
	n := 0
	draw := func(w io.Writer) int {
		n++
		io.WriteString(w, "snapshot\n")
		return n // the code of the last one is returned
	}
	var out strings.Builder
	code := Watch{Out: &out, Every: time.Millisecond, Count: 2, Command: "x status", Now: now}.Run(context.Background(), draw)
	header := "Every 1ms: x status    "
	if code != 2 || strings.Count(out.String(), header) != 2 || !strings.Contains(out.String(), "2026-01-02 15:04:05\n\nsnapshot\n\nEvery") ||
		strings.Contains(out.String(), "\033") {
		t.Errorf("two snapshots to a pipe: code %d\n%q", code, out.String())
	}

	// On a terminal each clears the screen; no blank line between them.
	out.Reset()
	Watch{Out: &out, Terminal: true, Every: time.Millisecond, Count: 2, Command: "x", Now: now}.Run(context.Background(), draw)
	if s := out.String(); strings.Count(s, clearScreen) != 2 || !strings.HasPrefix(s, clearScreen+"Every") || strings.Contains(s, "snapshot\n\n") {
		t.Errorf("on a terminal: %q", s)
	}

	// JSON: one document a line, nothing else.
	out.Reset()
	Watch{Out: &out, Every: time.Millisecond, Count: 3, JSON: true}.Run(context.Background(), func(w io.Writer) int {
		io.WriteString(w, "{}\n")
		return 0
	})
	if out.String() != "{}\n{}\n{}\n" {
		t.Errorf("JSON: %q", out.String())
	}

	// Until the context ends (the signal): then exit 0, whatever the
	// last snapshot said.
	ctx, cancel := context.WithCancel(context.Background())
	out.Reset()
	code = Watch{Out: &out, Every: time.Hour, Command: "x"}.Run(ctx, func(w io.Writer) int {
		cancel()
		return 1
	})
	if code != 0 || strings.Count(out.String(), "Every 1h0m0s: x") != 1 {
		t.Errorf("stopped by its context: code %d\n%s", code, out.String())
	}
}

func TestIdentifiers(t *testing.T) {
	for expr, want := range map[string]string{
		`up{job="tdfs-master"} == 0`: "up",
		`sum without (slave, state) (tdfs_master_slave_state{state=~"a|b"}) == 0`:                       "tdfs_master_slave_state",
		`histogram_quantile(0.99, sum by (le) (rate(x_bucket{instance=~"$master"}[$__rate_interval])))`: "x_bucket",
		`a / on(instance) group_left(version) b offset 5m > 1e3 and bool c # d`:                         "a b c",
		`time() - (tdfs_slave_last_op_timestamp_seconds > 0)`:                                           "tdfs_slave_last_op_timestamp_seconds",
		`max without (state) (m{l="}"}) == 1 unless ${x} or $y`:                                         "m",
		`rate(a[5m:1m]) / (rate(b[${__rate_interval}]) > 0)`:                                            "a b",
	} {
		if got := strings.Join(metricstest.Identifiers(expr), " "); got != want {
			t.Errorf("%s: %q, want %q", expr, got, want)
		}
	}
}

// TestContribMetrics: the alerting rules and the dashboard name only
// metrics that exist: the daemons' own (checked by each daemon's tests),
// the standard ones every registry has, and Prometheus's up.
func TestContribMetrics(t *testing.T) {
	names := metricstest.Gathered(t, NewRegistry())
	names["up"] = true
	refs := metricstest.Referenced(t)
	if len(refs) < 20 {
		t.Fatalf("only %d metric uses found in the contrib files: %v", len(refs), refs)
	}
	for _, r := range refs {
		if strings.HasPrefix(r.Metric, "tdfs_master_") || strings.HasPrefix(r.Metric, "tdfs_slave_") {
			continue
		}
		if !names[r.Metric] {
			t.Errorf("%s: %s is not a metric tdfs exports", r.Where, r.Metric)
		}
	}
	seen := map[string]bool{}
	for _, g := range metricstest.LoadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
				t.Errorf("rule %+v: want alert, expr, labels.severity and annotations.summary", r)
			}
			if seen[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			seen[r.Alert] = true
		}
	}
	for _, a := range []string{"TdfsMasterDown", "TdfsSlaveNotStreaming", "TdfsSlaveLagging", "TdfsSlaveStalled",
		"TdfsResyncRunningLong", "TdfsNoSlaveConnected"} {
		if !seen[a] {
			t.Errorf("no alert %s", a)
		}
	}
}

// TestPromtool checks the rules with Prometheus's own tool, and runs
// their unit tests (contrib/prometheus/alerts_test.yml).
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("SKIP: promtool is not installed (Debian: apt-get install prometheus): the alerting rules are checked only by TestContribMetrics")
	}
	dir := filepath.Join(metricstest.Root(t), "contrib", "prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
