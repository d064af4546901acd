package quictransport

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// The timer-driven behaviour, in fake time (testing/synctest): the code
// under test is the real one, driven without the network, which cannot
// run inside a bubble. Each behaviour also has a test over real QUIC:
// TestWaitDegradedAndRecovers, TestReconnectAfterSlaveRestart,
// TestIdleSyncAdvancesDurable.

// fakeTimeMaster is a Master whose one slave streams, known at applied 0
// with 10 ops sent, and that never dials (Run is not called).
func fakeTimeMaster(t *testing.T, cfg MasterConfig) (*Master, *peer) {
	t.Helper()
	cfg.Peers = []Peer{{Addr: "slave.invalid:1", TLS: &tls.Config{}}}
	cfg.Epoch, cfg.Run = testEpoch, wire.RunID{1}
	cfg.Logger, _ = newLogger(t, "master")
	m, err := NewMaster(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := m.peers[0]
	m.mu.Lock()
	p.state, p.known, p.sent, p.next = stateStreaming, true, 10, 11
	m.mu.Unlock()
	return m, p
}

// waitAsync runs m.Wait(seq) and returns what it returned, and after how
// long, on the channel.
func waitAsync(m *Master, seq uint64) <-chan waitResult {
	out := make(chan waitResult, 1)
	start := time.Now()
	go func() {
		err := m.Wait(seq)
		out <- waitResult{err, time.Since(start)}
	}()
	return out
}

type waitResult struct {
	err     error
	elapsed time.Duration
}

// A slave that does not make the op durable within SyncTimeout is marked
// degraded at exactly SyncTimeout, and Wait returns then, not before.
func TestFakeTimeWaitTimeoutDegrades(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := fakeTimeMaster(t, MasterConfig{Mode: wire.ModeFsync, SyncTimeout: 5 * time.Second})
		res := waitAsync(m, 3)
		time.Sleep(5*time.Second - time.Millisecond)
		synctest.Wait()
		select {
		case r := <-res:
			t.Fatalf("Wait returned %v after %v, before the sync timeout", r.err, r.elapsed)
		default:
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		r := <-res
		if r.err != nil || r.elapsed != 5*time.Second {
			t.Fatalf("Wait returned %v after %v, want nil after 5s", r.err, r.elapsed)
		}
		m.mu.Lock()
		degraded := p.degraded
		m.mu.Unlock()
		if !degraded {
			t.Fatal("the slave is not degraded after the sync timeout")
		}
		// Degraded, it holds no writer back.
		r = <-waitAsync(m, 4)
		if r.err != nil || r.elapsed != 0 {
			t.Fatalf("a Wait past a degraded slave returned %v after %v", r.err, r.elapsed)
		}
		// An ack that covers what writers waited for makes it healthy.
		if err := p.onAck(wire.Ack{Applied: 4, Durable: 4}); err != nil {
			t.Fatal(err)
		}
		m.mu.Lock()
		degraded = p.degraded
		m.mu.Unlock()
		if degraded {
			t.Fatal("still degraded after an ack of every op waited for")
		}
	})
}

// An ack that makes the op durable ends the Wait at once, and marks
// nothing.
func TestFakeTimeWaitEndsAtAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := fakeTimeMaster(t, MasterConfig{Mode: wire.ModeFsync, SyncTimeout: 5 * time.Second})
		res := waitAsync(m, 3)
		time.Sleep(time.Second)
		if err := p.onAck(wire.Ack{Applied: 3, Durable: 3}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		r := <-res
		if r.err != nil || r.elapsed != time.Second {
			t.Fatalf("Wait returned %v after %v, want nil after 1s", r.err, r.elapsed)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if p.degraded {
			t.Fatal("a slave that acked in time is degraded")
		}
	})
}

// With MinSlaves that the slaves do not cover by SyncTimeout, Wait fails
// then with ErrTooFewSlaves.
func TestFakeTimeWaitTooFew(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := fakeTimeMaster(t, MasterConfig{Mode: wire.ModeSync, SyncTimeout: 2 * time.Second, MinSlaves: 1})
		r := <-waitAsync(m, 3)
		if !errors.Is(r.err, ErrTooFewSlaves) || r.elapsed != 2*time.Second {
			t.Fatalf("Wait returned %v after %v, want ErrTooFewSlaves after 2s", r.err, r.elapsed)
		}
	})
}

// The dial loop's pause: about the backoff (with jitter, between half and
// one and a half of it), cut short by the drain's start or by ctx; a
// streaming slave is shown connecting meanwhile.
func TestFakeTimeRedialBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, p := fakeTimeMaster(t, MasterConfig{})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		for range 20 {
			start := time.Now()
			p.pause(ctx, 2*time.Second)
			if d := time.Since(start); d < time.Second || d >= 3*time.Second {
				t.Fatalf("paused %v for a backoff of 2s", d)
			}
		}
		m.mu.Lock()
		state := p.state
		m.mu.Unlock()
		if state != stateConnecting {
			t.Fatalf("state %v while redialing", state)
		}

		done := make(chan time.Duration)
		go func() {
			start := time.Now()
			p.pause(ctx, maxBackoff)
			done <- time.Since(start)
		}()
		time.Sleep(100 * time.Millisecond)
		m.mu.Lock()
		m.draining = true // as Drain starts
		m.mu.Unlock()
		m.drainOnce.Do(func() { close(m.drainCh) })
		if d := <-done; d != 100*time.Millisecond {
			t.Fatalf("the drain's start ended the pause after %v", d)
		}

		go func() {
			start := time.Now()
			p.pause(ctx, maxBackoff)
			done <- time.Since(start)
		}()
		synctest.Wait() // the drain has started: only ctx cuts the pause now
		time.Sleep(time.Second)
		cancel()
		if d := <-done; d != time.Second {
			t.Fatalf("ctx's end ended the pause after %v", d)
		}
	})
}

// The slave's applier, idle with ops applied but not durable, syncs them
// after SyncInterval and acks; an op that arrives first wakes it without a
// sync.
func TestFakeTimeIdleSync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newStateHandler(SlaveState{Epoch: testEpoch, Applied: 3})
		s := applierSession(t, h, time.Second)
		idle := time.NewTimer(time.Hour)
		defer idle.Stop()

		res := make(chan error, 1)
		start := time.Now()
		go func() { res <- s.drained(idle) }()
		synctest.Wait()
		<-s.ackSig // it acks what it applied before it waits
		time.Sleep(time.Second - time.Millisecond)
		synctest.Wait()
		if st := h.State(); st.Durable != 0 {
			t.Fatalf("synced before SyncInterval: %+v", st)
		}
		if err := <-res; err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != time.Second {
			t.Fatalf("idle sync after %v, want 1s", d)
		}
		if st := h.State(); st.Durable != 3 {
			t.Fatalf("after the idle sync: %+v, want durable 3", st)
		}
		select {
		case <-s.ackSig:
		default:
			t.Fatal("no ack after the idle sync")
		}

		h.mu.Lock()
		h.st.Applied = 5
		h.mu.Unlock()
		go func() { res <- s.drained(idle) }()
		time.Sleep(100 * time.Millisecond)
		s.rb.ready <- struct{}{}
		if err := <-res; err != nil {
			t.Fatal(err)
		}
		if st := h.State(); st.Durable != 3 {
			t.Fatalf("an op's arrival synced: %+v", st)
		}
	})
}

// In async mode a Sync op under a stream that never drains is made
// durable once syncDeferMax has passed since it was taken, with every op
// applied by then; one that ends a burst, when the burst is applied.
func TestFakeTimeAsyncSyncDeferBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newStateHandler(SlaveState{Epoch: testEpoch, Applied: 3})
		s := applierSession(t, h, time.Hour)
		idle := time.NewTimer(time.Hour)
		defer idle.Stop()
		pace := ackPacer{every: 1 << 30}
		write := func(seq uint64) wire.Op { return &wire.Write{Handle: 1, Off: int64(seq), Data: []byte("x")} }
		insert := func(seq uint64, op wire.Op) {
			if err := s.rb.insertControl(seq, op, 16); err != nil {
				t.Fatal(err)
			}
		}
		// A stream that never drains: a Sync at 4, then an op every ms.
		insert(4, &wire.Sync{})
		insert(5, write(5))
		start := time.Now()
		var syncedAt time.Duration
		for seq := uint64(5); seq < 40; seq++ {
			if err := s.applyNext(idle, &pace); err != nil { // the Sync, then seq-1's successor
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
			insert(seq+1, write(seq+1))
			h.mu.Lock()
			n := len(h.syncs)
			h.mu.Unlock()
			if n > 0 && syncedAt == 0 {
				syncedAt = time.Since(start)
			}
		}
		h.mu.Lock()
		syncs := append([]uint64(nil), h.syncs...)
		h.mu.Unlock()
		if len(syncs) != 1 || syncs[0] < 4 || syncedAt < syncDeferMax || syncedAt > syncDeferMax+2*time.Millisecond {
			t.Fatalf("synced at %v after %v, want once, through op 4 or later, %v after the Sync", syncs, syncedAt, syncDeferMax)
		}
		// A burst ending with a Sync (ops 39 and 40 are buffered): durable
		// at the Sync once the burst is applied, not before.
		insert(41, &wire.Sync{})
		for step := range 4 { // ops 39 and 40, the Sync, then drained
			if err := s.applyNext(idle, &pace); err != nil {
				t.Fatal(err)
			}
			if st := h.State(); st.Durable == 41 && step == 3 {
				return
			} else if st.Durable == 41 {
				t.Fatalf("durable at the Sync at step %d, before the burst was applied", step)
			}
		}
		t.Fatalf("durable %d after the burst ending in Sync 41 was applied", h.State().Durable)
	})
}

// applierSession is an async-mode session of a slave with handler h, as far
// as its applier needs (no connection): op 4 is the next it expects.
func applierSession(t *testing.T, h Handler, syncInterval time.Duration) *session {
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	return &session{srv: &Slave{cfg: SlaveConfig{Handler: h, SyncInterval: syncInterval}}, ctx: ctx,
		stopCh: make(chan struct{}), ackSig: make(chan struct{}, 1), rb: newReorder(4, 1<<30), mode: wire.ModeAsync}
}
