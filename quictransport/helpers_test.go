package quictransport

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/certs"
	"github.com/tdfs/tdfs/journal"
	"github.com/tdfs/tdfs/wire"
)

// ---- certificates ----

type pki struct {
	ca                *certs.CA
	master, slave     tls.Certificate
	masterCN, slaveCN string
}

func pair(cert *x509.Certificate, key crypto.Signer) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

func newPKI(t testing.TB, name string) *pki {
	t.Helper()
	ca, err := certs.NewCA(name+" CA", certs.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{ca: ca, masterCN: name + "-master", slaveCN: name + "-slave"}
	p.master = p.issue(t, certs.IssueOptions{Name: p.masterCN, Role: certs.RoleMaster})
	p.slave = p.issue(t, certs.IssueOptions{Name: p.slaveCN, Hosts: []string{"127.0.0.1"}, Role: certs.RoleSlave})
	return p
}

func (p *pki) issue(t testing.TB, o certs.IssueOptions) tls.Certificate {
	t.Helper()
	c, k, err := p.ca.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	return pair(c, k)
}

func (p *pki) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.Cert)
	return pool
}

func (p *pki) serverTLS() *tls.Config { return certs.ServerConfig(p.slave, p.pool(), nil) }
func (p *pki) clientTLS() *tls.Config { return certs.ClientConfig(p.master, p.pool(), "127.0.0.1") }

// ---- a fake Handler recording what it is given ----

// testEpoch is the epoch of test masters (startMaster) and of the slaves
// newFakeHandler makes: a replica already in sync with it at seq 0.
var testEpoch = wire.Epoch{'t', 'e', 's', 't'}

type record struct {
	seq  uint64
	body []byte // wire.AppendOp(nil, seq, op): a deep copy
}

// event is one Handler call that changes the tree, in call order: an op
// (item nil) or a resync item positioned after op at.
type event struct {
	at   uint64
	item wire.ResyncItem
}

// fakeHandler is a Handler that applies nothing: it records ops and items,
// keeps a SlaveState the way cmd/tdfs-slave's handler does, and notes
// every breach of the Handler contract it can see (errs).
type fakeHandler struct {
	mu      sync.Mutex
	st      SlaveState
	records []record
	events  []event
	syncs   []uint64
	follows []wire.Epoch
	// passes lists the ResyncBegin items handled; pass and verify are the
	// current pass.
	passes    []wire.ResyncBegin
	pass      uint64
	verify    bool
	itemBytes int64             // itemSize of every item handled
	diffs     []wire.Difference // replied with every ResyncDirDone of a verify pass
	errs      []string          // contract violations seen
	changed   chan struct{}
	applyGate chan struct{} // when non-nil, Apply waits for it to be closed
	syncGate  chan struct{} // when non-nil, Sync waits for it to be closed
	dirGate   chan struct{} // when non-nil, Resync of a ResyncDir waits for it to be closed
	blockSeq  uint64        // Apply of this seq waits for blockGate
	blockGate chan struct{}
	blocked   bool // Apply is waiting at blockSeq
}

var _ Handler = (*fakeHandler)(nil)

// newFakeHandler returns a slave in sync with testEpoch at seq 0.
func newFakeHandler() *fakeHandler {
	return &fakeHandler{changed: make(chan struct{}), st: SlaveState{Epoch: testEpoch}}
}

// newStateHandler returns a slave that stands at st.
func newStateHandler(st SlaveState) *fakeHandler {
	h := newFakeHandler()
	h.st = st
	return h
}

// blockAt makes Apply of op seq wait until the returned func is called.
func (h *fakeHandler) blockAt(seq uint64) (release func()) {
	gate := make(chan struct{})
	h.mu.Lock()
	h.blockSeq, h.blockGate = seq, gate
	h.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(gate) }) }
}

func (h *fakeHandler) notifyLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *fakeHandler) violationLocked(format string, args ...any) {
	h.errs = append(h.errs, fmt.Sprintf(format, args...))
}

func (h *fakeHandler) State() SlaveState {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.st
	st.Lineage = slices.Clone(st.Lineage)
	return st
}

// Follow does what cmd/tdfs-slave's handler does: a new epoch and lineage,
// no run, and a tree that needs a resync.
func (h *fakeHandler) Follow(epoch wire.Epoch, lineage []wire.Epoch) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st.Epoch, h.st.Lineage, h.st.Run, h.st.Resyncing = epoch, slices.Clone(lineage), wire.RunID{}, true
	h.follows = append(h.follows, epoch)
	h.notifyLocked()
	return nil
}

func (h *fakeHandler) Apply(seq uint64, op wire.Op) error {
	h.mu.Lock()
	gate := h.applyGate
	if seq == h.blockSeq && h.blockGate != nil {
		h.blocked = true
		h.notifyLocked()
		bg := h.blockGate
		h.mu.Unlock()
		<-bg
		h.mu.Lock()
		h.blocked = false
	}
	h.mu.Unlock()
	if gate != nil {
		<-gate
	}
	body := wire.AppendOp(nil, seq, op)
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := op.(*wire.Sync); ok {
		h.violationLocked("Sync op %d passed to Apply", seq)
	}
	// The seqs skipped are Sync ops: counted by Sync, at once or, in
	// async mode, with a later one (Handler.Apply).
	if seq <= h.st.Applied {
		h.violationLocked("op %d applied after op %d", seq, h.st.Applied)
	}
	if rs, ok := op.(*wire.RunStart); ok {
		h.st.Run = rs.Run
	}
	h.st.Applied = seq
	h.records = append(h.records, record{seq: seq, body: body})
	h.events = append(h.events, event{at: seq})
	h.notifyLocked()
	return nil
}

func (h *fakeHandler) Sync(seq uint64) error {
	h.mu.Lock()
	gate := h.syncGate
	h.mu.Unlock()
	if gate != nil {
		<-gate
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if seq < h.st.Durable {
		h.violationLocked("sync %d after %d", seq, h.st.Durable)
	}
	// Sync ops count as applied (they are never passed to Apply).
	h.st.Applied = max(h.st.Applied, seq)
	h.st.Durable = seq
	h.syncs = append(h.syncs, seq)
	h.notifyLocked()
	return nil
}

// ApplyItem checks that every item is handled at its position (after op at,
// before op at+1), moves the op stream at a rebasing ResyncBegin, answers
// every final ResyncDir with a ResyncDirDone, and leaves the resyncing
// state at the ResyncEnd of a repair pass.
func (h *fakeHandler) ApplyItem(at uint64, it wire.ResyncItem, reply func(wire.ResyncReply) error) error {
	h.mu.Lock()
	gate := h.dirGate
	h.mu.Unlock()
	if _, ok := it.(*wire.ResyncDir); ok && gate != nil {
		<-gate
	}
	h.mu.Lock()
	var r wire.ResyncReply
	switch it := it.(type) {
	case *wire.ResyncBegin:
		// A pass may begin while another was abandoned (a connection
		// lost in the middle): that is not a violation.
		h.pass, h.verify = it.Pass, it.Verify
		h.passes = append(h.passes, *it)
		if it.Rebase {
			// After a rebase the slave's ops are those of the master's
			// run at the item's position (HelloAck.Run).
			h.st.Applied, h.st.Durable, h.st.Resyncing, h.st.Run = at, at, true, it.Run
		}
	case *wire.ResyncDir:
		if it.Final {
			done := &wire.ResyncDirDone{Pass: it.Pass, DirID: it.DirID}
			if h.verify {
				done.Diffs = h.diffs
			}
			r = done
		}
	case *wire.ResyncEnd:
		if !h.verify {
			h.st.Resyncing = false
		}
	}
	if p := it.InPass(); p != h.pass {
		h.violationLocked("%T of pass %d inside pass %d", it, p, h.pass)
	}
	if at != h.st.Applied {
		h.violationLocked("%T positioned after op %d handled after op %d", it, at, h.st.Applied)
	}
	h.events = append(h.events, event{at: at, item: it})
	h.itemBytes += itemSize(it)
	h.notifyLocked()
	h.mu.Unlock()
	if r != nil {
		return reply(r)
	}
	return nil
}

// itemSize is what the fake Tree reserves for an item: its encoding.
func itemSize(it wire.ResyncItem) int64 { return int64(len(wire.AppendResyncItem(nil, 0, it))) }

func (h *fakeHandler) setGates(apply, sync chan struct{}) {
	h.mu.Lock()
	h.applyGate, h.syncGate = apply, sync
	h.mu.Unlock()
}

func (h *fakeHandler) snapshot() (recs []record, durable uint64, errs []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.records), h.st.Durable, slices.Clone(h.errs)
}

func (h *fakeHandler) state() SlaveState { return h.State() }

// followed returns the epochs Follow was called with.
func (h *fakeHandler) followed() []wire.Epoch {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.follows)
}

// items returns the resync items handled, with their positions.
func (h *fakeHandler) items() []event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []event
	for _, e := range h.events {
		if e.item != nil {
			out = append(out, e)
		}
	}
	return out
}

// waitFor waits until cond holds on the handler (called with h.mu held).
func (h *fakeHandler) waitFor(t *testing.T, timeout time.Duration, what string, cond func(h *fakeHandler) bool) {
	t.Helper()
	ok := awaitChange(timeout, func() (bool, <-chan struct{}) {
		h.mu.Lock()
		defer h.mu.Unlock()
		return cond(h), h.changed
	})
	if !ok {
		h.mu.Lock()
		defer h.mu.Unlock()
		t.Fatalf("timed out after %v waiting for %s (handler: %+v, %d records, errs %v)",
			timeout, what, h.st, len(h.records), h.errs)
	}
}

// awaitChange reports whether a condition holds within timeout. state
// returns the condition and a channel closed at the next change that may
// affect it (taken together, under its owner's lock), so the condition is
// checked at every change rather than polled.
func awaitChange(timeout time.Duration, state func() (bool, <-chan struct{})) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ok, changed := state()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			ok, _ = state()
			return ok
		}
	}
}

// checkClean fails the test if the handler saw a contract violation.
func (h *fakeHandler) checkClean(t *testing.T) {
	t.Helper()
	if _, _, errs := h.snapshot(); len(errs) > 0 {
		t.Fatalf("handler saw contract violations: %v", errs)
	}
}

// ---- logs ----

type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuf) count(s string) int { return strings.Count(l.String(), s) }

func newLogger(t testing.TB, name string) (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, lb.String())
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// ---- waiting ----

// eventually polls cond until it holds or timeout passes. Polling is for
// state with no change notification (Status, logs); the interval is not a
// timing assumption.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---- servers and masters ----

type testServer struct {
	*Slave
	log    *logBuf
	cancel context.CancelFunc
	done   chan error
}

func startServer(t testing.TB, cfg SlaveConfig) *testServer {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	var lb *logBuf
	if cfg.Logger == nil {
		cfg.Logger, lb = newLogger(t, "slave "+cfg.Listen)
	}
	s, err := NewSlave(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Slave: s, log: lb, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop cancels Serve and waits for it to return.
func (ts *testServer) stop(t testing.TB) error {
	t.Helper()
	ts.cancel()
	select {
	case err, ok := <-ts.done:
		if ok {
			close(ts.done)
		}
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

type testMaster struct {
	*Master
	log    *logBuf
	cancel context.CancelFunc
	done   chan struct{}
}

// startMaster runs a master of testEpoch (unless cfg names an epoch).
func startMaster(t testing.TB, cfg MasterConfig) *testMaster {
	t.Helper()
	return startMasterTree(t, cfg, nil)
}

// startMasterTree runs a master that resynchronises slaves from tree (set
// before Run, so that no slave is judged without it).
func startMasterTree(t testing.TB, cfg MasterConfig, tree Tree) *testMaster {
	t.Helper()
	if cfg.Epoch == (wire.Epoch{}) {
		cfg.Epoch = testEpoch
	}
	var lb *logBuf
	if cfg.Logger == nil {
		cfg.Logger, lb = newLogger(t, "master")
	}
	m, err := NewMaster(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if tree != nil {
		m.SetTree(tree)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tm := &testMaster{Master: m, log: lb, cancel: cancel, done: make(chan struct{})}
	go func() { m.Run(ctx); close(tm.done) }()
	t.Cleanup(func() { tm.stop(t) })
	return tm
}

func (tm *testMaster) stop(t testing.TB) {
	t.Helper()
	tm.cancel()
	select {
	case <-tm.done:
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return")
	}
}

func (tm *testMaster) status(i int) PeerStatus { return tm.Status()[i] }

func newRun(t testing.TB) wire.RunID {
	var r wire.RunID
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatal(err)
	}
	return r
}

func newEpoch(t *testing.T) wire.Epoch { return wire.Epoch(newRun(t)) }

// freePort returns a UDP address on 127.0.0.1 nothing listens on (now).
func freePort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}

// fastQUIC is the production config with quicker failure detection, so
// tests of absent or vanished peers do not wait 5-15 s per attempt.
func fastQUIC() *quic.Config {
	c := quicConfig()
	c.HandshakeIdleTimeout = time.Second
	c.MaxIdleTimeout = 3 * time.Second
	c.KeepAlivePeriod = 500 * time.Millisecond
	return c
}

// ---- ops ----

// opGen makes a reproducible mix of ops: namespace ops, small writes and
// large writes (data streams), some compressible.
type opGen struct {
	r   *mrand.Rand
	seq uint64
}

func newOpGen(seed uint64) *opGen { return &opGen{r: mrand.New(mrand.NewPCG(seed, seed^0x9e3779b9))} }

func (g *opGen) data(n int) []byte {
	b := make([]byte, n)
	if g.r.IntN(2) == 0 {
		// compressible: a short pattern repeated
		pat := []byte(fmt.Sprintf("tdfs %d ", g.r.IntN(1000)))
		for i := range b {
			b[i] = pat[i%len(pat)]
		}
		return b
	}
	for i := range b {
		b[i] = byte(g.r.Uint32())
	}
	return b
}

// next returns the next op; large is the share (0..100) of large writes.
func (g *opGen) next(large int, bigSize int) (uint64, wire.Op) {
	g.seq++
	mt := wire.Time{Sec: int64(g.seq), Nsec: 1}
	var op wire.Op
	switch k := g.r.IntN(100); {
	case k < large:
		op = &wire.Write{Handle: 7, Off: int64(g.seq) << 20, Data: g.data(bigSize/2 + g.r.IntN(bigSize/2+1)), Mtime: mt}
	case k < large+30:
		op = &wire.Write{Handle: 7, Off: int64(g.seq), Data: g.data(1 + g.r.IntN(4000)), Mtime: mt}
	case k < large+45:
		op = &wire.Mkdir{Path: fmt.Sprintf("d%d", g.seq), Mode: 0o755, Mtime: mt, DirMtime: mt}
	case k < large+60:
		op = &wire.Create{Path: fmt.Sprintf("d/f%d", g.seq), Handle: g.seq, Mode: 0o644, Mtime: mt, DirMtime: mt}
	case k < large+75:
		op = &wire.Rename{OldPath: fmt.Sprintf("a%d", g.seq), NewPath: fmt.Sprintf("b/c%d", g.seq), OldDirMtime: mt, NewDirMtime: mt}
	case k < large+85:
		op = &wire.Setattr{Path: "x", Valid: wire.SetMode, Mode: 0o600, Mtime: mt}
	default:
		op = &wire.Release{Handle: g.seq}
	}
	return g.seq, op
}

// appendOps appends n generated ops and returns their encodings by seq.
func appendOps(m *Master, g *opGen, n, large, bigSize int, want map[uint64][]byte) {
	for range n {
		seq, op := g.next(large, bigSize)
		want[seq] = wire.AppendOp(nil, seq, op)
		m.Append(seq, op)
	}
}

// startRun appends the RunStart op a master run begins with (mirrorfs
// numbers it Head+1).
func startRun(m *Master, g *opGen, run wire.RunID, want map[uint64][]byte) {
	g.seq++
	op := &wire.RunStart{Run: run}
	want[g.seq] = wire.AppendOp(nil, g.seq, op)
	m.Append(g.seq, op)
}

// checkRecords checks that h applied exactly ops 1..n, in order, with the
// wanted contents (Sync ops excepted: they never reach Apply).
func checkRecords(t *testing.T, h *fakeHandler, want map[uint64][]byte, n uint64) {
	t.Helper()
	checkRange(t, h, want, 1, n)
}

// checkRange checks that the ops h applied numbered from..to are exactly
// those of want, in order, and that h saw no contract violation.
func checkRange(t *testing.T, h *fakeHandler, want map[uint64][]byte, from, to uint64) {
	t.Helper()
	recs, _, errs := h.snapshot()
	if len(errs) > 0 {
		t.Fatalf("handler saw contract violations: %v", errs)
	}
	var got []record
	for _, r := range recs {
		if r.seq >= from && r.seq <= to {
			got = append(got, r)
		}
	}
	applied := 0
	for seq := from; seq <= to; seq++ {
		w, ok := want[seq]
		if !ok {
			t.Fatalf("test bug: op %d not in want", seq)
		}
		if _, isSync := mustParse(t, w).(*wire.Sync); isSync {
			continue
		}
		if applied >= len(got) {
			t.Fatalf("op %d never applied (%d of %d..%d applied)", seq, len(got), from, to)
		}
		r := got[applied]
		applied++
		if r.seq != seq {
			t.Fatalf("applied op %d where op %d was expected", r.seq, seq)
		}
		if !bytes.Equal(r.body, w) {
			t.Fatalf("op %d applied with different contents", seq)
		}
	}
	if applied != len(got) {
		t.Fatalf("%d ops of %d..%d applied, want %d", len(got), from, to, applied)
	}
}

func mustParse(t *testing.T, body []byte) wire.Op {
	t.Helper()
	_, op, err := wire.ParseOp(body)
	if err != nil {
		t.Fatal(err)
	}
	return op
}

// waitApplied waits until h applied op seq (or synced through it).
func waitApplied(t *testing.T, h *fakeHandler, seq uint64, timeout time.Duration) {
	t.Helper()
	h.waitFor(t, timeout, fmt.Sprintf("op %d applied", seq), func(h *fakeHandler) bool {
		return h.st.Applied >= seq
	})
}

// waitDurable waits until h made op seq durable.
func waitDurable(t *testing.T, h *fakeHandler, seq uint64, timeout time.Duration) {
	t.Helper()
	h.waitFor(t, timeout, fmt.Sprintf("op %d durable", seq), func(h *fakeHandler) bool {
		return h.st.Durable >= seq
	})
}

// openJournal opens a journal in a new temporary directory.
func openJournal(t *testing.T, dir string, o journal.Options) *journal.Journal {
	t.Helper()
	j, err := journal.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// closeCause waits for conn to close and returns why.
func closeCause(t *testing.T, conn *quic.Conn, timeout time.Duration) error {
	t.Helper()
	select {
	case <-conn.Context().Done():
		return context.Cause(conn.Context())
	case <-time.After(timeout):
		t.Fatal("connection not closed")
		return nil
	}
}

func appErrorCode(err error) (wire.ErrorCode, bool) {
	ae, ok := errors.AsType[*quic.ApplicationError](err)
	if !ok || !ae.Remote {
		return 0, false
	}
	return wire.ErrorCode(ae.ErrorCode), true
}
