package quictransport

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tdfs/tdfs/journal"
	"github.com/tdfs/tdfs/wire"
)

// Seqs continue across a clean restart of the master: run 2 numbers from
// run 1's head on, with run 1's journal. A slave durable at run 1's head
// resumes there; one that left early resumes from the journal, both run
// 1's ops and those of run 2 that memory no longer holds, and gets exactly
// what it lacks, in order. No resync pass for either.
func TestSeqsContinueAcrossRuns(t *testing.T) {
	const (
		k    = 60  // slave B leaves after op k of run 1
		n    = 200 // run 1 numbers ops 1..n
		more = 150 // run 2 numbers ops n+1..n+more
	)
	p := newPKI(t, "runs")
	dir := t.TempDir()
	jopts := journal.Options{SegmentSize: 4 << 10}
	hA, hB := newFakeHandler(), newFakeHandler()
	sA := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: hA, SyncInterval: 20 * time.Millisecond})
	sB := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: hB, SyncInterval: 20 * time.Millisecond})
	addrB := sB.Addr().String()
	peers := []Peer{{Addr: sA.Addr().String(), TLS: p.clientTLS()}, {Addr: addrB, TLS: p.clientTLS()}}
	r1, r2 := newRun(t), newRun(t)
	want := map[uint64][]byte{}
	g := newOpGen(51)

	// Run 1. A small memory backlog: what B misses is on disk only.
	j1 := openJournal(t, dir, jopts)
	m1 := startMaster(t, MasterConfig{Peers: peers, Run: r1, Journal: j1, Backlog: 2 << 10, quic: fastQUIC()})
	startRun(m1.Master, g, r1, want)
	appendOps(m1.Master, g, k-1, 0, 0, want)
	waitDurable(t, hB, k, 30*time.Second)
	eventually(t, 30*time.Second, "the master to see B durable", func() bool { return m1.status(1).Durable == k })
	if err := sB.stop(t); err != nil {
		t.Fatal(err)
	}
	appendOps(m1.Master, g, n-k, 0, 0, want)
	waitDurable(t, hA, n, 30*time.Second)
	eventually(t, 30*time.Second, "the master to see A durable", func() bool { return m1.status(0).Durable == n })
	m1.stop(t)
	if err := j1.Close(); err != nil {
		t.Fatal(err)
	}

	// Run 2, as tdfs-master starts it again: the same journal, its head
	// and run 1's record.
	j2 := openJournal(t, dir, jopts)
	if j2.Last() != n || j2.First() == 0 || j2.First() > k+1 {
		t.Fatalf("journal holds %d..%d after run 1, want ..%d from %d or lower", j2.First(), j2.Last(), n, k+1)
	}
	ft := newFakeTree(1, 0)
	m2 := startMasterTree(t, MasterConfig{Peers: peers, Run: r2, Head: n, Runs: []RunRecord{{Run: r1, Start: 1, End: n, Clean: true}},
		Journal: j2, Backlog: 2 << 10, quic: fastQUIC()}, ft)
	startRun(m2.Master, g, r2, want)
	if g.seq != n+1 {
		t.Fatalf("test bug: run 2 starts at %d", g.seq)
	}
	appendOps(m2.Master, g, more-1, 0, 0, want)
	waitApplied(t, hA, g.seq, 60*time.Second)
	if first := m2.memFirst(); first <= n+1 {
		t.Fatalf("memory still holds op %d: the test would not read run 2's ops from the journal", first)
	}
	startServer(t, SlaveConfig{Listen: addrB, TLS: p.serverTLS(), Handler: hB})
	waitApplied(t, hB, g.seq, 60*time.Second)

	checkRecords(t, hA, want, g.seq)
	checkRecords(t, hB, want, g.seq)
	if ps := ft.passes(); len(ps) != 0 {
		t.Fatalf("resync passes %+v, want none", ps)
	}
	for name, h := range map[string]*fakeHandler{"A": hA, "B": hB} {
		if st := h.state(); st.Run != r2 || st.Resyncing {
			t.Fatalf("slave %s: %+v", name, st)
		}
	}
	l := m2.log.String()
	for _, s := range []string{"from_seq=201 ", "from_seq=61 "} {
		if !strings.Contains(l, "slave connected: resuming") || !strings.Contains(l, s) {
			t.Fatalf("master log lacks a resume %s:\n%s", s, l)
		}
	}
	for _, line := range strings.Split(l, "\n") {
		if strings.Contains(line, "from_seq=61 ") && !strings.Contains(line, "from=journal") {
			t.Fatalf("B did not resume from the journal: %s", line)
		}
	}
	eventually(t, 30*time.Second, "both streaming", func() bool {
		st := m2.Status()
		return st[0].State == "streaming" && st[1].State == "streaming"
	})
}

// A slave away while the journal drops what it lacks (MaxBytes) is
// rebased by a pass when it comes back: no hang, no gap, and ops after
// the pass's ResyncBegin in order.
func TestJournalDroppedRebases(t *testing.T) {
	p := newPKI(t, "dropped")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: 20 * time.Millisecond})
	addr := srv.Addr().String()
	// 30 ops of the generator's mix fit (about 20 KiB); 600 do not.
	j := openJournal(t, t.TempDir(), journal.Options{MaxBytes: 64 << 10, SegmentSize: 8 << 10})
	ft := newFakeTree(1, 0)
	run := newRun(t)
	m := startMasterTree(t, MasterConfig{Peers: []Peer{{Addr: addr, TLS: p.clientTLS()}}, Run: run, Journal: j, Backlog: 8 << 10, quic: fastQUIC()}, ft)
	g := newOpGen(52)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 29, 0, 0, want)
	waitDurable(t, h, 30, 30*time.Second)
	eventually(t, 30*time.Second, "the master to see it durable", func() bool { return m.status(0).Durable == 30 })
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the master to notice", func() bool { return m.status(0).State != "streaming" })
	appendOps(m.Master, g, 600, 0, 0, want) // far beyond the memory backlog and the journal's bound
	if jf, mf := j.First(), m.memFirst(); jf <= 31 || mf <= 31 {
		t.Fatalf("op 31 still held (journal from %d, memory from %d): the test tests nothing", jf, mf)
	}
	if !strings.Contains(m.log.String(), "the master no longer holds the ops it lacks") {
		t.Fatalf("the master did not notice the slave needs a resync:\n%s", m.log)
	}
	startServer(t, SlaveConfig{Listen: addr, TLS: p.serverTLS(), Handler: h, SyncInterval: 20 * time.Millisecond})
	ft.waitDone(t, 1, 60*time.Second)
	appendOps(m.Master, g, 20, 0, 0, want)
	waitApplied(t, h, g.seq, 60*time.Second)
	if ps := ft.passes(); len(ps) != 1 || !ps[0].Rebase {
		t.Fatalf("passes %+v, want one rebase pass", ps)
	}
	items := h.items()
	if b, ok := items[0].item.(*wire.ResyncBegin); !ok || !b.Rebase || items[0].at < 30+600 {
		t.Fatalf("first item %#v at %d", items[0].item, items[0].at)
	}
	checkRange(t, h, want, 1, 30)
	checkRange(t, h, want, items[0].at+1, g.seq)
	eventually(t, 30*time.Second, "streaming, durable at the head", func() bool {
		st := m.status(0)
		return st.State == "streaming" && st.Durable == g.seq
	})
}

// Append leaves the journal to the journaler, but never drops from memory
// an op the journal lacks: when those alone overflow the backlog (nobody
// flushes: no Run here), Append journals them itself. Every op reaches the
// journal, in order, and memory stays within the backlog plus one op.
func TestAppendJournalsWhatOverflows(t *testing.T) {
	const n = 400
	p := newPKI(t, "overflow")
	j := openJournal(t, t.TempDir(), journal.Options{SegmentSize: 16 << 10})
	m, err := NewMaster(MasterConfig{Peers: []Peer{{Addr: "127.0.0.1:9", TLS: p.clientTLS()}}, Run: newRun(t),
		Epoch: testEpoch, Journal: j, Backlog: 4 << 10, quic: fastQUIC()})
	if err != nil {
		t.Fatal(err)
	}
	g := newOpGen(7)
	want := map[uint64][]byte{}
	var maxHeld, largest int64
	for range n {
		seq, op := g.next(10, 3<<10)
		want[seq] = wire.AppendOp(nil, seq, op)
		largest = max(largest, int64(len(want[seq])))
		m.Append(seq, op)
		m.mu.Lock()
		maxHeld = max(maxHeld, m.bl.bytes)
		m.mu.Unlock()
	}
	if maxHeld > 4<<10+largest {
		t.Fatalf("memory held %d bytes, over the backlog (4 KiB) plus the largest op (%d)", maxHeld, largest)
	}
	if j.Last() == 0 {
		t.Fatal("Append never journaled what overflowed the backlog")
	}
	m.jn.flush()
	if j.First() != 1 || j.Last() != n {
		t.Fatalf("journal holds %d..%d, want 1..%d", j.First(), j.Last(), n)
	}
	r, err := j.Reader(1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for seq := uint64(1); seq <= n; seq++ {
		got, body, err := r.Next()
		if err != nil || got != seq || !bytes.Equal(body, want[seq]) {
			t.Fatalf("journal record %d: got seq %d, %d bytes, err %v", seq, got, len(body), err)
		}
	}
}
