package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// statusOf runs `tdfs-master status --json` against m.
type slaveRow struct {
	Addr       string  `json:"addr"`
	Name       string  `json:"name"`
	State      string  `json:"state"`
	Applied    uint64  `json:"applied_seq"`
	Durable    uint64  `json:"durable_seq"`
	LagOps     uint64  `json:"lag_ops"`
	LagBytes   uint64  `json:"lag_bytes"`
	LagSeconds float64 `json:"lag_seconds"`
	RTTSeconds float64 `json:"rtt_seconds"`
	Cause      string  `json:"cause"`
	Policy     string  `json:"policy"`
	WireBytes  uint64  `json:"wire_bytes_sent"`
}

type statusAnswer struct {
	Head         uint64     `json:"head"`
	Epoch        string     `json:"epoch"`
	JournalBytes int64      `json:"journal_bytes"`
	Slaves       []slaveRow `json:"slaves"`
}

func statusOf(t *testing.T, m *master) statusAnswer {
	t.Helper()
	out := runOK(t, bin("tdfs-master"), "status", "-m", m.dir, "--journal", m.journal, "--json")
	var st statusAnswer
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if len(st.Slaves) != 1 {
		t.Fatalf("status lists %d slaves, want 1:\n%s", len(st.Slaves), out)
	}
	return st
}

// waitStatus polls status until cond holds.
func waitStatus(t *testing.T, m *master, what string, timeout time.Duration, cond func(statusAnswer) bool) statusAnswer {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := statusOf(t, m)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status: %s not reached within %v: %+v", what, timeout, st)
		}
		time.Sleep(100 * time.Millisecond) // polling a condition, bounded by the deadline
	}
}

// TestStatusLag: `tdfs-master status` shows a slave's lag in ops, bytes
// and seconds while a relay holds its traffic back, and no lag once the
// relay lets it through.
func TestStatusLag(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	r, target := relayed(t, "s1", s.addr)
	m := startMasterTo(t, k, []string{target}, "--sync", "async", "--metrics-addr", "127.0.0.1:0")
	url := m.waitLine(`msg=metrics .*url=(\S+)`, 30*time.Second)[1]
	m.waitLine(`resync pass done`+ofSlave(r.Addr()), 60*time.Second)
	if err := os.WriteFile(filepath.Join(m.mnt, "before"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, m, "no lag", 60*time.Second, func(st statusAnswer) bool {
		p := st.Slaves[0]
		return p.State == "streaming" && p.LagOps == 0 && p.Applied == st.Head && st.Head > 0
	})
	if p := st.Slaves[0]; p.Addr != r.Addr() || p.Name != "s1" || p.LagBytes != 0 || p.LagSeconds != 0 || p.RTTSeconds <= 0 {
		t.Fatalf("an idle slave in sync: %+v", p)
	}

	r.SetPartition(true)
	data := bytes.Repeat([]byte("lag"), 1<<20)
	if err := os.WriteFile(filepath.Join(m.mnt, "held-back"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, m, "a lag of over half a second", 30*time.Second, func(st statusAnswer) bool {
		return st.Slaves[0].LagSeconds >= 0.5
	})
	if p := st.Slaves[0]; p.LagOps == 0 || p.LagBytes < uint64(len(data)) || p.Applied >= st.Head {
		t.Fatalf("a slave held back: %+v (head %d); want lag of the %d bytes written", p, st.Head, len(data))
	}
	// So do the metrics.
	if lag := slaveMetric(t, url, "tdfs_master_slave_lag_ops", r.Addr()); lag == 0 {
		t.Errorf("tdfs_master_slave_lag_ops is 0 while the slave is held back")
	}
	if lag := slaveMetric(t, url, "tdfs_master_slave_lag_seconds", r.Addr()); lag < 0.5 {
		t.Errorf("tdfs_master_slave_lag_seconds is %v while the slave is held back", lag)
	}
	// The table says it too.
	out := runOK(t, bin("tdfs-master"), "status", "-m", m.dir, "--journal", m.journal)
	if !strings.Contains(out, "LAG OPS") || !strings.Contains(out, r.Addr()) || !strings.Contains(out, "MB") {
		t.Errorf("status table:\n%s", out)
	}

	r.SetPartition(false)
	waitStatus(t, m, "no lag after the relay lets traffic through", 60*time.Second, func(st statusAnswer) bool {
		p := st.Slaves[0]
		return p.LagOps == 0 && p.LagBytes == 0 && p.LagSeconds == 0 && p.Applied == st.Head
	})
	if lag := slaveMetric(t, url, "tdfs_master_slave_lag_ops", r.Addr()); lag != 0 {
		t.Errorf("tdfs_master_slave_lag_ops is %v once the slave caught up", lag)
	}
	if n := slaveMetric(t, url, "tdfs_master_ops_total", ""); n == 0 {
		t.Errorf("tdfs_master_ops_total counts no write")
	}
	m.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)

	// No master: a clear error and exit code 1.
	cmd := exec.Command(bin("tdfs-master"), "status", "-m", m.dir, "--journal", m.journal)
	out2, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out2), "no master answers") {
		t.Errorf("status without a master: %v\n%s", err, out2)
	}
}

// slaveMetric scrapes url, parses it with Prometheus's own text parser,
// and returns the value of name for label slave="slave" (with slave "",
// the sum over every series of name).
func slaveMetric(t *testing.T, url, name, slave string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s does not parse as Prometheus text: %v", url, err)
	}
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("%s has no %s", url, name)
	}
	var sum float64
	for _, m := range fam.GetMetric() {
		match := slave == ""
		for _, l := range m.GetLabel() {
			if l.GetName() == "slave" && l.GetValue() == slave {
				match = true
			}
		}
		if match {
			sum += valueOf(m)
		}
	}
	return sum
}

func valueOf(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return 0
}

// TestSlaveStatus: tdfs-slave status, /seq (read-your-writes routing) and
// the slave's /metrics say which master it follows and how far it got.
func TestSlaveStatus(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1", "--metrics-addr", "127.0.0.1:0")
	url := s.waitLine(`msg=metrics .*url=(\S+)/metrics`, 30*time.Second)[1]
	m := startMaster(t, k, []*slave{s}, "--sync", "fsync")
	m.waitLine(`resync pass done`+ofSlave(s.addr), 60*time.Second)
	if err := os.WriteFile(filepath.Join(m.mnt, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	syncMount(t, m.mnt)
	head := statusOf(t, m).Head

	type seqAnswer struct {
		Master    string     `json:"master"`
		Epoch     string     `json:"epoch"`
		Applied   uint64     `json:"applied_seq"`
		Durable   uint64     `json:"durable_seq"`
		Resyncing bool       `json:"resyncing"`
		LastOp    *time.Time `json:"last_op"`
	}
	deadline := time.Now().Add(30 * time.Second)
	var seq seqAnswer
	for {
		resp, err := http.Get(url + "/seq")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&seq)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("/seq: %v", err)
		}
		if seq.Durable >= head {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/seq never reached the master's head %d: %+v", head, seq)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	if seq.Applied < head || seq.Resyncing || seq.LastOp == nil || !strings.Contains(seq.Master, "master") {
		t.Errorf("/seq after the fsync: %+v (head %d)", seq, head)
	}
	if st := statusOf(t, m); !strings.HasPrefix(st.Epoch, seq.Epoch) || seq.Epoch == "" {
		t.Errorf("the slave follows epoch %q, the master is %q", seq.Epoch, st.Epoch)
	}
	out := runOK(t, bin("tdfs-slave"), "status", "-m", s.dir, "--state", slaveState(s))
	for _, want := range []string{"master", "applied seq", "durable seq", "last op", s.addr} {
		if !strings.Contains(out, want) {
			t.Errorf("tdfs-slave status lacks %q:\n%s", want, out)
		}
	}
	if v := slaveMetric(t, url+"/metrics", "tdfs_slave_durable_seq", ""); v < float64(head) {
		t.Errorf("tdfs_slave_durable_seq %v < head %d", v, head)
	}
	if v := slaveMetric(t, url+"/metrics", "tdfs_slave_master_connected", ""); v != 1 {
		t.Errorf("tdfs_slave_master_connected %v", v)
	}
	if v := slaveMetric(t, url+"/metrics", "tdfs_slave_stalled", ""); v != 0 {
		t.Errorf("tdfs_slave_stalled %v on a slave that applies", v)
	}
	m.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}
