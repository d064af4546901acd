package quictransport

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// notSynced checks that WaitSynced(seq) does not succeed within a short
// probe (ctx ends it) and that its error names why: want.
func notSynced(t *testing.T, m *testMaster, seq uint64, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := m.WaitSynced(ctx, seq)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), want) {
		t.Fatalf("WaitSynced(%d): %v; want it still waiting because %q", seq, err, want)
	}
}

// waitSynced runs WaitSynced(seq) in the background.
func waitSynced(m *testMaster, seq uint64) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- m.WaitSynced(context.Background(), seq) }()
	return ch
}

// appendSync appends a Sync op, as the mount does before the fence.
func appendSync(m *testMaster, g *opGen, want map[uint64][]byte) uint64 {
	g.seq++
	want[g.seq] = wire.AppendOp(nil, g.seq, &wire.Sync{})
	m.Append(g.seq, &wire.Sync{})
	return g.seq
}

// The fence blocks while the slave is held back (its Apply of an earlier
// op blocks), in async mode too, and returns once the slave made the Sync
// durable.
func TestWaitSyncedBlocksUntilDurable(t *testing.T) {
	p := newPKI(t, "synced")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
		Run:   run, Mode: wire.ModeAsync, SyncTimeout: time.Minute,
	})
	eventually(t, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })
	g := newOpGen(50)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 10, 10, 96<<10, want)
	release := h.blockAt(g.seq + 1)
	t.Cleanup(release)
	appendOps(m.Master, g, 5, 0, 0, want)
	seq := appendSync(m, g, want)
	h.waitFor(t, 30*time.Second, "the slave held back", func(h *fakeHandler) bool { return h.blocked })

	done := waitSynced(m, seq)
	notSynced(t, m, seq, "is durable at seq")
	select {
	case err := <-done:
		t.Fatalf("WaitSynced returned %v while the slave was held back", err)
	default:
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WaitSynced: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("WaitSynced did not return once the slave was durable (status %+v)", m.status(0))
	}
	if _, durable, _ := h.snapshot(); durable < seq {
		t.Fatalf("WaitSynced(%d) returned with the slave durable at %d", seq, durable)
	}
	checkRecords(t, h, want, seq)
	if n := m.log.count("fence"); n != 0 {
		t.Errorf("the fence logged %d lines:\n%s", n, m.log)
	}
}

// Past SyncTimeout the fence fails with ErrNotSynced, naming the slave;
// unlike Wait it marks nobody degraded, and a degraded slave still counts.
// An interrupted caller gets ctx's error.
func TestWaitSyncedTimesOut(t *testing.T) {
	p := newPKI(t, "synced-timeout")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
		Run:   run, Mode: wire.ModeFsync, SyncTimeout: 300 * time.Millisecond,
	})
	eventually(t, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })
	g := newOpGen(51)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	release := h.blockAt(g.seq + 1)
	t.Cleanup(release)
	appendOps(m.Master, g, 3, 0, 0, want)
	seq := appendSync(m, g, want)
	h.waitFor(t, 30*time.Second, "the slave held back", func(h *fakeHandler) bool { return h.blocked })

	check := func(when string) {
		t.Helper()
		err := m.WaitSynced(context.Background(), seq)
		if !errors.Is(err, ErrNotSynced) || !strings.Contains(err.Error(), srv.Addr().String()) {
			t.Fatalf("%s: WaitSynced: %v; want ErrNotSynced naming the slave", when, err)
		}
	}
	check("held back")
	if st := m.status(0); st.State != "streaming" {
		t.Fatalf("after the fence failed the slave is %q, want streaming (the fence degrades nobody)", st.State)
	}
	m.Wait(seq) // a writer's wait marks it degraded...
	if st := m.status(0); st.State != "degraded" {
		t.Fatalf("after Wait the slave is %q, want degraded", st.State)
	}
	check("degraded") // ...but the fence still counts it

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.WaitSynced(ctx, seq); !errors.Is(err, context.Canceled) || errors.Is(err, ErrNotSynced) {
		t.Fatalf("interrupted WaitSynced: %v; want context.Canceled", err)
	}

	release()
	waitDurable(t, h, seq, 30*time.Second)
	eventually(t, 30*time.Second, "the master to see the slave durable", func() bool { return m.status(0).Durable >= seq })
	if err := m.WaitSynced(context.Background(), seq); err != nil {
		t.Fatalf("WaitSynced once the slave is durable: %v", err)
	}
}

// A slave that is not connected does not count: the fence returns once
// the connected one is durable.
func TestWaitSyncedIgnoresAbsentSlaves(t *testing.T) {
	p := newPKI(t, "synced-absent")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}, {Addr: freePort(t), TLS: p.clientTLS()}},
		Run:   run, Mode: wire.ModeFsync, SyncTimeout: time.Minute,
	})
	eventually(t, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })
	g := newOpGen(52)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 5, 0, 0, want)
	seq := appendSync(m, g, want)
	select {
	case err := <-waitSynced(m, seq):
		if err != nil {
			t.Fatalf("WaitSynced: %v", err)
		}
	case <-time.After(50 * time.Second):
		t.Fatalf("WaitSynced waits for a slave that is not connected (status %+v)", m.Status())
	}
	if _, durable, _ := h.snapshot(); durable < seq {
		t.Fatalf("WaitSynced(%d) returned with the connected slave durable at %d", seq, durable)
	}
	if st := m.status(1); st.State == "streaming" {
		t.Fatalf("the absent slave is %q", st.State)
	}
}

// A slave being resynchronised is not prefix-consistent whatever it
// acknowledged: the fence waits for it until it has applied the pass's
// ResyncEnd, even after the pass is over on the master.
func TestWaitSyncedWaitsForResyncToEnd(t *testing.T) {
	p := newPKI(t, "synced-resync")
	h := newStateHandler(SlaveState{Epoch: testEpoch, Resyncing: true})
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	ft := newFakeTree(0, 0) // ResyncBegin, the gate, ResyncEnd
	ft.gate = make(chan struct{})
	run := newRun(t)
	m := startMasterTree(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: run,
		Mode: wire.ModeAsync, SyncTimeout: time.Minute}, ft)
	g := newOpGen(53)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 5, 0, 0, want)
	h.waitFor(t, 30*time.Second, "the rebasing ResyncBegin", func(h *fakeHandler) bool { return len(h.passes) == 1 })

	// The slave acknowledges the Sync as durable, but its pass runs.
	seq := appendSync(m, g, want)
	waitDurable(t, h, seq, 30*time.Second)
	eventually(t, 30*time.Second, "the master to see the slave durable", func() bool { return m.status(0).Durable >= seq })
	notSynced(t, m, seq, "being resynchronised")

	// The pass ends on the master while the slave is held back before its
	// ResyncEnd: still not synced.
	release := h.blockAt(g.seq + 1)
	t.Cleanup(release)
	appendOps(m.Master, g, 1, 0, 0, want)
	h.waitFor(t, 30*time.Second, "the slave held back", func(h *fakeHandler) bool { return h.blocked })
	close(ft.gate)
	ft.waitDone(t, 1, 30*time.Second)
	eventually(t, 30*time.Second, "the pass over on the master", func() bool { return m.status(0).State == "streaming" })
	notSynced(t, m, seq, "being resynchronised")

	done := waitSynced(m, seq)
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WaitSynced: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("WaitSynced did not return after the pass (status %+v)", m.status(0))
	}
	if st := h.state(); st.Resyncing || st.Durable < seq {
		t.Fatalf("WaitSynced returned with the slave at %+v", st)
	}
	h.checkClean(t)
}
