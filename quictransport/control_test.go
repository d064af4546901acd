package quictransport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

// The control protocol between the real master-side code (hello, send,
// readAcks) and the real slave-side code (readHelloOn, handshake,
// readControl, applyLoop, ackLoop), over a net.Pipe instead of a QUIC
// control stream: no UDP, no TLS, no data streams (every op is small).

// failingHandler is a fakeHandler whose Apply of op failAt fails.
type failingHandler struct {
	*fakeHandler
	failAt uint64
}

func (h failingHandler) Apply(seq uint64, op wire.Op) error {
	if seq == h.failAt {
		return errors.New("injected failure")
	}
	return h.fakeHandler.Apply(seq, op)
}

type pipeSession struct {
	m     *Master
	p     *peer
	s     *session
	h     *fakeHandler
	acks  chan error // what the master's ack reader returned
	slave chan error // the slave's handshake, or nil once its loops ended
	// closed gets the code the slave closed its "connection" with.
	closed chan wire.ErrorCode
	mc     *pipeEnd // the master's end
}

// startPipe connects a master (never Run: no dialing) and a slave over a
// net.Pipe, runs the hello on both ends and starts the master's sender
// and ack reader and the slave's readers, applier and acker.
func startPipe(t *testing.T, handler func(*fakeHandler) Handler) *pipeSession {
	t.Helper()
	pc, sc := net.Pipe()
	mc := &pipeEnd{Conn: pc}
	mlog, _ := newLogger(t, "master")
	m, err := NewMaster(MasterConfig{Peers: []Peer{{Addr: "pipe", TLS: &tls.Config{}}}, Run: newRun(t),
		Epoch: testEpoch, Mode: wire.ModeAsync, Logger: mlog})
	if err != nil {
		t.Fatal(err)
	}
	h := newFakeHandler()
	slaveLog, _ := newLogger(t, "slave")
	scfg, err := SlaveConfig{Handler: handler(h), Logger: slaveLog, TLS: &tls.Config{}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	srv := &Slave{cfg: scfg, log: slaveLog, refused: make(map[string]refusal)}
	ps := &pipeSession{m: m, p: m.peers[0], h: h, acks: make(chan error, 1), slave: make(chan error, 2),
		closed: make(chan wire.ErrorCode, 4), mc: mc}
	ctx, cancel := context.WithCancel(t.Context())
	ps.s = newControlSession(srv, "pipe master", ctx, func(code wire.ErrorCode, msg string) {
		ps.closed <- code
		var err error = &quic.ApplicationError{Remote: true, ErrorCode: appCode(code), ErrorMessage: msg}
		mc.closeErr.Store(&err)
		sc.Close()
	})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		mc.Close()
		sc.Close()
		wg.Wait()
	})
	wg.Go(func() {
		err := ps.s.readHelloOn(sc)
		if err == nil {
			err = ps.s.handshake()
		}
		ps.slave <- err
		if err != nil {
			return
		}
		ps.s.wg.Go(ps.s.readControl)
		ps.s.wg.Go(ps.s.ackLoop)
		ps.s.applyLoop()
		ps.s.cancel(nil)
		ps.s.wg.Wait()
	})
	fr, err := ps.p.hello(mc, "pipe slave")
	if err != nil {
		t.Fatalf("master's hello: %v", err)
	}
	if err := <-ps.slave; err != nil {
		t.Fatalf("slave's handshake: %v", err)
	}
	sctx, scancel := context.WithCancelCause(ctx)
	wg.Go(func() { ps.acks <- ps.p.readAcks(fr); scancel(nil) })
	wg.Go(func() { scancel(ps.p.send(sctx, scancel, &wg, nil, mc)) })
	return ps
}

// pipeEnd is the master's end of the pipe. Once the slave closes the
// connection (closeConn), its reads fail as they would on QUIC, with the
// slave's close code, which tells the master why when the slave's Error
// frame could not be written first (its acker was writing).
type pipeEnd struct {
	net.Conn
	closeErr atomic.Pointer[error]
	writes   atomic.Int64
}

func (e *pipeEnd) Write(b []byte) (int, error) {
	e.writes.Add(1)
	return e.Conn.Write(b)
}

func (e *pipeEnd) Read(b []byte) (int, error) {
	n, err := e.Conn.Read(b)
	if ce := e.closeErr.Load(); err != nil && ce != nil {
		return n, *ce
	}
	return n, err
}

// appendWrites appends small writes from..to.
func (ps *pipeSession) appendWrites(from, to uint64) {
	for seq := from; seq <= to; seq++ {
		ps.m.Append(seq, &wire.Write{Handle: 1, Off: int64(seq), Data: []byte("pipe")})
	}
}

// masterApplied waits until the master has booked an ack of op seq.
func (ps *pipeSession) masterApplied(t *testing.T, seq uint64) {
	t.Helper()
	ok := awaitChange(10*time.Second, func() (bool, <-chan struct{}) {
		ps.m.mu.Lock()
		defer ps.m.mu.Unlock()
		return ps.p.applied >= seq, ps.m.changed
	})
	if !ok {
		t.Fatalf("the master never booked an ack of op %d", seq)
	}
}

// Hello/HelloAck, ops in order, acks.
func TestControlPipe(t *testing.T) {
	ps := startPipe(t, func(h *fakeHandler) Handler { return h })
	ps.m.mu.Lock()
	state, next, limit := ps.p.state, ps.p.next, ps.p.limit
	ps.m.mu.Unlock()
	if state != stateStreaming || next != 1 || limit <= 0 {
		t.Fatalf("after the hello: state %v, next %d, limit %d", state, next, limit)
	}
	ps.appendWrites(1, 20)
	ps.masterApplied(t, 20)
	recs, _, errs := ps.h.snapshot()
	if len(errs) > 0 {
		t.Fatalf("handler saw %v", errs)
	}
	for i, r := range recs {
		if r.seq != uint64(i+1) {
			t.Fatalf("record %d is op %d", i, r.seq)
		}
	}
	if len(recs) != 20 {
		t.Fatalf("%d ops applied, want 20", len(recs))
	}
}

// An op the slave cannot apply: it says so with an Error frame, or the
// code of its close (CodeApply), which the master's ack reader returns,
// after the acks of the ops before.
func TestControlPipeSlaveError(t *testing.T) {
	ps := startPipe(t, func(h *fakeHandler) Handler { return failingHandler{h, 4} })
	ps.appendWrites(1, 6)
	var err error
	select {
	case err = <-ps.acks:
	case <-time.After(10 * time.Second):
		t.Fatal("the master's ack reader never returned")
	}
	if _, ok := slaveCannotApply(err); !ok {
		t.Fatalf("the ack reader returned %v, want the slave's CodeApply", err)
	}
	select {
	case code := <-ps.closed:
		if code != wire.CodeApply {
			t.Fatalf("the slave closed with %v", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the slave never closed")
	}
	if st := ps.h.State(); st.Applied != 3 {
		t.Fatalf("the slave applied through %d, want 3", st.Applied)
	}
}

// A slave the master gives up on: the sender's Error frame (CodeNeedsResync)
// ends the slave's session with that error.
func TestControlPipeMasterError(t *testing.T) {
	ps := startPipe(t, func(h *fakeHandler) Handler { return h })
	ps.appendWrites(1, 2)
	ps.masterApplied(t, 2)
	ps.m.mu.Lock()
	ps.p.needsResyncLocked(2, "a test gives up on it")
	ps.m.mu.Unlock()
	select {
	case <-ps.s.ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the slave's session never ended")
	}
	if pe, ok := errors.AsType[*PeerError](context.Cause(ps.s.ctx)); !ok || pe.Code != wire.CodeNeedsResync || pe.Seq != 3 {
		t.Fatalf("the slave's session ended with %v, want the master's CodeNeedsResync at op 3", context.Cause(ps.s.ctx))
	}
}

// booked waits until the master's sender has taken op seq (into its
// buffer, or sent it).
func (ps *pipeSession) booked(t *testing.T, seq uint64) {
	t.Helper()
	// Taking an op changes nothing Wait waits for (m.changed): poll.
	eventually(t, 10*time.Second, fmt.Sprintf("the sender to take op %d", seq), func() bool {
		ps.m.mu.Lock()
		defer ps.m.mu.Unlock()
		return ps.p.sent >= seq
	})
}

// Small ops that come one at a time, while the sender has nothing else to
// do, wait for more without waking it, and go in one write as soon as a
// writer waits for them.
func TestControlPipeCoalesces(t *testing.T) {
	// Restored after the pipe's goroutines end (cleanups run last first).
	t.Cleanup(func(d time.Duration) func() { return func() { coalesce = d } }(coalesce))
	coalesce = time.Hour // only a waiter sends them
	ps := startPipe(t, func(h *fakeHandler) Handler { return h })
	before := ps.mc.writes.Load()
	ps.appendWrites(1, 1)
	ps.booked(t, 1)
	eventually(t, 10*time.Second, "the sender to linger", ps.p.lingering.Load)
	const n = 50
	cut := ps.p.lingerCut.Load()
	for seq := uint64(2); seq <= n; seq++ {
		ps.appendWrites(seq, seq)
	}
	// A wake-up, had there been one, is taken by the sender.
	eventually(t, 10*time.Second, "no wake-up pending", func() bool { return len(ps.p.wake) == 0 && ps.p.lingering.Load() })
	if c := ps.p.lingerCut.Load() - cut; c != 0 || !ps.p.lingering.Load() {
		t.Errorf("new ops woke the lingering sender %d times (lingering %v), want none", c, ps.p.lingering.Load())
	}
	if st := ps.h.State(); st.Applied != 0 {
		t.Fatalf("the slave applied %d ops no one waited for within an hour's delay", st.Applied)
	}
	ps.m.mu.Lock()
	ps.m.hurryLocked(n)
	ps.m.mu.Unlock()
	ps.masterApplied(t, n)
	if w := ps.mc.writes.Load() - before; w != 1 {
		t.Errorf("%d ops went in %d writes, want 1", n, w)
	}
}

// An op no one waits for goes when the coalescing delay ends.
func TestControlPipeLingerEnds(t *testing.T) {
	ps := startPipe(t, func(h *fakeHandler) Handler { return h })
	ps.appendWrites(1, 1)
	ps.masterApplied(t, 1)
}

// In async mode the Sync ops of a burst (a database's commits) cost the
// slave one sync once it has applied the burst, not one each; the ops
// still count as applied and durable up to the last Sync.
func TestControlPipeAsyncSyncsCoalesce(t *testing.T) {
	ps := startPipe(t, func(h *fakeHandler) Handler { return h })
	gate := make(chan struct{})
	ps.h.mu.Lock()
	ps.h.applyGate = gate
	ps.h.mu.Unlock()
	const n = 30
	for seq := uint64(1); seq <= n; seq++ {
		if seq%3 == 0 {
			ps.m.Append(seq, &wire.Sync{})
		} else {
			ps.appendWrites(seq, seq)
		}
	}
	ps.m.mu.Lock()
	ps.m.hurryLocked(n)
	ps.m.mu.Unlock()
	// The whole burst has arrived while the applier waits in op 1.
	eventually(t, 10*time.Second, "the burst to arrive", func() bool {
		ps.s.rb.mu.Lock()
		defer ps.s.rb.mu.Unlock()
		return ps.s.rb.hiCtrl == n
	})
	close(gate)
	ps.masterApplied(t, n)
	eventually(t, 10*time.Second, "the slave to be durable at the last Sync", func() bool { return ps.h.State().Durable == n })
	ps.h.mu.Lock()
	syncs := append([]uint64(nil), ps.h.syncs...)
	ps.h.mu.Unlock()
	if len(syncs) != 1 || syncs[0] != n {
		t.Errorf("the slave synced at %v for a burst of %d Sync ops, want once, at %d", syncs, n/3, n)
	}
	recs, _, errs := ps.h.snapshot()
	if len(errs) != 0 || len(recs) != n*2/3 {
		t.Errorf("the slave applied %d ops, want the %d writes; contract violations: %v", len(recs), n*2/3, errs)
	}
}
