package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// laneRow is what TestLanes reads of `tdfs-master status --json`.
type laneRow struct {
	State         string `json:"state"`
	Lanes         int    `json:"lanes"`
	WireBytesSent uint64 `json:"wire_bytes_sent"`
}

func laneStatus(t *testing.T, m *master) laneRow {
	t.Helper()
	out := runOK(t, bin("tdfs-master"), "status", "-m", m.dir, "--journal", m.journal, "--json")
	var st struct {
		Slaves []laneRow `json:"slaves"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if len(st.Slaves) != 1 {
		t.Fatalf("status lists %d slaves, want 1:\n%s", len(st.Slaves), out)
	}
	return st.Slaves[0]
}

// TestLanes: a master with --lanes 4 feeds a slave through a relay with
// latency and loss: four connections carry the data, the slave converges,
// and status reports the lanes and the bytes sent on all of them.
func TestLanes(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	r, target := relayed(t, "s1", s.addr)
	r.SetDelay(10 * time.Millisecond)
	r.SetLoss(0.005)
	m := startMasterTo(t, k, []string{target}, "--lanes", "4", "--sync", "async")
	m.waitLine(`resync pass done`+ofSlave(r.Addr()), 120*time.Second) // a new replica is compared once
	m.waitLine(`msg="lane connected" .*\bslave=`+regexp.QuoteMeta(r.Addr())+` .*lanes=4`, 60*time.Second)
	s.waitLine(`msg="lane connected" .*granted=4`, 60*time.Second)

	// 12 files of 1.5 MiB: every write of 64 KiB or more travels on a data
	// stream, spread over the four connections.
	var written int64
	for i := range 12 {
		data := bytes.Repeat([]byte(fmt.Sprintf("lane %02d ", i)), 3<<17)
		if err := os.WriteFile(filepath.Join(m.mnt, fmt.Sprintf("f%02d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
		written += int64(len(data))
	}
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s}, 180*time.Second)
	if _, dropped := r.Stats(); dropped == 0 {
		t.Error("the relay dropped nothing: the test did not test loss")
	}
	st := laneStatus(t, m)
	if st.Lanes != 4 {
		t.Errorf("status: %d lanes, want 4 (%+v)", st.Lanes, st)
	}
	if st.WireBytesSent < uint64(written) {
		t.Errorf("status: %d wire bytes sent, below the %d bytes written", st.WireBytesSent, written)
	}
	if l := m.linesFrom(0, `lane \d+ ended|lane \d+ not connected`); len(l) > 0 {
		t.Errorf("a lane was lost or refused: %q", l)
	}
	m.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}
