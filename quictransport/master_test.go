package quictransport

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// A few thousand mixed ops, many of them large writes on data streams,
// reach the handler exactly in seq order with the right contents.
func TestOrderingMixedOps(t *testing.T) {
	for _, compress := range []bool{false, true} {
		name := "raw"
		if compress {
			name = "zstd"
		}
		t.Run(name, func(t *testing.T) {
			p := newPKI(t, "order")
			h := newFakeHandler()
			srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
			run := newRun(t)
			cfg := MasterConfig{
				Peers:       []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
				Run:         run,
				DataStreams: 4,
			}
			if compress {
				c, err := wire.NewCompressor(1)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Compressor = c
			}
			m := startMaster(t, cfg)
			want := map[uint64][]byte{}
			g := newOpGen(42)
			startRun(m.Master, g, run, want)
			// 2500 ops, 8% of them writes of 64..128 KiB on data streams.
			appendOps(m.Master, g, 2500, 8, 128<<10, want)
			waitApplied(t, h, g.seq, 120*time.Second)
			checkRecords(t, h, want, g.seq)
			eventually(t, 30*time.Second, "acks for every op", func() bool {
				st := m.status(0)
				return st.Applied == g.seq && st.Sent == g.seq
			})
			if st := m.status(0); st.State != "streaming" {
				t.Fatalf("state %q, want streaming", st.State)
			}
		})
	}
}

// Wait in fsync mode returns once the slave's Handler.Sync made the op
// durable; the Sync op itself is never passed to Apply.
func TestWaitFsync(t *testing.T) {
	p := newPKI(t, "fsync")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
		Run:   run, Mode: wire.ModeFsync, SyncTimeout: time.Minute,
	})
	eventually(t, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })
	g := newOpGen(1)
	want := map[uint64][]byte{}
	for round := range 5 {
		appendOps(m.Master, g, 20, 10, 96<<10, want)
		g.seq++
		want[g.seq] = wire.AppendOp(nil, g.seq, &wire.Sync{})
		m.Append(g.seq, &wire.Sync{})
		m.Wait(g.seq)
		if _, durable, _ := h.snapshot(); durable < g.seq {
			t.Fatalf("round %d: Wait(%d) returned with the slave durable at %d", round, g.seq, durable)
		}
		if st := m.status(0); st.Durable < g.seq || st.State != "streaming" {
			t.Fatalf("round %d: status %+v after Wait(%d)", round, st, g.seq)
		}
	}
	checkRecords(t, h, want, g.seq)
}

// In sync mode every Wait waits for durability (the slave group-commits
// when it drained what had arrived).
func TestWaitSyncMode(t *testing.T) {
	p := newPKI(t, "sync")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
		Run:   run, Mode: wire.ModeSync, SyncTimeout: time.Minute,
	})
	eventually(t, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })
	g := newOpGen(2)
	want := map[uint64][]byte{}
	for range 40 {
		appendOps(m.Master, g, 1, 10, 96<<10, want)
		m.Wait(g.seq)
		if _, durable, _ := h.snapshot(); durable < g.seq {
			t.Fatalf("Wait(%d) returned with the slave durable at %d", g.seq, durable)
		}
	}
	checkRecords(t, h, want, g.seq)
}

// In async mode Wait never waits, even for a slave that applies nothing.
func TestWaitAsyncReturnsAtOnce(t *testing.T) {
	p := newPKI(t, "async")
	h := newFakeHandler()
	gate := make(chan struct{})
	defer close(gate)
	h.setGates(gate, gate)
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
		Run:   newRun(t), Mode: wire.ModeAsync, SyncTimeout: time.Hour,
	})
	eventually(t, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })
	m.Append(1, &wire.Mkdir{Path: "a", Mode: 0o755})
	m.Append(2, &wire.Sync{})
	done := make(chan struct{})
	go func() { m.Wait(2); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Wait blocked in async mode")
	}
}

// A slave whose Sync blocks beyond SyncTimeout is marked degraded, stops
// holding writers back, and is healthy again once it catches up.
func TestWaitDegradedAndRecovers(t *testing.T) {
	p := newPKI(t, "degraded")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
		Run:   run, Mode: wire.ModeFsync, SyncTimeout: 300 * time.Millisecond,
	})
	eventually(t, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })
	gate := make(chan struct{})
	h.setGates(nil, gate)
	m.Append(1, &wire.Mkdir{Path: "a", Mode: 0o755})
	m.Append(2, &wire.Sync{})
	done := make(chan struct{})
	go func() { m.Wait(2); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not give up on a slave stuck in Sync")
	}
	if st := m.status(0); st.State != "degraded" || st.Durable >= 2 {
		t.Fatalf("status %+v, want degraded and not durable", st)
	}
	if m.log.count("slave degraded") != 1 {
		t.Fatalf("want one degraded log line:\n%s", m.log)
	}
	// While degraded, the slave does not hold writers back.
	m.Append(3, &wire.Sync{})
	done3 := make(chan struct{})
	go func() { m.Wait(3); close(done3) }()
	select {
	case <-done3:
	case <-time.After(30 * time.Second):
		t.Fatal("a degraded slave still holds writers back")
	}
	close(gate)
	eventually(t, 30*time.Second, "healthy again", func() bool {
		st := m.status(0)
		return st.State == "streaming" && st.Durable == 3
	})
	if m.log.count("slave healthy again") != 1 {
		t.Fatalf("want one healthy-again log line:\n%s", m.log)
	}
	// Healthy: it holds writers back again until durable.
	m.Append(4, &wire.Sync{})
	m.Wait(4)
	if _, durable, _ := h.snapshot(); durable < 4 {
		t.Fatalf("Wait(4) returned with the slave durable at %d", durable)
	}
}

// Drain returns once the slave acknowledged the head as durable; the slave
// sees the Bye (it syncs without a Sync op and logs the clean close).
func TestDrain(t *testing.T) {
	p := newPKI(t, "drain")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
		Run:   run,
	})
	g := newOpGen(3)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 299, 10, 128<<10, want)
	if err := m.Drain(60 * time.Second); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	recs, durable, _ := h.snapshot()
	if durable != g.seq || len(recs) == 0 {
		t.Fatalf("after Drain the slave is durable at %d, want %d", durable, g.seq)
	}
	checkRecords(t, h, want, g.seq)
	if st := m.status(0); st.State != "stopped" || st.Durable != g.seq {
		t.Fatalf("status after drain: %+v", st)
	}
	eventually(t, 30*time.Second, "the slave to log the bye", func() bool {
		return strings.Contains(srv.log.String(), "master connection closed: bye")
	})
	for _, s := range []string{"draining: ", "all slaves durable at seq 300"} {
		if !strings.Contains(m.log.String(), s) {
			t.Errorf("master log lacks %q", s)
		}
	}
}

// Drain with an absent slave gives up after its timeout, with an error
// naming what the slave lacks.
func TestDrainAbsentSlaveTimesOut(t *testing.T) {
	p := newPKI(t, "drain-absent")
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: freePort(t), TLS: p.clientTLS()}},
		Run:   newRun(t),
		quic:  fastQUIC(),
	})
	m.Append(1, &wire.Mkdir{Path: "a", Mode: 0o755})
	err := m.Drain(500 * time.Millisecond)
	if !errors.Is(err, ErrDrainTimeout) {
		t.Fatalf("Drain = %v, want ErrDrainTimeout", err)
	}
	if !strings.Contains(err.Error(), "lacks 1..1") {
		t.Fatalf("error does not say what is lacking: %v", err)
	}
	select {
	case <-m.done:
		t.Fatal("Run returned before its context was cancelled")
	default:
	}
}

// With the backlog overflowing while a slave that never connected is
// absent, and no Tree to resynchronise it, the slave needs a resync: the
// master says so once (log, Status, FrameError to the slave) when it comes,
// and never sends it a gap.
func TestNeedsResyncAfterBacklogOverflow(t *testing.T) {
	p := newPKI(t, "resync")
	addr := freePort(t)
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers:   []Peer{{Addr: addr, TLS: p.clientTLS()}},
		Run:     run,
		Backlog: 4 << 10,
		quic:    fastQUIC(),
	})
	g := newOpGen(4)
	want := map[uint64][]byte{}
	appendOps(m.Master, g, 200, 0, 0, want)
	// A slave the master has not heard from yet may hold any seq: it is
	// judged when it connects.
	if st := m.status(0); st.State != "connecting" {
		t.Fatalf("status %+v, want connecting", st)
	}
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{Listen: addr, TLS: p.serverTLS(), Handler: h})
	eventually(t, 60*time.Second, "the slave to hear it needs a resync", func() bool {
		return strings.Contains(srv.log.String(), "the master says this slave needs a resync: slave "+addr+" needs resync at seq 0: it is at op 0 and the master holds ops from")
	})
	st := m.status(0)
	if st.State != "needs-resync" || !strings.Contains(st.LastError, "needs resync at seq 0: it is at op 0 and the master holds ops from") {
		t.Fatalf("status %+v", st)
	}
	if n := m.log.count("needs resync at seq"); n != 1 {
		t.Fatalf("needs-resync logged %d times, want once:\n%s", n, m.log)
	}
	if recs, _, errs := h.snapshot(); len(recs) != 0 || len(errs) != 0 {
		t.Fatalf("the slave applied %d ops (errors %v), want none", len(recs), errs)
	}
	// The master stops dialing it: Drain does not wait for it.
	if err := m.Drain(10 * time.Second); err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

// A slave that was streaming, disconnects, and misses ops the master had to
// drop from its backlog needs a resync when it comes back.
func TestNeedsResyncOnReconnect(t *testing.T) {
	p := newPKI(t, "resync2")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	addr := srv.Addr().String()
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers:   []Peer{{Addr: addr, TLS: p.clientTLS()}},
		Run:     run,
		Backlog: 64 << 10,
		quic:    fastQUIC(),
	})
	g := newOpGen(5)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 49, 0, 0, want)
	waitApplied(t, h, 50, 30*time.Second)
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the master to notice", func() bool { return m.status(0).State != "streaming" })
	appendOps(m.Master, g, 2000, 0, 0, want) // far more than 64 KiB
	srv2 := startServer(t, SlaveConfig{Listen: addr, TLS: p.serverTLS(), Handler: h})
	eventually(t, 60*time.Second, "needs-resync", func() bool { return m.status(0).State == "needs-resync" })
	if !strings.Contains(m.log.String(), "needs resync: it is at seq 50, the master holds") || m.log.count("needs resync") != 1 {
		t.Fatalf("master log lacks the needs-resync line:\n%s", m.log)
	}
	eventually(t, 60*time.Second, "the slave to hear it needs a resync", func() bool {
		return strings.Contains(srv2.log.String(), "needs a resync")
	})
	checkRecords(t, h, want, 50)
}

// One master feeds two slaves; an absent third never holds writers back.
func TestFanOut(t *testing.T) {
	p := newPKI(t, "fanout")
	h1, h2 := newFakeHandler(), newFakeHandler()
	s1 := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h1})
	s2 := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h2})
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers: []Peer{
			{Addr: s1.Addr().String(), TLS: p.clientTLS()},
			{Addr: s2.Addr().String(), TLS: p.clientTLS()},
			{Addr: freePort(t), TLS: p.clientTLS()},
		},
		Run: run, Mode: wire.ModeFsync, SyncTimeout: time.Hour,
		quic: fastQUIC(),
	})
	eventually(t, 30*time.Second, "both slaves streaming", func() bool {
		st := m.Status()
		return st[0].State == "streaming" && st[1].State == "streaming"
	})
	g := newOpGen(15)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 500, 10, 128<<10, want)
	g.seq++
	want[g.seq] = wire.AppendOp(nil, g.seq, &wire.Sync{})
	m.Append(g.seq, &wire.Sync{})
	m.Wait(g.seq)
	for i, h := range []*fakeHandler{h1, h2} {
		if _, durable, _ := h.snapshot(); durable != g.seq {
			t.Fatalf("slave %d durable at %d after Wait(%d)", i, durable, g.seq)
		}
		checkRecords(t, h, want, g.seq)
	}
	eventually(t, 30*time.Second, "a failed dial to the absent slave", func() bool { return m.status(2).LastError != "" })
	st := m.Status()
	if st[2].State != "connecting" || st[2].LastError == "" {
		t.Fatalf("absent slave: %+v", st[2])
	}
	// The absent slave holds the backlog: nothing was dropped for it.
	m.mu.Lock()
	first := m.bl.first()
	m.mu.Unlock()
	if first != 1 {
		t.Fatalf("backlog dropped ops an absent slave needs: holds from %d", first)
	}
}

// With no slave at all, Append keeps nothing and Wait and Drain return.
func TestNoPeers(t *testing.T) {
	m := startMaster(t, MasterConfig{Run: newRun(t), Mode: wire.ModeSync})
	for seq := uint64(1); seq <= 100; seq++ {
		m.Append(seq, &wire.Mkdir{Path: "a", Mode: 0o755})
		m.Wait(seq)
	}
	m.mu.Lock()
	n := len(m.bl.entries)
	m.mu.Unlock()
	if n != 0 {
		t.Fatalf("backlog holds %d ops with no slave", n)
	}
	if err := m.Drain(time.Second); err != nil {
		t.Fatal(err)
	}
}
