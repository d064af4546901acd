package quictransport

import (
	"testing"
	"time"

	"github.com/tdfs/tdfs/internal/udprelay"
)

// Through a relay with latency and loss, ops still arrive in order.
func TestThroughLossyRelay(t *testing.T) {
	p := newPKI(t, "lossy")
	h := newFakeHandler()
	srv := startServer(t, ServerConfig{TLS: p.serverTLS(), Handler: h})
	r, err := udprelay.New(srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetDelay(5 * time.Millisecond)
	r.SetLoss(0.02)
	run := newRun(t)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: r.Addr(), TLS: p.clientTLS()}}, Run: run})
	g := newOpGen(13)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 400, 5, 128<<10, want)
	waitApplied(t, h, g.seq, 120*time.Second)
	checkRecords(t, h, want, g.seq)
	if _, dropped := r.Stats(); dropped == 0 {
		t.Fatal("the relay dropped nothing: the test did not test loss")
	}
}

// A partition long enough for the idle timeout: the master reconnects
// once the network heals and nothing is lost or applied twice.
func TestPartitionThenReconnect(t *testing.T) {
	p := newPKI(t, "partition")
	h := newFakeHandler()
	srv := startServer(t, ServerConfig{TLS: p.serverTLS(), Handler: h, quic: fastQUIC()})
	r, err := udprelay.New(srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	run := newRun(t)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: r.Addr(), TLS: p.clientTLS()}}, Run: run, quic: fastQUIC()})
	g := newOpGen(14)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 200, 5, 128<<10, want)
	waitApplied(t, h, g.seq, 60*time.Second)
	r.SetPartition(true)
	appendOps(m.Master, g, 200, 5, 128<<10, want)
	eventually(t, 60*time.Second, "the master to give up on the connection", func() bool {
		return m.status(0).State == "connecting"
	})
	r.SetPartition(false)
	appendOps(m.Master, g, 200, 5, 128<<10, want)
	waitApplied(t, h, g.seq, 120*time.Second)
	checkRecords(t, h, want, g.seq)
}
