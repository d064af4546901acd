package quictransport

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// TestAddRemovePeer: a slave added while the master runs is dialed and
// gets every op; a slave removed is disconnected, no longer counted by
// Wait or Status, and releases the ops the master held for it alone.
func TestAddRemovePeer(t *testing.T) {
	p := newPKI(t, "live")
	ha, hb := newFakeHandler(), newFakeHandler()
	a := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: ha})
	b := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: hb})
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: a.Addr().String(), TLS: p.clientTLS()}},
		Run:   run, Mode: wire.ModeFsync, SyncTimeout: time.Minute,
	})
	if err := m.AddPeer(Peer{Addr: b.Addr().String(), TLS: p.clientTLS()}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddPeer(Peer{Addr: b.Addr().String(), TLS: p.clientTLS()}); !errors.Is(err, ErrPeerExists) {
		t.Errorf("adding it twice: %v, want ErrPeerExists", err)
	}
	g := newOpGen(7)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 50, 10, 96<<10, want)
	waitApplied(t, ha, g.seq, 60*time.Second)
	waitApplied(t, hb, g.seq, 60*time.Second)
	checkRecords(t, hb, want, g.seq)

	// a stops applying: the master holds what it lacks.
	release := ha.blockAt(g.seq + 1)
	defer release()
	appendOps(m.Master, g, 20, 0, 0, want)
	waitApplied(t, hb, g.seq, 60*time.Second)
	m.mu.Lock()
	heldFor := m.bl.first()
	m.mu.Unlock()
	addr, err := m.RemovePeer(context.Background(), a.Addr().String())
	if err != nil || addr != a.Addr().String() {
		t.Fatalf("RemovePeer: %q, %v", addr, err)
	}
	if _, err := m.RemovePeer(context.Background(), a.Addr().String()); !errors.Is(err, ErrNoSuchPeer) {
		t.Errorf("removing it twice: %v, want ErrNoSuchPeer", err)
	}
	if st := m.Status(); len(st) != 1 || st[0].Addr != b.Addr().String() {
		t.Fatalf("status after the removal: %+v", st)
	}
	// Wait counts b alone: a Sync it makes durable is enough.
	g.seq++
	m.Append(g.seq, &wire.Sync{})
	done := make(chan error, 1)
	go func() { done <- m.Wait(g.seq) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait still waits for the removed slave")
	}
	eventually(t, 30*time.Second, "the ops held for the removed slave released", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.truncateDurableLocked()
		return m.bl.first() > heldFor
	})
}
