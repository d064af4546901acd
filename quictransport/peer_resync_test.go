package quictransport

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// A rebase pass while ops keep being numbered: the slave handles every
// item exactly at its position (after op T, before op T+1) and every op
// after the pass's ResyncBegin in order; the master never has more than
// ResyncWindow bytes of items beyond what the slave applied (Ack.Items);
// Status goes resyncing -> streaming.
func TestRebasePassInterleavesWithOps(t *testing.T) {
	const (
		window = 16 << 10
		dirs   = 60 // of about 1 KiB each: almost 4 windows
	)
	p := newPKI(t, "rebase")
	h := newStateHandler(SlaveState{Epoch: testEpoch, Resyncing: true}) // its tree is of unknown state
	dirGate := make(chan struct{})
	var once sync.Once
	releaseDirs := func() { once.Do(func() { close(dirGate) }) }
	t.Cleanup(releaseDirs)
	h.dirGate = dirGate
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: 20 * time.Millisecond})

	run := newRun(t)
	a := &appender{g: newOpGen(35), want: map[uint64][]byte{}, large: 10, big: 24 << 10}
	ft := newFakeTree(dirs, 900)
	ft.app, ft.h, ft.gate = a, h, make(chan struct{})
	// No op until the appender knows the master.
	a.mu.Lock()
	m := startMasterTree(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
		Run: run, ResyncWindow: window, DataThreshold: 8 << 10}, ft)
	a.m = m.Master
	startRun(m.Master, a.g, run, a.want)
	a.mu.Unlock()
	for range 50 {
		a.add()
	}

	eventually(t, 30*time.Second, "resyncing", func() bool { return m.status(0).State == "resyncing" })
	// Ops keep coming while the pass runs (and the tree adds one before
	// each of its dirs, so items and ops interleave for sure).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 1000 {
			select {
			case <-stop:
				return
			default:
			}
			a.add()
		}
	})
	stopAppending := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopAppending()
	close(ft.gate)

	// The handler holds the first ResyncDir: the tree must stall once the
	// window is full, with no more than a window of items unacknowledged.
	eventually(t, 30*time.Second, "the tree to stall on a full window", func() bool {
		ft.mu.Lock()
		emitted := ft.emitted
		ft.mu.Unlock()
		return emitted > window/2 && ft.waiting.Load()
	})
	m.mu.Lock()
	reserved := m.peers[0].itemsReserved
	m.mu.Unlock()
	if reserved > window {
		t.Errorf("%d bytes of items reserved, beyond the window of %d", reserved, window)
	}
	releaseDirs()

	ft.waitDone(t, 1, 60*time.Second)
	stopAppending()
	head := a.head()
	waitApplied(t, h, head, 60*time.Second)
	h.waitFor(t, 30*time.Second, "the end of the pass", func(h *fakeHandler) bool { return !h.st.Resyncing })
	eventually(t, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })

	h.checkClean(t) // dense ops, and every item handled after op at, before op at+1
	items := h.items()
	ft.mu.Lock()
	positions, maxAhead := append([]uint64(nil), ft.positions...), ft.maxAhead
	ft.mu.Unlock()
	if len(items) != dirs+2 || len(positions) != dirs+2 {
		t.Fatalf("%d items handled, %d emitted, want %d", len(items), len(positions), dirs+2)
	}
	for i, it := range items {
		if it.at != positions[i] {
			t.Fatalf("item %d (%T) handled at position %d, emitted at %d", i, it.item, it.at, positions[i])
		}
		if i > 1 && i <= dirs && it.at <= items[i-1].at {
			t.Fatalf("dir items at %d then %d: no op between them", items[i-1].at, it.at)
		}
	}
	if b, ok := items[0].item.(*wire.ResyncBegin); !ok || !b.Rebase {
		t.Fatalf("first item %#v", items[0].item)
	}
	if _, ok := items[dirs+1].item.(*wire.ResyncEnd); !ok {
		t.Fatalf("last item %#v", items[dirs+1].item)
	}
	// Ops before the ResyncBegin are not sent at all; every one after is.
	checkRange(t, h, a.wanted(), items[0].at+1, head)
	if recs, _, _ := h.snapshot(); recs[0].seq != items[0].at+1 {
		t.Fatalf("first op applied %d, the pass began after %d", recs[0].seq, items[0].at)
	}
	if maxAhead > window {
		t.Fatalf("the tree got %d bytes of items ahead of the slave, beyond the window of %d", maxAhead, window)
	}
	eventually(t, 30*time.Second, "every item acknowledged", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		q := m.peers[0]
		return q.itemsAcked == dirs+2 && q.itemsSent == dirs+2 && q.itemsReserved == 0
	})
	eventually(t, 30*time.Second, "the master to see the slave durable at the head", func() bool { return m.status(0).Durable == head })
	if !strings.Contains(m.log.String(), "resync pass done") {
		t.Fatalf("master log:\n%s", m.log)
	}
}

// In fsync mode writers do not wait for a slave being resynchronised
// (its tree is not the master's yet); once its pass is over and it is
// durable, they wait for it again.
func TestResyncingSlaveDoesNotHoldWriters(t *testing.T) {
	p := newPKI(t, "holdback")
	h := newStateHandler(SlaveState{Epoch: testEpoch, Resyncing: true})
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	ft := newFakeTree(1, 0)
	ft.gate = make(chan struct{})
	run := newRun(t)
	m := startMasterTree(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: run,
		Mode: wire.ModeFsync, SyncTimeout: time.Hour}, ft)
	g := newOpGen(40)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 10, 0, 0, want)
	eventually(t, 30*time.Second, "resyncing", func() bool { return m.status(0).State == "resyncing" })
	g.seq++
	m.Append(g.seq, &wire.Sync{})
	waited := make(chan struct{})
	go func() { m.Wait(g.seq); close(waited) }()
	select {
	case <-waited:
	case <-time.After(30 * time.Second):
		t.Fatal("Wait holds writers back for a slave being resynchronised")
	}
	close(ft.gate)
	ft.waitDone(t, 1, 60*time.Second)
	h.waitFor(t, 30*time.Second, "the end of the pass", func(h *fakeHandler) bool { return !h.st.Resyncing })
	eventually(t, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })
	for range 3 {
		appendOps(m.Master, g, 5, 0, 0, want)
		g.seq++
		m.Append(g.seq, &wire.Sync{})
		m.Wait(g.seq)
		if _, durable, _ := h.snapshot(); durable < g.seq {
			t.Fatalf("Wait(%d) returned with the slave durable at %d (status %+v)", g.seq, durable, m.status(0))
		}
	}
}

// Verify runs a verify pass on every streaming slave and returns what
// each reported; a slave that is not connected gets an error at once.
// Verify with repair runs a pass that is neither a rebase nor a verify.
func TestVerify(t *testing.T) {
	p := newPKI(t, "verify")
	h := newFakeHandler()
	diff := wire.Difference{Path: "d1/l", What: "mode 0644 != 0600"}
	h.diffs = []wire.Difference{diff}
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	absent := freePort(t)
	ft := newFakeTree(3, 10)
	ft.gate = make(chan struct{})
	run := newRun(t)
	var repMu sync.Mutex
	var reports []PassReport
	onProgress := func(r PassReport) {
		repMu.Lock()
		reports = append(reports, r)
		repMu.Unlock()
	}
	m := startMasterTree(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}, {Addr: absent, TLS: p.clientTLS()}},
		Run: run, quic: fastQUIC(), OnProgress: onProgress}, ft)
	g := newOpGen(36)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 20, 5, 96<<10, want)
	eventually(t, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got := make(chan []VerifyResult, 1)
	go func() { got <- m.Verify(ctx, false) }()
	eventually(t, 30*time.Second, "verifying", func() bool { return m.status(0).State == "verifying" })
	appendOps(m.Master, g, 20, 5, 96<<10, want) // ops flow during the pass
	close(ft.gate)
	var res []VerifyResult
	select {
	case res = <-got:
	case <-time.After(60 * time.Second):
		t.Fatal("Verify did not return")
	}
	if len(res) != 2 || res[0].Addr != srv.Addr().String() || res[1].Addr != absent {
		t.Fatalf("results %+v", res)
	}
	if res[0].Err != nil || len(res[0].Result.Diffs) != 3 || res[0].Result.Diffs[0] != diff || res[0].Result.Differences != 3 {
		t.Fatalf("streaming slave: %+v", res[0])
	}
	if res[1].Err == nil || !strings.Contains(res[1].Err.Error(), "not connected") {
		t.Fatalf("absent slave: %+v", res[1])
	}
	if ps := ft.passes(); len(ps) != 1 || !ps[0].Verify || ps[0].Rebase {
		t.Fatalf("passes %+v", ps)
	}

	res = m.Verify(ctx, true)
	if res[0].Err != nil || len(res[0].Result.Diffs) != 0 || res[1].Err == nil {
		t.Fatalf("repair: %+v", res)
	}
	if ps := ft.passes(); len(ps) != 2 || ps[1].Verify || ps[1].Rebase || ps[1].Pass == ps[0].Pass {
		t.Fatalf("passes %+v", ps)
	}
	appendOps(m.Master, g, 20, 5, 96<<10, want)
	waitApplied(t, h, g.seq, 60*time.Second)
	checkRecords(t, h, want, g.seq) // no rebase: every op, in order
	h.mu.Lock()
	passes, resyncing := h.passes, h.st.Resyncing
	h.mu.Unlock()
	if len(passes) != 2 || !passes[0].Verify || passes[1].Verify || passes[0].Rebase || passes[1].Rebase || resyncing {
		t.Fatalf("the slave saw passes %+v (resyncing %v)", passes, resyncing)
	}
	if st := m.status(0); st.State != "streaming" {
		t.Fatalf("state %q after the passes", st.State)
	}
	// Each pass ended with a Done report naming it (progress bars clear).
	repMu.Lock()
	var done []string
	for _, r := range reports {
		if r.Done {
			if r.Slave != srv.Addr().String() || r.Err != nil || r.Started.IsZero() {
				t.Errorf("done report %+v", r)
			}
			done = append(done, r.Kind)
		}
	}
	repMu.Unlock()
	if !slices.Equal(done, []string{"verify", "repair"}) {
		t.Errorf("done reports of passes %q, want verify then repair", done)
	}

	// A master with no tree cannot verify.
	bare := startMaster(t, MasterConfig{Peers: []Peer{{Addr: absent, TLS: p.clientTLS()}}, Run: newRun(t), quic: fastQUIC()})
	if res := bare.Verify(ctx, false); len(res) != 1 || res[0].Err == nil || !strings.Contains(res[0].Err.Error(), "no tree") {
		t.Fatalf("Verify without a tree: %+v", res)
	}
}

// CheckAll compares every slave once after it connects (the previous run
// crashed): not again after a reconnect, and without moving its op stream.
func TestCheckAllOncePerSlave(t *testing.T) {
	p := newPKI(t, "check")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	addr := srv.Addr().String()
	ft := newFakeTree(2, 0)
	ft.gate = make(chan struct{})
	run := newRun(t)
	m := startMasterTree(t, MasterConfig{Peers: []Peer{{Addr: addr, TLS: p.clientTLS()}}, Run: run, CheckAll: true, quic: fastQUIC()}, ft)
	g := newOpGen(37)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 30, 5, 96<<10, want)
	eventually(t, 30*time.Second, "checking", func() bool { return m.status(0).State == "checking" })
	close(ft.gate)
	ft.waitDone(t, 1, 60*time.Second)
	waitApplied(t, h, g.seq, 60*time.Second)
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	appendOps(m.Master, g, 10, 0, 0, want)
	startServer(t, SlaveConfig{Listen: addr, TLS: p.serverTLS(), Handler: h})
	waitApplied(t, h, g.seq, 60*time.Second)
	checkRecords(t, h, want, g.seq)
	if ps := ft.passes(); len(ps) != 1 || ps[0].Rebase || ps[0].Verify {
		t.Fatalf("passes %+v, want one check", ps)
	}
	eventually(t, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })
}

// A pass the Tree fails (an I/O error in the backing dir, say) is not the
// end of the slave: it is retried, and the slave gets resynchronised.
func TestFailedPassIsRetried(t *testing.T) {
	t.Parallel() // mostly waiting: let it overlap the other bug check
	p := newPKI(t, "failpass")
	h := newStateHandler(SlaveState{Epoch: testEpoch, Resyncing: true})
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	ft := newFakeTree(1, 0)
	ft.fail.Store(1)
	run := newRun(t)
	m := startMasterTree(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: run, quic: fastQUIC()}, ft)
	g := newOpGen(38)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 10, 0, 0, want)
	eventually(t, 30*time.Second, "the first pass to fail", func() bool {
		return strings.Contains(m.log.String(), "resync pass failed")
	})
	awaitChange(10*time.Second, func() (bool, <-chan struct{}) {
		ft.mu.Lock()
		defer ft.mu.Unlock()
		return len(ft.calls) >= 2, ft.changed // a pass's start is a change
	})
	if n := len(ft.passes()); n < 2 {
		t.Fatalf("BUG: after a failed pass no other pass ran in 10 s (%d passes), status %+v: runPasses returns on the "+
			"first error and the connection stays up, so a rebasing slave waits for its ResyncBegin (waitBegin) until it "+
			"happens to reconnect, and later Verify calls on that connection never start", n, m.status(0))
	}
	ft.waitDone(t, 1, 60*time.Second)
	waitApplied(t, h, g.seq, 60*time.Second)
}

// A slave that falls behind what the master still holds while its rebase
// pass runs (it is slow, the master has no journal and a small backlog)
// is rebased again and catches up: the running pass, whose later items
// can never be sent (the ops before them are gone), must not hold it.
func TestLagBeyondBacklogDuringRebasePass(t *testing.T) {
	t.Parallel() // mostly waiting: let it overlap the other bug check
	p := newPKI(t, "lagpass")
	h := newStateHandler(SlaveState{Epoch: testEpoch, Resyncing: true})
	applyGate := make(chan struct{})
	release := sync.OnceFunc(func() { close(applyGate) })
	t.Cleanup(release)
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, MaxPending: minPending})
	ft := newFakeTree(2, 0)
	ft.gate = make(chan struct{})
	run := newRun(t)
	m := startMasterTree(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: run,
		Backlog: 4 << 10, quic: fastQUIC()}, ft)
	g := newOpGen(39)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 10, 0, 0, want)
	h.waitFor(t, 30*time.Second, "the pass's ResyncBegin", func(h *fakeHandler) bool { return len(h.passes) == 1 })
	h.setGates(applyGate, nil)
	// Far more than the slave may have in flight (MaxPending), while it
	// applies nothing: what it has not been sent leaves the backlog.
	data := make([]byte, 256<<10)
	for range 16 {
		g.seq++
		op := &wire.Write{Handle: 1, Data: data}
		want[g.seq] = wire.AppendOp(nil, g.seq, op)
		m.Append(g.seq, op)
	}
	close(ft.gate)
	release()
	appendOps(m.Master, g, 10, 0, 0, want)
	awaitChange(10*time.Second, func() (bool, <-chan struct{}) {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.st.Applied >= g.seq && !h.st.Resyncing, h.changed
	})
	h.mu.Lock()
	st := h.st
	h.mu.Unlock()
	if st.Applied < g.seq || st.Resyncing {
		m.mu.Lock()
		q := m.peers[0]
		waitBegin, inPass := q.waitBegin, q.pass != nil
		m.mu.Unlock()
		t.Fatalf("BUG: the slave is stuck at %+v (head %d; master: waitBegin %v, a pass running %v, %d passes): "+
			"when the sender finds the next op of a rebasing slave gone (peer_journal.go lostLocked) while its pass "+
			"runs, it waits for a new ResyncBegin, but the running pass can send no more items and never ends, "+
			"so runPasses never starts the new one", st, g.seq, waitBegin, inPass, len(ft.passes()))
	}
	h.checkClean(t)
}

// The bound on replies queued for a pass counts what is queued: replies
// the Tree has taken no longer count.
func TestPassReplyBoundCountsQueuedBytes(t *testing.T) {
	ps := newPass(1, wire.PassOptions{Pass: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const size = maxReplyBytes / 3 // sizes as the ack reader measures frames; nothing this big is allocated
	for i := range 3 {
		if err := ps.push(&wire.ResyncDirDone{Pass: 1, DirID: uint64(i)}, size); err != nil {
			t.Fatal(err)
		}
	}
	go ps.forward(ctx)
	select {
	case <-ps.replies: // the Tree takes one: at most two are queued now
	case <-time.After(30 * time.Second):
		t.Fatal("forward delivered nothing")
	}
	if err := ps.push(&wire.ResyncDirDone{Pass: 1, DirID: 3}, size); err != nil {
		t.Fatalf("BUG: a reply refused with at most 3 of 4 replies of %d bytes queued (bound %d): pass.forward subtracts "+
			"1 per reply taken instead of its size, so a long pass whose queue never empties trips the bound: %v", size, maxReplyBytes, err)
	}
}
