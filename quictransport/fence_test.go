package quictransport

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// Which masters a slave follows, by epoch (session.go fence).
func TestFenceDecisions(t *testing.T) {
	a, b, c, d := newEpoch(t), newEpoch(t), newEpoch(t), newEpoch(t)
	for _, tc := range []struct {
		name    string
		st      SlaveState
		h       wire.Hello
		refused string // "" follows
	}{
		{"new replica", SlaveState{}, wire.Hello{Epoch: a}, ""},
		{"its master", SlaveState{Epoch: a}, wire.Hello{Epoch: a}, ""},
		{"its master's successor", SlaveState{Epoch: a}, wire.Hello{Epoch: b, Lineage: []wire.Epoch{a}}, ""},
		{"a successor further down", SlaveState{Epoch: a}, wire.Hello{Epoch: c, Lineage: []wire.Epoch{b, a}}, ""},
		{"its master's predecessor", SlaveState{Epoch: b, Lineage: []wire.Epoch{a}}, wire.Hello{Epoch: a}, "split brain averted"},
		{"an older predecessor", SlaveState{Epoch: c, Lineage: []wire.Epoch{b, a}}, wire.Hello{Epoch: a}, "split brain averted"},
		{"an unrelated master", SlaveState{Epoch: a}, wire.Hello{Epoch: b}, "is unrelated"},
		{"a sibling promoted from the same master", SlaveState{Epoch: b, Lineage: []wire.Epoch{a}}, wire.Hello{Epoch: c, Lineage: []wire.Epoch{a}}, "is unrelated"},
		{"another master's successor", SlaveState{Epoch: a}, wire.Hello{Epoch: c, Lineage: []wire.Epoch{d}}, "is unrelated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := fence(tc.st, tc.h)
			switch {
			case tc.refused == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.refused != "" && (!errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), tc.refused)):
				t.Fatalf("fence = %v, want ErrFenced saying %q", err, tc.refused)
			case tc.refused != "" && codeOf(err) != wire.CodeFenced:
				t.Fatalf("code %v, want fenced", codeOf(err))
			}
		})
	}
}

// A slave refuses a master it must not follow: the master shows it as
// fenced (once in its log), stops counting on it (Drain does not wait),
// and the slave logs why; the Handler sees nothing.
func TestFencedMaster(t *testing.T) {
	a, b := newEpoch(t), newEpoch(t)
	for _, tc := range []struct {
		name   string
		st     SlaveState
		master wire.Epoch
		says   string
	}{
		{"unrelated epoch", SlaveState{Epoch: a, Applied: 7, Durable: 7}, b,
			"this slave follows master epoch " + epochName(a) + ", and this master's epoch " + epochName(b) + " is unrelated"},
		{"older epoch", SlaveState{Epoch: b, Lineage: []wire.Epoch{a}, Applied: 7, Durable: 7}, a,
			"this slave follows master epoch " + epochName(b) + ", which replaced this master's epoch " + epochName(a) + " by promotion"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPKI(t, "fence")
			h := newStateHandler(tc.st)
			srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
			ft := newFakeTree(1, 0)
			m := startMasterTree(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
				Epoch: tc.master, Run: newRun(t), Head: 7, Mode: wire.ModeFsync}, ft)
			g := newOpGen(31)
			g.seq = 7
			appendOps(m.Master, g, 5, 0, 0, map[uint64][]byte{})
			eventually(t, 30*time.Second, "fenced", func() bool { return m.status(0).State == "fenced" })
			st := m.status(0)
			if !strings.Contains(st.LastError, "fenced") || !strings.Contains(st.LastError, tc.says) {
				t.Fatalf("LastError %q lacks %q", st.LastError, tc.says)
			}
			eventually(t, 30*time.Second, "the slave's log", func() bool {
				return strings.Contains(srv.log.String(), "closing master connection: fenced: "+tc.says)
			})
			// The fenced master keeps redialing (slowly); the slave
			// refuses each attempt but says so once, not every time.
			eventually(t, 60*time.Second, "a second refusal", func() bool {
				return srv.log.count("level=DEBUG msg=\"closing master connection: fenced") > 0
			})
			if n := srv.log.count("level=WARN msg=\"closing master connection: fenced"); n != 1 {
				t.Fatalf("the slave logged the fenced master %d times at WARN, want once:\n%s", n, srv.log)
			}
			if n := m.log.count("the slave refuses this master (fenced)"); n != 1 {
				t.Fatalf("fencing logged %d times, want once:\n%s", n, m.log)
			}
			// A fenced slave holds nobody back.
			g.seq++
			m.Append(g.seq, &wire.Sync{})
			m.Wait(g.seq)
			if err := m.Drain(10 * time.Second); err != nil {
				t.Fatalf("Drain waited for a fenced slave: %v", err)
			}
			if recs, _, errs := h.snapshot(); len(recs) != 0 || len(errs) != 0 || len(h.items()) != 0 || len(h.followed()) != 0 {
				t.Fatalf("a fenced master reached the handler: %d ops, %d items, follows %v, errors %v", len(recs), len(h.items()), h.followed(), errs)
			}
			if len(ft.passes()) != 0 {
				t.Fatalf("passes with a fenced slave: %+v", ft.passes())
			}
			if got := h.state(); got.Epoch != tc.st.Epoch || got.Applied != 7 {
				t.Fatalf("slave state changed: %+v", got)
			}
		})
	}
}

// A new replica adopts the first master it meets and is resynchronised
// (or, with no Tree, reported as needing it).
func TestNewReplicaAdoptsFirstMaster(t *testing.T) {
	for _, withTree := range []bool{true, false} {
		name := "with a tree"
		if !withTree {
			name = "without a tree"
		}
		t.Run(name, func(t *testing.T) {
			p := newPKI(t, "adopt")
			h := newStateHandler(SlaveState{})
			srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
			var ft *fakeTree
			var tree Tree
			if withTree {
				ft = newFakeTree(1, 0)
				tree = ft
			}
			e := newEpoch(t)
			run := newRun(t)
			m := startMasterTree(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
				Epoch: e, Lineage: []wire.Epoch{newEpoch(t)}, Run: run}, tree)
			h.waitFor(t, 30*time.Second, "Follow", func(h *fakeHandler) bool { return len(h.follows) == 1 })
			if st := h.state(); st.Epoch != e || !st.Resyncing {
				t.Fatalf("after Follow: %+v", st)
			}
			if !strings.Contains(srv.log.String(), "following master epoch "+epochName(e)+": a new replica") {
				t.Fatalf("slave log lacks the adoption:\n%s", srv.log)
			}
			g := newOpGen(32)
			want := map[uint64][]byte{}
			startRun(m.Master, g, run, want)
			appendOps(m.Master, g, 20, 0, 0, want)
			if !withTree {
				eventually(t, 30*time.Second, "needs-resync", func() bool {
					st := m.status(0)
					return st.State == "needs-resync" && strings.Contains(st.LastError, "its tree is of unknown state")
				})
				if recs, _, _ := h.snapshot(); len(recs) != 0 {
					t.Fatalf("%d ops applied to a tree of unknown state", len(recs))
				}
				return
			}
			ft.waitDone(t, 1, 60*time.Second)
			waitApplied(t, h, g.seq, 60*time.Second)
			items := h.items()
			if b, ok := items[0].item.(*wire.ResyncBegin); !ok || !b.Rebase {
				t.Fatalf("first item %#v, want a rebasing ResyncBegin", items[0].item)
			}
			checkRange(t, h, want, items[0].at+1, g.seq)
			h.waitFor(t, 30*time.Second, "the end of the resync", func(h *fakeHandler) bool { return !h.st.Resyncing })
			if len(h.followed()) != 1 {
				t.Fatalf("Follow called %d times", len(h.followed()))
			}
		})
	}
}

// After a promotion the slaves of the old master follow its successor
// (whose Lineage names the old epoch): they adopt it and are compared.
// The old master, back, is then refused by them (split brain averted)
// while its successor keeps feeding them.
func TestPromotedSuccessorAdopted(t *testing.T) {
	a, b, b2 := newEpoch(t), newEpoch(t), newEpoch(t)
	p := newPKI(t, "promote")
	rb := newRun(t)
	h := newStateHandler(SlaveState{Epoch: b, Lineage: []wire.Epoch{a}, Run: rb, Applied: 100, Durable: 100})
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: 20 * time.Millisecond})
	addr := srv.Addr().String()
	ft := newFakeTree(2, 0)
	run := newRun(t)
	m := startMasterTree(t, MasterConfig{Peers: []Peer{{Addr: addr, TLS: p.clientTLS()}},
		Epoch: b2, Lineage: []wire.Epoch{b, a}, Run: run, quic: fastQUIC()}, ft)
	ft.waitDone(t, 1, 60*time.Second)
	h.waitFor(t, 30*time.Second, "the end of the resync", func(h *fakeHandler) bool { return !h.st.Resyncing })
	st := h.state()
	if !slices.Equal(h.followed(), []wire.Epoch{b2}) || st.Epoch != b2 || !slices.Equal(st.Lineage, []wire.Epoch{b, a}) {
		t.Fatalf("follows %v, state %+v: want the successor adopted with its lineage", h.followed(), st)
	}
	if ps := ft.passes(); len(ps) != 1 || !ps[0].Rebase {
		t.Fatalf("passes %+v, want one rebase pass", ps)
	}
	if !strings.Contains(srv.log.String(), "succeeds epoch "+epochName(b)+", which this slave followed (a promotion)") {
		t.Fatalf("slave log lacks the promotion:\n%s", srv.log)
	}
	g := newOpGen(33)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 30, 0, 0, want)
	waitApplied(t, h, g.seq, 60*time.Second)

	// The old master comes back: refused. Its connection replaces the
	// successor's for a moment; the successor redials and resumes.
	old := startMaster(t, MasterConfig{Peers: []Peer{{Addr: addr, TLS: p.clientTLS()}},
		Epoch: b, Lineage: []wire.Epoch{a}, Run: newRun(t), Head: 100, quic: fastQUIC()})
	og := newOpGen(34)
	og.seq = 100
	appendOps(old.Master, og, 10, 0, 0, map[uint64][]byte{})
	eventually(t, 30*time.Second, "the old master fenced", func() bool { return old.status(0).State == "fenced" })
	if !strings.Contains(old.status(0).LastError, "split brain averted") {
		t.Fatalf("old master: %+v", old.status(0))
	}
	old.stop(t)
	appendOps(m.Master, g, 30, 0, 0, want)
	waitApplied(t, h, g.seq, 60*time.Second)
	eventually(t, 30*time.Second, "the successor streaming", func() bool { return m.status(0).State == "streaming" })
	items := h.items()
	checkRange(t, h, want, items[0].at+1, g.seq)
	if st := h.state(); st.Epoch != b2 || len(h.followed()) != 1 {
		t.Fatalf("the old master changed what the slave follows: %+v, follows %v", st, h.followed())
	}
}
