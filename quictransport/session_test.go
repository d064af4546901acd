package quictransport

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

// smallWindows makes QUIC's connection window far smaller than the bytes a
// test sends, so a slave that left data streams unread while waiting for
// a missing op would deadlock the connection (docs/design.md,
// Implementation traps).
func smallWindows() *quic.Config {
	c := fastQUIC()
	c.MaxIdleTimeout = 30 * time.Second // a stuck applier is not a dead peer
	c.InitialStreamReceiveWindow = 128 << 10
	c.MaxStreamReceiveWindow = 256 << 10
	c.InitialConnectionReceiveWindow = 512 << 10
	c.MaxConnectionReceiveWindow = 1 << 20
	return c
}

// A handler stuck on one op while the master sends far more large-write
// bytes than the connection window: the slave keeps reading every stream
// (no deadlock), buffers no more than MaxPending, the master never has
// more than that in flight, and everything arrives in order once the
// handler is released.
func TestSlowHandlerNoDeadlockBoundedMemory(t *testing.T) {
	const maxPending = 4 << 20
	p := newPKI(t, "flow")
	h := newFakeHandler()
	release := h.blockAt(2)
	defer release()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, MaxPending: maxPending, quic: smallWindows()})
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers:       []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
		Run:         run,
		DataStreams: 8,
		quic:        smallWindows(),
	})
	want := map[uint64][]byte{}
	var seq uint64
	add := func(op wire.Op) {
		seq++
		want[seq] = wire.AppendOp(nil, seq, op)
		m.Append(seq, op)
	}
	add(&wire.Mkdir{Path: "d", Mode: 0o755})
	add(&wire.Create{Path: "d/f", Handle: 1, Mode: 0o644}) // Apply blocks here
	data := make([]byte, 256<<10)
	for i := range 64 { // 16 MiB of writes, 16 times the connection window
		for j := range data {
			data[j] = byte(i + j)
		}
		add(&wire.Write{Handle: 1, Off: int64(i) * int64(len(data)), Data: data})
		add(&wire.Setattr{Path: "d/f", Valid: wire.SetMode, Mode: 0o600})
	}
	h.waitFor(t, 60*time.Second, "Apply blocked at op 2", func(h *fakeHandler) bool { return h.blocked })
	// The slave reads ahead far beyond the connection window while its
	// applier is stuck.
	eventually(t, 60*time.Second, "the slave to buffer ahead", func() bool {
		return srv.peakPending.Load() >= 3<<20
	})
	m.mu.Lock()
	sent := m.peers[0].sent
	m.mu.Unlock()
	if sent >= seq {
		t.Fatalf("the master sent everything (%d) to a stuck slave", sent)
	}
	release()
	waitApplied(t, h, seq, 120*time.Second)
	checkRecords(t, h, want, seq)
	m.mu.Lock()
	inflight := m.peers[0].maxInflight
	m.mu.Unlock()
	if peak := srv.peakPending.Load(); peak > maxPending {
		t.Fatalf("the slave buffered %d bytes, beyond MaxPending %d", peak, maxPending)
	}
	if inflight > maxPending {
		t.Fatalf("the master had %d bytes in flight, beyond MaxPending %d", inflight, maxPending)
	}
	if strings.Contains(srv.log.String(), "closing master connection") {
		t.Fatalf("the slave closed the connection:\n%s", srv.log)
	}
}

// In async mode the slave still makes ops durable when idle for
// SyncInterval, so Durable advances without Sync ops.
func TestIdleSyncAdvancesDurable(t *testing.T) {
	p := newPKI(t, "idle")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: 50 * time.Millisecond})
	run := newRun(t)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: run})
	for i := range uint64(20) {
		m.Append(i+1, &wire.Mkdir{Path: fmt.Sprintf("d%d", i), Mode: 0o755})
	}
	waitDurable(t, h, 20, 30*time.Second)
	eventually(t, 30*time.Second, "the master to see durable 20", func() bool { return m.status(0).Durable == 20 })
}
