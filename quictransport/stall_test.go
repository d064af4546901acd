package quictransport

import (
	"context"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

// ---- a Handler whose disk fills up at one op ----

// stallMsg is what a *wire.ResourceError of stallHandler says (its Error()),
// which the slave sends in its wire.Stall and the master shows as Cause.
var stallMsg = (&wire.ResourceError{Cause: "disk full", Err: fmt.Errorf("apply write: %w", syscall.ENOSPC)}).Error()

// stallCall is one call of Apply: the op's seq and its encoding.
type stallCall struct {
	seq  uint64
	body []byte
}

// stallHandler is a fakeHandler whose Apply of op seq fails with a
// *wire.ResourceError (disk full) the first k times, then succeeds. It records
// every Apply call, failed or not, in call order. With hold set, the call
// that succeeds (the k+1-th of op seq) first waits for hold to be closed,
// so that a test can look at the stall while it lasts, whatever k.
type stallHandler struct {
	*fakeHandler
	seq uint64
	k   int // math.MaxInt: the disk never frees up

	mu      sync.Mutex
	failed  int // failures of op seq so far
	calls   []stallCall
	first   chan struct{} // closed at the first failure
	hold    chan struct{} // nil: no hold
	holding chan struct{} // closed when the k+1-th call waits for hold
	through atomic.Bool   // op seq applied
}

func newStallHandler(seq uint64, k int, hold bool) *stallHandler {
	h := &stallHandler{fakeHandler: newFakeHandler(), seq: seq, k: k,
		first: make(chan struct{}), holding: make(chan struct{})}
	if hold {
		h.hold = make(chan struct{})
	}
	return h
}

func (h *stallHandler) Apply(seq uint64, op wire.Op) error {
	body := wire.AppendOp(nil, seq, op)
	h.mu.Lock()
	h.calls = append(h.calls, stallCall{seq: seq, body: body})
	if seq != h.seq {
		h.mu.Unlock()
		return h.fakeHandler.Apply(seq, op)
	}
	if h.failed < h.k {
		h.failed++
		if h.failed == 1 {
			close(h.first)
		}
		h.mu.Unlock()
		return &wire.ResourceError{Cause: "disk full", Err: fmt.Errorf("apply write: %w", syscall.ENOSPC)}
	}
	hold := h.hold
	if hold != nil && h.failed == h.k {
		h.failed++ // hold once
		close(h.holding)
	} else {
		hold = nil
	}
	h.mu.Unlock()
	if hold != nil {
		<-hold
	}
	err := h.fakeHandler.Apply(seq, op)
	h.through.Store(true)
	return err
}

// release lets the held call of op seq go on (idempotent).
func (h *stallHandler) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hold != nil {
		select {
		case <-h.hold:
		default:
			close(h.hold)
		}
	}
}

func (h *stallHandler) failures() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return min(h.failed, h.k)
}

func (h *stallHandler) callLog() []stallCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

// checkCalls checks that Apply was called with ops 1..to of want, in
// order, each once, except op h.seq, called times times in a row (the same
// seq and contents: retries, never a later op in between). Sync ops never
// reach Apply.
func (h *stallHandler) checkCalls(t *testing.T, want map[uint64][]byte, to uint64, times int) {
	t.Helper()
	calls := h.callLog()
	i := 0
	for seq := uint64(1); seq <= to; seq++ {
		if _, isSync := mustParse(t, want[seq]).(*wire.Sync); isSync {
			continue
		}
		n := 1
		if seq == h.seq {
			n = times
		}
		for j := range n {
			if i >= len(calls) {
				t.Fatalf("Apply called %d times; op %d (call %d of %d) missing", len(calls), seq, j+1, n)
			}
			c := calls[i]
			i++
			if c.seq != seq {
				t.Fatalf("Apply call %d is op %d, want op %d (call %d of %d); calls: %s", i, c.seq, seq, j+1, n, callSeqs(calls))
			}
			if string(c.body) != string(want[seq]) {
				t.Fatalf("Apply call %d: op %d with other contents than appended", i, seq)
			}
		}
	}
	if i != len(calls) {
		t.Fatalf("Apply called %d times, want %d; calls: %s", len(calls), i, callSeqs(calls))
	}
}

// callSeqs summarises a call log: runs of consecutive seqs, repeats shown.
func callSeqs(calls []stallCall) string {
	var b strings.Builder
	for i := 0; i < len(calls); {
		j := i
		for j+1 < len(calls) && calls[j+1].seq == calls[j].seq+1 {
			j++
		}
		rep := i
		for rep+1 < len(calls) && calls[rep+1].seq == calls[i].seq {
			rep++
		}
		switch {
		case rep > i:
			fmt.Fprintf(&b, "%dx%d ", calls[i].seq, rep-i+1)
			i = rep + 1
		case j > i:
			fmt.Fprintf(&b, "%d..%d ", calls[i].seq, calls[j].seq)
			i = j + 1
		default:
			fmt.Fprintf(&b, "%d ", calls[i].seq)
			i++
		}
	}
	return b.String()
}

// ---- seeds, waits, goroutines ----

// stallSeed is a new seed, or $STALL_SEED to replay a failure; logged.
func stallSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("STALL_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("STALL_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (replay: STALL_SEED=%d go test -run '%s' ./quictransport/)", seed, seed, t.Name())
	return seed
}

func waitClosed(t *testing.T, ch <-chan struct{}, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(timeout):
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// goroutines returns the ids and stacks of the goroutines running code of
// the transport's own types (not the tests').
func goroutines(types ...string) map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, typ := range types {
			if strings.Contains(g, "quictransport.(*"+typ+")") {
				id, _, _ := strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
				out[id] = g
				break
			}
		}
	}
	return out
}

// checkNoNewGoroutines waits (bounded) until no goroutine running code of
// types is left that was not in before.
func checkNoNewGoroutines(t *testing.T, before map[string]string, timeout time.Duration, types ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var left []string
		for id, g := range goroutines(types...) {
			if _, old := before[id]; !old {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after %v:\n%s", len(left), timeout, strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---- tests ----

// A slave whose Handler cannot apply op x (disk full, k times) stalls in
// place: the master shows it degraded with the cause, the slave says so in
// Stalled, the op is retried with the same seq and contents, no later op
// is applied before it, nothing is sent twice (one connection all along),
// and once it applies both sides are back to normal with no new op.
func TestStallRetriesSameOp(t *testing.T) {
	seed := stallSeed(t)
	r := mrand.New(mrand.NewPCG(seed, seed^0x5a5a))
	k := 1 + r.IntN(4)
	n := uint64(120 + r.IntN(120)) // ops in all, RunStart included
	x := 2 + r.Uint64N(n-2)        // the op that stalls: after RunStart, before the last
	t.Logf("%d ops, op %d fails %d times", n, x, k)

	p := newPKI(t, "stall")
	h := newStallHandler(x, k, true)
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	t.Cleanup(h.release) // before the server stops (cleanups run last first)
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers:       []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
		Run:         run,
		DataStreams: 4,
	})
	eventually(t, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })

	want := map[uint64][]byte{}
	g := newOpGen(seed)
	startRun(m.Master, g, run, want)
	// 10% writes of 32..64 KiB on data streams, the rest on the control
	// stream.
	appendOps(m.Master, g, int(n-1), 10, 64<<10, want)
	var total uint64
	for _, b := range want {
		total += uint64(len(b))
	}

	waitClosed(t, h.first, 60*time.Second, fmt.Sprintf("the first Apply of op %d", x))

	// (a) The master shows the slave degraded, the cause first. Op x is
	// held (not applied) until release below, so the master has no reason
	// to end the stall before: if it logs that the slave applies ops
	// again, it took an ack for an op before x for the end of the stall
	// (see TestStallOutlivesEarlierAck), and it will not be told again.
	eventually(t, 30*time.Second, "the master to show the stall", func() bool {
		if m.log.count("slave applies ops again") > 0 {
			st := m.status(0)
			t.Fatalf("the master ended the stall while op %d is not applied: state %q cause %q applied %d",
				x, st.State, st.Cause, st.Applied)
		}
		st := m.status(0)
		return st.State == "degraded" && st.Cause != ""
	})
	if st := m.status(0); st.Cause != stallMsg || !strings.HasPrefix(st.Cause, "disk full: ") {
		t.Errorf("Cause %q, want %q", st.Cause, stallMsg)
	}
	// (b) So does the slave.
	checkStalled := func(when string) {
		t.Helper()
		msg, since := srv.Stalled()
		if msg != stallMsg {
			t.Errorf("%s: Stalled() = %q, want %q", when, msg, stallMsg)
		}
		if since.IsZero() || since.After(time.Now()) {
			t.Errorf("%s: Stalled() since %v", when, since)
		}
	}
	checkStalled("at the first failure")

	// Every op reaches the slave while it is stalled (its reorder buffer
	// holds them), and the k failures happen (100 ms, 200 ms... apart).
	eventually(t, 60*time.Second, "every op sent", func() bool { return m.status(0).Sent == n })
	waitClosed(t, h.holding, 60*time.Second, fmt.Sprintf("Apply of op %d to be called %d times", x, k+1))

	// Still stalled after k failures: nothing told the master otherwise.
	st := m.status(0)
	if st.State != "degraded" || st.Cause != stallMsg {
		t.Errorf("after %d failures, with op %d not applied: state %q cause %q, want degraded and %q",
			k, x, st.State, st.Cause, stallMsg)
	}
	if st.Applied >= x {
		t.Errorf("the master says op %d is applied, the handler has not applied it", st.Applied)
	}
	checkStalled(fmt.Sprintf("after %d failures", k))
	h.checkCalls(t, want, x, k+1) // ops 1..x-1 once, x k+1 times (the last one held), nothing after

	// Let op x through; nothing more is appended.
	h.release()
	waitApplied(t, h.fakeHandler, n, 60*time.Second)
	// (e) Back to streaming, no cause, once an ack shows the op applied.
	eventually(t, 30*time.Second, "the master to see the slave apply again", func() bool {
		st := m.status(0)
		return st.State == "streaming" && st.Cause == "" && st.Applied == n
	})
	if msg, _ := srv.Stalled(); msg != "" {
		t.Errorf("Stalled() = %q once op %d applied", msg, x)
	}

	// (c) Every op applied once, in order, op x called k+1 times.
	h.checkCalls(t, want, n, k+1)
	checkRecords(t, h.fakeHandler, want, n)
	if got := h.failures(); got != k {
		t.Errorf("%d failures, want %d", got, k)
	}

	// (d) One connection all along: nothing was sent twice.
	if c := srv.log.count("master connected"); c != 1 {
		t.Errorf("the slave accepted %d master connections, want 1", c)
	}
	if c := m.log.count("slave connected"); c != 1 {
		t.Errorf("the master connected %d times, want 1", c)
	}
	if r := srv.Refusals(); len(r) != 0 {
		t.Errorf("the slave closed connections: %v", r)
	}
	st = m.status(0)
	if st.LastError != stallMsg {
		// LastError is set by the stall (onStall), and by nothing since.
		t.Errorf("LastError %q, want %q", st.LastError, stallMsg)
	}
	// A resend of every op would double the bytes; QUIC's own overhead
	// (headers, acks, keep-alives, a few retransmissions) is far less.
	if limit := total + total/2 + 64<<10; st.WireBytesSent > limit {
		t.Errorf("%d bytes on the wire for %d bytes of ops (more than %d)", st.WireBytesSent, total, limit)
	}
	t.Logf("%d bytes on the wire for %d bytes of ops", st.WireBytesSent, total)

	// Logged once each side when the stall began, once when it ended.
	if c := srv.log.count(fmt.Sprintf("cannot apply op %d: %s", x, stallMsg)); c != 1 {
		t.Errorf("the slave logged the stall %d times, want once", c)
	}
	if c := srv.log.count("applies ops again"); c != 1 {
		t.Errorf("the slave logged the end of the stall %d times, want once", c)
	}
	if c := m.log.count(fmt.Sprintf("slave degraded: it cannot apply ops: op %d: %s", x, stallMsg)); c != 1 {
		t.Errorf("the master logged the stall %d times, want once", c)
	}
	if c := m.log.count("slave applies ops again"); c != 1 {
		t.Errorf("the master logged the end of the stall %d times, want once", c)
	}
}

// A stall ends when the slave shuts down: Serve returns nil, the stalled
// op and those after it are never applied (and nothing else), and no
// goroutine of the slave is left; the master then stops cleanly too.
func TestStallEndsAtShutdown(t *testing.T) {
	seed := stallSeed(t)
	r := mrand.New(mrand.NewPCG(seed, seed^0xa5a5))
	n := uint64(20 + r.IntN(60))
	x := 2 + r.Uint64N(n-2)
	failures := 1 + r.IntN(3) // stop after this many failures
	t.Logf("%d ops, op %d never applies, stop after %d failures", n, x, failures)

	slaveTypes := []string{"session", "Slave", "reorder"}
	allTypes := append(slices.Clone(slaveTypes), "peer", "Master", "laneSet")
	before := goroutines(allTypes...)

	p := newPKI(t, "stallstop")
	h := newStallHandler(x, math.MaxInt, false)
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
		Run:   run,
		quic:  fastQUIC(),
	})
	want := map[uint64][]byte{}
	g := newOpGen(seed)
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, int(n-1), 10, 64<<10, want)

	waitClosed(t, h.first, 60*time.Second, fmt.Sprintf("the first Apply of op %d", x))
	eventually(t, 30*time.Second, "the master to show the stall", func() bool {
		st := m.status(0)
		return st.State == "degraded" && st.Cause == stallMsg
	})
	eventually(t, 30*time.Second, fmt.Sprintf("%d failures", failures), func() bool { return h.failures() >= failures })
	if msg, _ := srv.Stalled(); msg != stallMsg {
		t.Errorf("Stalled() = %q, want %q", msg, stallMsg)
	}

	start := time.Now()
	if err := srv.stop(t); err != nil { // at most 60 s
		t.Errorf("Serve returned %v", err)
	}
	t.Logf("Serve returned %v after the shutdown", time.Since(start).Round(time.Millisecond))

	// Ops 1..x-1 once, x as often as it failed, nothing after it.
	calls := h.callLog()
	got := 0
	for _, c := range calls {
		if c.seq == x {
			got++
		}
	}
	h.checkCalls(t, want, x, got)
	if got < failures {
		t.Errorf("op %d called %d times, want at least %d", x, got, failures)
	}
	if h.through.Load() {
		t.Errorf("op %d applied", x)
	}
	checkRecords(t, h.fakeHandler, want, x-1)
	// The slave made what it applied durable before it stopped.
	if _, durable, _ := h.snapshot(); durable != x-1 {
		t.Errorf("durable %d at shutdown, want %d", durable, x-1)
	}
	if c := srv.log.count("master connected"); c != 1 {
		t.Errorf("the slave accepted %d master connections, want 1", c)
	}
	checkNoNewGoroutines(t, before, 30*time.Second, slaveTypes...)

	// The master lost its slave, which never applied op x: it must not
	// say the slave applies ops again (the final ack of the shutdown is
	// for op x-1 at most), and stops without leaving anything behind.
	eventually(t, 30*time.Second, "the master to see the slave go", func() bool { return m.status(0).State != "streaming" })
	st := m.status(0)
	t.Logf("master after the slave stopped: state %q applied %d cause %q last error %q", st.State, st.Applied, st.Cause, st.LastError)
	if st.Applied >= x {
		t.Errorf("the master says op %d applied", st.Applied)
	}
	if m.log.count("slave applies ops again") != 0 || st.Cause != stallMsg {
		t.Errorf("the slave never applied op %d, yet the master ended the stall: state %q cause %q (want %q); "+
			"the final ack, for op %d at most, was taken for the end of the stall", x, st.State, st.Cause, stallMsg, x-1)
	}
	m.stop(t)
	checkNoNewGoroutines(t, before, 30*time.Second, allTypes...)
}

// The slave's acks and its Stall share the control stream but not a
// goroutine: the ack writer reads where the slave stands, then takes the
// stream, and the applier may write a Stall in between (session.ackLoop,
// session.stall). So the master can read Stall{Seq: x} and then an ack
// for x-1 that was computed before it; that ack says nothing about op x
// and must not end the stall. A fake slave sends exactly that.
func TestStallOutlivesEarlierAck(t *testing.T) {
	p := newPKI(t, "stallack")
	ln, err := quic.ListenAddr("127.0.0.1:0", p.serverTLS(), fastQUIC())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const n, x = 6, 4
	sent := make(chan error, 1)
	go func() {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			sent <- err
			return
		}
		defer conn.CloseWithError(0, "")
		ctrl, err := conn.AcceptStream(context.Background())
		if err != nil {
			sent <- err
			return
		}
		fr := wire.NewFrameReader(ctrl, nil)
		if _, _, err := fr.Next(); err != nil { // Hello
			sent <- err
			return
		}
		ha := wire.HelloAck{Epoch: testEpoch, MaxPending: 64 << 20}
		if _, err := ctrl.Write(wire.AppendFrame(nil, wire.FrameHelloAck, ha.Append(nil), nil)); err != nil {
			sent <- err
			return
		}
		for range n { // ops 1..n, all small: on the control stream
			if kind, _, err := fr.Next(); err != nil || kind != wire.FrameOp {
				sent <- fmt.Errorf("reading ops: %v frame, %v", kind, err)
				return
			}
		}
		// Ops 1..x-1 applied, x stalled: the Stall first, then the ack
		// the ack writer computed before the stall began.
		stall := wire.Stall{Seq: x, Msg: stallMsg}
		ack := wire.Ack{Applied: x - 1}
		b := wire.AppendFrame(nil, wire.FrameStall, stall.Append(nil), nil)
		b = wire.AppendFrame(b, wire.FrameAck, ack.Append(nil), nil)
		_, err = ctrl.Write(b)
		sent <- err
		<-conn.Context().Done()
	}()
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: ln.Addr().String(), TLS: p.clientTLS()}}, Run: newRun(t), quic: fastQUIC()})
	for seq := uint64(1); seq <= n; seq++ {
		m.Append(seq, &wire.Mkdir{Path: fmt.Sprintf("d%d", seq), Mode: 0o755})
	}
	select {
	case err := <-sent:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the fake slave did not get its ops")
	}
	eventually(t, 30*time.Second, "the master to read the ack", func() bool { return m.status(0).Applied == x-1 })
	if st := m.status(0); st.State != "degraded" || st.Cause != stallMsg {
		t.Errorf("the slave is stalled at op %d and acknowledged op %d: state %q cause %q, want degraded and %q",
			x, x-1, st.State, st.Cause, stallMsg)
	}
}

// In fsync mode a writer does not wait for a slave that cannot apply ops
// (onStall: writers stop waiting for it at once, not after SyncTimeout):
// once the master shows it degraded, Wait returns at once. Once the op
// applies and the slave caught up with what writers waited for, it is
// streaming again and Wait waits for it again.
func TestStallWriterDoesNotWait(t *testing.T) {
	seed := stallSeed(t)
	r := mrand.New(mrand.NewPCG(seed, seed^0x3c3c))
	k := 1 + r.IntN(4)
	n := uint64(10 + r.IntN(30))
	x := 2 + r.Uint64N(n-2)
	t.Logf("%d ops, op %d fails %d times", n, x, k)
	const syncTimeout = 4 * time.Second
	p := newPKI(t, "stallwait")
	h := newStallHandler(x, k, true)
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	t.Cleanup(h.release)
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
		Run:   run, Mode: wire.ModeFsync, SyncTimeout: syncTimeout,
	})
	eventually(t, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })
	want := map[uint64][]byte{}
	g := newOpGen(seed)
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, int(n-1), 0, 0, want)
	eventually(t, 30*time.Second, "the master to show the stall", func() bool {
		st := m.status(0)
		return st.State == "degraded" && st.Cause == stallMsg
	})
	fsync := func() uint64 {
		g.seq++
		want[g.seq] = wire.AppendOp(nil, g.seq, &wire.Sync{})
		m.Append(g.seq, &wire.Sync{})
		return g.seq
	}
	seq := fsync()
	start := time.Now()
	m.Wait(seq)
	if d := time.Since(start); d > syncTimeout/2 {
		t.Errorf("Wait took %v for a slave shown degraded (stalled at op %d), SyncTimeout %v", d.Round(time.Millisecond), x, syncTimeout)
	}

	// The disk frees up: the slave applies op x and the rest, syncs at
	// the Sync op, and is streaming again.
	waitClosed(t, h.holding, 60*time.Second, fmt.Sprintf("Apply of op %d to be called %d times", x, k+1))
	h.release()
	waitDurable(t, h.fakeHandler, seq, 60*time.Second)
	eventually(t, 30*time.Second, "streaming again", func() bool {
		st := m.status(0)
		return st.State == "streaming" && st.Cause == "" && st.Durable == seq
	})
	// And writers wait for it again.
	appendOps(m.Master, g, 5, 0, 0, want)
	seq = fsync()
	m.Wait(seq)
	if _, durable, _ := h.snapshot(); durable < seq {
		t.Errorf("Wait(%d) returned with the slave durable at %d, streaming and not stalled", seq, durable)
	}
	h.checkCalls(t, want, g.seq, k+1)
	checkRecords(t, h.fakeHandler, want, g.seq)
	if c := srv.log.count("master connected"); c != 1 {
		t.Errorf("the slave accepted %d master connections, want 1", c)
	}
}
