package quictransport

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/quictransport/wire"
)

// smallWindows makes QUIC's connection window far smaller than the bytes a
// test sends, so a slave that left data streams unread while waiting for
// a missing op would deadlock the connection (research pitfall #5).
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
	srv := startServer(t, ServerConfig{TLS: p.serverTLS(), Handler: h, MaxPending: maxPending, quic: smallWindows()})
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
	waitApplied(t, h, run, seq, 120*time.Second)
	checkRecords(t, h, run, want, seq)
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
	srv := startServer(t, ServerConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: 50 * time.Millisecond})
	run := newRun(t)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: run})
	for i := range uint64(20) {
		m.Append(i+1, &wire.Mkdir{Path: fmt.Sprintf("d%d", i), Mode: 0o755})
	}
	h.waitFor(t, 30*time.Second, "durable 20", func(h *fakeHandler) bool { return h.durable == 20 })
	eventually(t, 30*time.Second, "the master to see durable 20", func() bool { return m.status(0).Durable == 20 })
}

// A new master run starts at seq 1 whatever the slave's previous run
// reached, and the slave says it assumes its tree matched.
// TestNewRun: a slave follows a new master run from seq 1 only when its
// tree is the one that run starts from; otherwise the master is told it
// needs a resync and the handler sees nothing.
func TestNewRun(t *testing.T) {
	old, other := newRun(t), newRun(t)
	for _, tc := range []struct {
		name        string
		run         wire.RunID // the slave's state
		durable     uint64
		prevRun     wire.RunID // announced by the master
		prevHead    uint64
		fresh       bool
		follows     bool
		slaveLogHas string
	}{
		{"continues a clean previous run", old, 500, old, 500, false, true, "restarted cleanly"},
		{"new replica of a new tree", wire.RunID{}, 0, wire.RunID{}, 0, true, true, "this replica is new too"},
		{"behind the previous run", old, 400, old, 500, false, false, "ended at seq 500"},
		{"previous run crashed", old, 500, wire.RunID{}, 0, false, false, "did not end cleanly"},
		{"missed a whole run", other, 500, old, 500, false, false, "missed at least one whole run"},
		{"no state, tree not empty", wire.RunID{}, 0, old, 500, false, false, "no replication state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPKI(t, "newrun")
			h := newFakeHandler()
			h.run, h.durable, h.lastSeq = tc.run, tc.durable, tc.durable
			srv := startServer(t, ServerConfig{TLS: p.serverTLS(), Handler: h})
			run := newRun(t)
			m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: run,
				PrevRun: tc.prevRun, PrevHead: tc.prevHead, Fresh: tc.fresh})
			g := newOpGen(12)
			want := map[uint64][]byte{}
			appendOps(m.Master, g, 100, 10, 128<<10, want)
			if tc.follows {
				waitApplied(t, h, run, g.seq, 60*time.Second)
				checkRecords(t, h, run, want, g.seq)
			} else {
				eventually(t, 60*time.Second, "needs-resync status", func() bool {
					st := m.Status()
					return st[0].State == "needs-resync" && strings.Contains(st[0].LastError, "the slave reports")
				})
				h.mu.Lock()
				n := len(h.records)
				h.mu.Unlock()
				if n != 0 {
					t.Fatalf("the slave applied %d ops of a run it cannot follow", n)
				}
			}
			if !strings.Contains(srv.log.String(), tc.slaveLogHas) {
				t.Fatalf("slave log lacks %q:\n%s", tc.slaveLogHas, srv.log)
			}
		})
	}
}

// TestUnusableReplica: a Handler whose tree is in an unknown state makes
// the slave refuse every master with a needs-resync verdict and its reason.
func TestUnusableReplica(t *testing.T) {
	p := newPKI(t, "unusable")
	h := newFakeHandler()
	h.unusable = errors.New("killed after applying ops it had not made durable")
	srv := startServer(t, ServerConfig{TLS: p.serverTLS(), Handler: h})
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: newRun(t)})
	g := newOpGen(3)
	appendOps(m.Master, g, 10, 1, 1<<10, map[uint64][]byte{})
	eventually(t, 60*time.Second, "needs-resync status", func() bool {
		st := m.Status()
		return st[0].State == "needs-resync" && strings.Contains(st[0].LastError, "killed after applying")
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.records) != 0 {
		t.Fatalf("an unusable replica applied %d ops", len(h.records))
	}
}

// TestVouched: an operator's vouch (--assume-in-sync) lets a slave with no
// state but a tree follow the run; it never overrides any other doubt.
func TestVouched(t *testing.T) {
	for _, tc := range []struct {
		name    string
		doubt   error
		follows bool
	}{
		{"unverified replica", fmt.Errorf("%w: not empty, no state", ErrUnverified), true},
		{"crashed replica", errors.New("stopped without syncing"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPKI(t, "vouch")
			h := newFakeHandler()
			h.unusable = tc.doubt
			srv := startServer(t, ServerConfig{TLS: p.serverTLS(), Handler: h})
			run := newRun(t)
			m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: run,
				PrevRun: newRun(t), Vouched: true})
			g := newOpGen(5)
			want := map[uint64][]byte{}
			appendOps(m.Master, g, 20, 2, 64<<10, want)
			if tc.follows {
				waitApplied(t, h, run, g.seq, 60*time.Second)
				checkRecords(t, h, run, want, g.seq)
				return
			}
			eventually(t, 60*time.Second, "needs-resync status", func() bool {
				return m.Status()[0].State == "needs-resync"
			})
		})
	}
}
