package quictransport

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/tdfs/tdfs/journal"
	"github.com/tdfs/tdfs/wire"
)

// Where a slave resumes, decided from its HelloAck and what the master
// holds (Master.rebaseReasonLocked): every reason to rebase, and the
// cases that must resume.
func TestRebaseReason(t *testing.T) {
	r1, r2, r3, rx := newRun(t), newRun(t), newRun(t), newRun(t)
	other := newEpoch(t)
	// The master is run r2 of testEpoch; run r1 numbered 1..20 and ended
	// cleanly, unless a case says otherwise.
	clean := []RunRecord{{Run: r1, Start: 1, End: 20, Clean: true}}
	for _, tc := range []struct {
		name    string
		head    uint64
		runs    []RunRecord
		journal [2]uint64 // ops first..last in the journal, if any
		appends uint64    // ops this run appended (head+1...)
		ack     wire.HelloAck
		why     string // "" resume
	}{
		{name: "in sync with the previous clean run", head: 20, runs: clean,
			ack: wire.HelloAck{Epoch: testEpoch, Run: r1, Applied: 20, Durable: 20}},
		{name: "a slave of this run that reconnects", head: 20, runs: clean, appends: 10,
			ack: wire.HelloAck{Epoch: testEpoch, Run: r2, Applied: 25, Durable: 22}},
		{name: "a replica in sync at 0 of a new epoch", head: 0,
			ack: wire.HelloAck{Epoch: testEpoch}},
		{name: "behind, the journal covers it", head: 20, runs: clean, journal: [2]uint64{5, 20},
			ack: wire.HelloAck{Epoch: testEpoch, Run: r1, Applied: 10, Durable: 10}},
		{name: "behind, the journal holds the rest of memory", head: 20, runs: clean, journal: [2]uint64{5, 30}, appends: 10,
			ack: wire.HelloAck{Epoch: testEpoch, Run: r1, Applied: 4, Durable: 4}},
		{name: "exactly what a crashed run journaled", head: 15, runs: []RunRecord{{Run: r1, Start: 1, End: 15}},
			ack: wire.HelloAck{Epoch: testEpoch, Run: r1, Applied: 15, Durable: 15}},

		{name: "another epoch", head: 20, runs: clean,
			ack: wire.HelloAck{Epoch: other, Run: r1, Applied: 20, Durable: 20}, why: "it follows another master epoch"},
		{name: "resyncing", head: 20, runs: clean,
			ack: wire.HelloAck{Epoch: testEpoch, Run: r1, Applied: 20, Durable: 20, Resyncing: true}, why: "its tree is of unknown state"},
		{name: "applied beyond the head (lost tail)", head: 15, runs: []RunRecord{{Run: r1, Start: 1, End: 15}},
			ack: wire.HelloAck{Epoch: testEpoch, Run: r1, Applied: 20, Durable: 18}, why: "it applied op 20, beyond the last this master numbered (15)"},
		{name: "ops of a run that crashed before journaling them", head: 40,
			runs: []RunRecord{{Run: r1, Start: 1, End: 15}, {Run: r3, Start: 16, End: 40, Clean: true}},
			ack:  wire.HelloAck{Epoch: testEpoch, Run: r1, Applied: 20, Durable: 20}, why: "it holds ops 16..20 of a master run that crashed before journaling them"},
		{name: "a run this master does not know", head: 20, runs: clean,
			ack: wire.HelloAck{Epoch: testEpoch, Run: rx, Applied: 20, Durable: 20}, why: "its last master run is unknown to this master"},
		{name: "behind, no journal", head: 20, runs: clean,
			ack: wire.HelloAck{Epoch: testEpoch, Run: r1, Applied: 10, Durable: 10}, why: "it is at op 10 and the master holds ops from 21 on"},
		{name: "behind the journal", head: 20, runs: clean, journal: [2]uint64{12, 20},
			ack: wire.HelloAck{Epoch: testEpoch, Run: r1, Applied: 10, Durable: 10}, why: "it is at op 10 and the master holds ops from 12 on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One slave, never dialed (Run is not called): a slave not heard
			// from holds every op in memory.
			cfg := MasterConfig{Peers: []Peer{{Addr: "127.0.0.1:1", TLS: &tls.Config{}}},
				Epoch: testEpoch, Run: r2, Head: tc.head, Runs: tc.runs}
			if tc.journal[0] != 0 {
				j := openJournal(t, t.TempDir(), journal.Options{})
				for seq := tc.journal[0]; seq <= tc.journal[1]; seq++ {
					if err := j.Append(seq, wire.AppendOp(nil, seq, &wire.Sync{})); err != nil {
						t.Fatal(err)
					}
				}
				cfg.Journal = j
				if tc.appends > 0 {
					// The journal holds this run's ops too: Append must
					// not find it ahead.
					cfg.Head = tc.journal[1] - tc.appends
				}
			}
			m, err := NewMaster(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for seq := m.cfg.Head + 1; seq <= m.cfg.Head+tc.appends; seq++ {
				if tc.journal[0] != 0 {
					// Already journaled above: keep it in memory only.
					m.mu.Lock()
					m.bl.push(&entry{seq: seq, size: 1, body: []byte{0}})
					m.mu.Unlock()
					continue
				}
				m.Append(seq, &wire.Mkdir{Path: "d", Mode: 0o755})
			}
			m.mu.Lock()
			why := m.rebaseReasonLocked(tc.ack)
			m.mu.Unlock()
			switch {
			case tc.why == "" && why != "":
				t.Fatalf("rebase (%s), want resume", why)
			case tc.why != "" && !strings.Contains(why, tc.why):
				t.Fatalf("reason %q, want %q", why, tc.why)
			}
		})
	}
}

// A slave that applied ops the master lost in a crash (its journal's
// tail, or a whole crashed run's) is rebased by a pass, not resumed: its
// op stream restarts after the pass's ResyncBegin, at the master's head.
func TestLostTailRebases(t *testing.T) {
	r1, r2, r3 := newRun(t), newRun(t), newRun(t)
	const n = 40 // the slave applied ops 1..40 of run r1
	for _, tc := range []struct {
		name string
		head uint64
		runs []RunRecord
		run  wire.RunID
		why  string
	}{
		{"the master's head is below the slave", n - 5, []RunRecord{{Run: r1, Start: 1, End: n - 5}}, r2,
			"it applied op 40, beyond the last this master numbered (35)"},
		{"a later run numbered past it", n + 10, []RunRecord{{Run: r1, Start: 1, End: n - 5}, {Run: r2, Start: n - 4, End: n + 10, Clean: true}}, r3,
			"it holds ops 36..40 of a master run that crashed before journaling them"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPKI(t, "losttail")
			h := newStateHandler(SlaveState{Epoch: testEpoch, Run: r1, Applied: n, Durable: n})
			srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: 20 * time.Millisecond})
			ft := newFakeTree(2, 0)
			// The previous run crashed: tdfs-master asks for a check of
			// every slave, which the rebase pass stands for.
			m := startMasterTree(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
				Run: tc.run, Head: tc.head, Runs: tc.runs, CheckAll: true}, ft)
			// Judged at the handshake, before this run numbers anything.
			ft.waitDone(t, 1, 60*time.Second)
			h.waitFor(t, 30*time.Second, "the pass's end", func(h *fakeHandler) bool { return !h.st.Resyncing })
			g := newOpGen(21)
			g.seq = tc.head
			want := map[uint64][]byte{}
			startRun(m.Master, g, tc.run, want)
			appendOps(m.Master, g, 30, 5, 96<<10, want)
			waitApplied(t, h, g.seq, 60*time.Second)
			if ps := ft.passes(); len(ps) != 1 || !ps[0].Rebase || ps[0].Verify {
				t.Fatalf("passes %+v, want one rebase pass", ps)
			}
			items := h.items()
			b, ok := items[0].item.(*wire.ResyncBegin)
			if !ok || !b.Rebase || items[0].at != tc.head {
				t.Fatalf("first item %#v at %d, want a rebasing ResyncBegin at the head %d", items[0].item, items[0].at, tc.head)
			}
			checkRange(t, h, want, items[0].at+1, g.seq)
			if !strings.Contains(m.log.String(), tc.why) {
				t.Fatalf("master log lacks %q:\n%s", tc.why, m.log)
			}
			eventually(t, 30*time.Second, "streaming, durable at the head", func() bool {
				st := m.status(0)
				return st.State == "streaming" && st.Durable == g.seq
			})
			if st := h.state(); st.Resyncing || st.Run != tc.run {
				t.Fatalf("slave state %+v after the pass", st)
			}
		})
	}
}

// Without a Tree, a slave whose Handler reports its tree of unknown state
// is told it needs a resync, with the reason, and is given no op.
func TestResyncingReplicaWithoutTree(t *testing.T) {
	p := newPKI(t, "unusable")
	h := newStateHandler(SlaveState{Epoch: testEpoch, Resyncing: true})
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: newRun(t)})
	g := newOpGen(3)
	appendOps(m.Master, g, 10, 1, 1<<10, map[uint64][]byte{})
	eventually(t, 60*time.Second, "needs-resync status", func() bool {
		st := m.Status()
		return st[0].State == "needs-resync" && strings.Contains(st[0].LastError, "its tree is of unknown state")
	})
	eventually(t, 30*time.Second, "the slave to hear it", func() bool {
		return strings.Contains(srv.log.String(), "the master says this slave needs a resync") &&
			strings.Contains(srv.log.String(), "its tree is of unknown state")
	})
	if recs, _, _ := h.snapshot(); len(recs) != 0 || len(h.items()) != 0 {
		t.Fatalf("an unusable replica was given %d ops and %d items", len(recs), len(h.items()))
	}
}

// A slave rebased by a pass, then restarted, resumes where it got: it
// must not be compared all over again. The rebasing ResyncBegin came
// after the run's RunStart op, which the slave therefore never applied:
// it learns its run from ResyncBegin.Run (set by the master's sink, kept
// by the Handler).
func TestReconnectAfterRebaseResumes(t *testing.T) {
	p := newPKI(t, "rebased")
	h := newStateHandler(SlaveState{}) // a new replica
	addr := freePort(t)
	ft := newFakeTree(2, 0)
	run := newRun(t)
	m := startMasterTree(t, MasterConfig{Peers: []Peer{{Addr: addr, TLS: p.clientTLS()}}, Run: run, quic: fastQUIC()}, ft)
	g := newOpGen(23)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 20, 0, 0, want)
	srv := startServer(t, SlaveConfig{Listen: addr, TLS: p.serverTLS(), Handler: h, SyncInterval: 20 * time.Millisecond})
	ft.waitDone(t, 1, 60*time.Second)
	appendOps(m.Master, g, 10, 0, 0, want)
	waitDurable(t, h, g.seq, 60*time.Second)
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	appendOps(m.Master, g, 10, 0, 0, want)
	startServer(t, SlaveConfig{Listen: addr, TLS: p.serverTLS(), Handler: h})
	waitApplied(t, h, g.seq, 60*time.Second)
	h.checkClean(t)
	if ps := ft.passes(); len(ps) != 1 {
		t.Errorf("%d passes: a slave rebased during this run is compared again after a reconnect "+
			"(its State().Run is %x, the master's run %x: ResyncBegin.Run not set or not kept);\n%s",
			len(ps), h.state().Run, run, m.log)
	}
}
