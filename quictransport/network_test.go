package quictransport

import (
	"testing"
	"time"

	"github.com/tdfs/tdfs/internal/udprelay"
)

// Through a relay with latency and loss, ops still arrive in order.
func TestThroughLossyRelay(t *testing.T) {
	deliverThroughLoss(t, 1, 0.02, 13, 400, 5, 128<<10)
}

// relayTo starts a relay to addr with the given one-way delay and loss. It
// is closed when the test ends, after whatever was started later (a master
// dialing through it) has stopped.
func relayTo(t *testing.T, addr string, delay time.Duration, loss float64) *udprelay.Relay {
	t.Helper()
	r, err := udprelay.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	r.SetDelay(delay)
	r.SetLoss(loss)
	return r
}

// deliverThroughLoss sends n ops (large of them bigSize bytes) through a
// 5 ms relay dropping loss of the datagrams, on the given lanes, and checks
// that the slave applied exactly them, in order, and that the relay did
// drop some. It returns the master for further checks.
func deliverThroughLoss(t *testing.T, lanes int, loss float64, seed uint64, n, large, bigSize int) *testMaster {
	t.Helper()
	p := newPKI(t, "lossy")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	r := relayTo(t, srv.Addr().String(), 5*time.Millisecond, loss)
	run := newRun(t)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: r.Addr(), TLS: p.clientTLS()}}, Run: run, Lanes: lanes})
	g := newOpGen(seed)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, n, large, bigSize, want)
	waitApplied(t, h, g.seq, 120*time.Second)
	checkRecords(t, h, want, g.seq)
	if _, dropped := r.Stats(); dropped == 0 {
		t.Fatal("the relay dropped nothing: the test did not test loss")
	}
	return m
}

// A partition long enough for the idle timeout: the master reconnects
// once the network heals and nothing is lost or applied twice.
func TestPartitionThenReconnect(t *testing.T) {
	p := newPKI(t, "partition")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, quic: fastQUIC()})
	r := relayTo(t, srv.Addr().String(), 0, 0)
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
