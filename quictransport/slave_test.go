package quictransport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

// rawMaster dials srv with a valid master certificate and no protocol
// logic, to send what a real master never would.
func rawMaster(t *testing.T, p *pki, addr string) *quic.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, p.clientTLS(), fastQUIC())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	return conn
}

// hello is the Hello of a master of testEpoch, run run.
func hello(run wire.RunID) wire.Hello {
	return wire.Hello{Version: wire.Version, Epoch: testEpoch, Run: run, First: 1}
}

// rawHello opens the control stream, sends h and reads the HelloAck.
func rawHello(t *testing.T, conn *quic.Conn, h wire.Hello) (*quic.Stream, wire.HelloAck) {
	t.Helper()
	ctrl, ack, err := tryHello(conn, h)
	if err != nil {
		t.Fatal(err)
	}
	return ctrl, ack
}

func tryHello(conn *quic.Conn, h wire.Hello) (*quic.Stream, wire.HelloAck, error) {
	ctrl, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		return nil, wire.HelloAck{}, err
	}
	if _, err := ctrl.Write(wire.AppendFrame(nil, wire.FrameHello, h.Append(nil), nil)); err != nil {
		return nil, wire.HelloAck{}, err
	}
	ctrl.SetReadDeadline(time.Now().Add(60 * time.Second))
	kind, body, err := wire.NewFrameReader(ctrl, nil).Next()
	if err != nil {
		return nil, wire.HelloAck{}, fmt.Errorf("reading hello-ack: %w", err)
	}
	switch kind {
	case wire.FrameHelloAck:
	case wire.FrameError:
		return nil, wire.HelloAck{}, peerError(body)
	default:
		return nil, wire.HelloAck{}, fmt.Errorf("%v frame instead of hello-ack", kind)
	}
	ack, err := wire.ParseHelloAck(body)
	return ctrl, ack, err
}

func itemFrame(after uint64, it wire.ResyncItem) []byte {
	return wire.AppendFrame(nil, wire.FrameResync, wire.AppendResyncItem(nil, after, it), nil)
}

func opFrame(seq uint64, op wire.Op) []byte {
	return wire.AppendFrame(nil, wire.FrameOp, wire.AppendOp(nil, seq, op), nil)
}

// Garbage from an authenticated peer closes that connection with one log
// line naming the peer and the reason; the slave keeps serving, and a good
// master works afterwards.
func TestServerGarbage(t *testing.T) {
	p := newPKI(t, "garbage")
	run := newRun(t)
	h := newStateHandler(SlaveState{Epoch: testEpoch, Run: run, Applied: 10, Durable: 10}) // the slave is at op 10 of run
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, MaxPending: minPending})
	addr := srv.Addr().String()

	oversized := append([]byte{byte(wire.FrameOp), 0}, binary.AppendUvarint(nil, wire.MaxFrameLen+1)...)
	big := make([]byte, wire.MaxWriteLen)
	cases := []struct {
		name  string
		hello bool
		send  func(ctrl *quic.Stream, conn *quic.Conn) error
		code  wire.ErrorCode
		log   string
	}{
		{"junk instead of hello", false, func(c *quic.Stream, _ *quic.Conn) error {
			_, err := c.Write([]byte("\xffGET / HTTP/1.1\r\n\r\n"))
			return err
		}, wire.CodeProtocol, "reading hello: wire: malformed input: unknown frame kind 255"},
		{"oversized frame length", true, func(c *quic.Stream, _ *quic.Conn) error {
			_, err := c.Write(oversized)
			return err
		}, wire.CodeProtocol, "exceeds"},
		{"unknown frame kind", true, func(c *quic.Stream, _ *quic.Conn) error {
			_, err := c.Write([]byte{99, 0, 0})
			return err
		}, wire.CodeProtocol, "unknown frame kind 99"},
		{"frame kind a master never sends", true, func(c *quic.Stream, _ *quic.Conn) error {
			a := wire.Ack{Applied: 1}
			_, err := c.Write(wire.AppendFrame(nil, wire.FrameAck, a.Append(nil), nil))
			return err
		}, wire.CodeProtocol, "unexpected ack frame from the master"},
		{"write below next", true, func(c *quic.Stream, _ *quic.Conn) error {
			_, err := c.Write(opFrame(5, &wire.Write{Handle: 1, Data: []byte("late")}))
			return err
		}, wire.CodeProtocol, "op 5 (write) arrived but the next op expected is 11"},
		{"malformed op on a data stream", true, func(_ *quic.Stream, conn *quic.Conn) error {
			s, err := conn.OpenUniStreamSync(context.Background())
			if err != nil {
				return err
			}
			s.Write(wire.AppendFrame(nil, wire.FrameOp, []byte{11, 200}, nil)) // seq 11, op type 200
			return s.Close()
		}, wire.CodeProtocol, "unknown op type 200"},
		{"more than MaxPending ahead", true, func(c *quic.Stream, conn *quic.Conn) error {
			for i := range uint64(3) {
				s, err := conn.OpenUniStreamSync(context.Background())
				if err != nil {
					return err
				}
				s.Write(opFrame(100+i, &wire.Write{Handle: 1, Data: big}))
				s.Close()
			}
			return nil
		}, wire.CodeLimit, "beyond the"},
		{"resync reply from the master", true, func(c *quic.Stream, _ *quic.Conn) error {
			r := wire.ResyncDirDone{Pass: 1, DirID: 1}
			_, err := c.Write(wire.AppendFrame(nil, wire.FrameResyncReply, wire.AppendResyncReply(nil, &r), nil))
			return err
		}, wire.CodeProtocol, "unexpected resync-reply frame from the master"},
		{"malformed resync item", true, func(c *quic.Stream, _ *quic.Conn) error {
			_, err := c.Write(wire.AppendFrame(nil, wire.FrameResync, []byte{20, 99}, nil))
			return err
		}, wire.CodeProtocol, "unknown resync item kind 99"},
		{"resync items out of position order", true, func(c *quic.Stream, _ *quic.Conn) error {
			// Neither is due (the slave is at op 10): nothing reaches the
			// handler, the second is refused as it arrives.
			_, err := c.Write(append(itemFrame(20, &wire.ResyncBegin{Pass: 1}), itemFrame(15, &wire.ResyncEnd{Pass: 1})...))
			return err
		}, wire.CodeProtocol, "resync item positioned after op 15 follows one positioned after op 20"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.log.count("closing master connection")
			conn := rawMaster(t, p, addr)
			var ctrl *quic.Stream
			if tc.hello {
				var ack wire.HelloAck
				ctrl, ack = rawHello(t, conn, hello(run))
				if ack.Epoch != testEpoch || ack.Run != run || ack.Applied != 10 || ack.Durable != 10 || ack.Resyncing {
					t.Fatalf("hello-ack %+v, want epoch/run/10/10", ack)
				}
			} else {
				var err error
				if ctrl, err = conn.OpenStreamSync(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			if err := tc.send(ctrl, conn); err != nil {
				t.Fatal(err)
			}
			cause := closeCause(t, conn, 60*time.Second)
			if code, ok := appErrorCode(cause); !ok || code != tc.code {
				t.Fatalf("connection closed by %v, want the slave's %v", cause, tc.code)
			}
			eventually(t, 10*time.Second, "the log line", func() bool {
				return srv.log.count("closing master connection") == before+1
			})
			var line string
			for _, l := range strings.Split(srv.log.String(), "\n") {
				if strings.Contains(l, "closing master connection") {
					line = l
				}
			}
			if !strings.Contains(line, tc.log) || !strings.Contains(line, `CN \"garbage-master\"`) || !strings.Contains(line, "127.0.0.1:") {
				t.Fatalf("log line %q lacks the reason %q or the peer", line, tc.log)
			}
		})
	}
	if recs, _, errs := h.snapshot(); len(recs) != 0 || len(errs) != 0 || len(h.items()) != 0 {
		t.Fatalf("garbage reached the handler: %d ops, %d items, %v", len(recs), len(h.items()), errs)
	}

	// The slave still serves a good master (the same run, which numbered
	// ops 1..10 already), which resumes at op 11.
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: addr, TLS: p.clientTLS()}}, Run: run, Head: 10})
	want := map[uint64][]byte{}
	g := newOpGen(9)
	g.seq = 10
	appendOps(m.Master, g, 50, 10, 128<<10, want)
	waitApplied(t, h, g.seq, 60*time.Second)
	recs, _, errs := h.snapshot()
	if len(errs) != 0 || len(recs) != 50 || recs[0].seq != 11 {
		t.Fatalf("good master after garbage: %d ops from %d, errors %v", len(recs), recs[0].seq, errs)
	}
}

// A new authenticated connection replaces the current one: the old
// applier stops after the op in hand, the old connection is closed, ops it
// had buffered are discarded, and the new one learns the in-memory applied
// seq (not only the durable one).
func TestServerNewConnectionReplacesOld(t *testing.T) {
	p := newPKI(t, "replace")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	addr := srv.Addr().String()
	run := newRun(t)
	release := h.blockAt(40)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: addr, TLS: p.clientTLS()}}, Run: run, quic: fastQUIC()})
	g := newOpGen(10)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 199, 10, 128<<10, want)
	h.waitFor(t, 60*time.Second, "Apply blocked at op 40", func(h *fakeHandler) bool { return h.blocked })
	eventually(t, 60*time.Second, "ops buffered beyond 40", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		pending, _ := srv.cur.rb.stats()
		return pending > 0
	})

	conn := rawMaster(t, p, addr)
	type result struct {
		ack wire.HelloAck
		err error
	}
	got := make(chan result, 1)
	go func() {
		_, ack, err := tryHello(conn, hello(run))
		got <- result{ack, err}
	}()
	eventually(t, 30*time.Second, "the replacement log", func() bool {
		return strings.Contains(srv.log.String(), "a new master connection replaces the current one")
	})
	release()
	var r result
	select {
	case r = <-got:
	case <-time.After(60 * time.Second):
		t.Fatal("no hello-ack for the new connection")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.ack.Epoch != testEpoch || r.ack.Run != run || r.ack.Applied != 40 || r.ack.Durable != 0 {
		t.Fatalf("hello-ack %+v, want run, applied 40 (in memory), durable 0", r.ack)
	}
	eventually(t, 30*time.Second, "the master to see the replacement", func() bool {
		return strings.Contains(m.status(0).LastError, "replaced by a newer connection")
	})
	conn.CloseWithError(0, "done")
	// The master comes back and resumes at 41: nothing twice, nothing lost.
	waitApplied(t, h, g.seq, 60*time.Second)
	checkRecords(t, h, want, g.seq)
}

// NewSlave reports an unusable address at once.
func TestNewServerBindError(t *testing.T) {
	p := newPKI(t, "bind")
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = NewSlave(SlaveConfig{Listen: c.LocalAddr().String(), TLS: p.serverTLS(), Handler: newFakeHandler()})
	if err == nil || !strings.Contains(err.Error(), "cannot listen on UDP "+c.LocalAddr().String()) {
		t.Fatalf("NewSlave on a busy port: %v", err)
	}
	_, err = NewSlave(SlaveConfig{Listen: "127.0.0.1:0", TLS: p.serverTLS(), Handler: newFakeHandler(), MaxPending: 1 << 20})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("tiny MaxPending: %v", err)
	}
	s, err := NewSlave(SlaveConfig{Listen: "127.0.0.1:0", TLS: p.serverTLS(), Handler: newFakeHandler()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.Close() // twice is fine
}

// Serve returns nil when its context ends, having synced what it applied.
func TestServeShutdownSyncs(t *testing.T) {
	p := newPKI(t, "shutdown")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	run := newRun(t)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: run})
	g := newOpGen(11)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 29, 0, 0, want)
	waitApplied(t, h, 30, 30*time.Second)
	if _, durable, _ := h.snapshot(); durable != 0 {
		t.Fatalf("durable %d before shutdown with a long SyncInterval", durable)
	}
	if err := srv.stop(t); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if _, durable, _ := h.snapshot(); durable != 30 {
		t.Fatalf("durable %d after shutdown, want 30", durable)
	}
	eventually(t, 10*time.Second, "the final ack at the master", func() bool { return m.status(0).Durable == 30 })
}

// A connection that never says Hello holds up nobody: the next master is
// served at once, and a shutdown closes the silent one without waiting
// for the hello timeout.
func TestServerSilentConnectionReplaced(t *testing.T) {
	p := newPKI(t, "silent")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	addr := srv.Addr().String()
	silent := rawMaster(t, p, addr)
	// Accepted and waiting for its Hello (the client may finish its
	// handshake before the server does: a shutdown before then refuses
	// the connection instead).
	eventually(t, 10*time.Second, "the silent connection accepted", func() bool { return len(srv.helloSlots) == 1 })
	run := newRun(t)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: addr, TLS: p.clientTLS()}}, Run: run})
	m.Append(1, &wire.Mkdir{Path: "a", Mode: 0o755})
	waitApplied(t, h, 1, 60*time.Second)
	start := time.Now()
	if err := srv.stop(t); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if took := time.Since(start); took >= helloTimeout {
		t.Fatalf("shutdown waited %v for the silent connection", took)
	}
	if cause := closeCause(t, silent, 30*time.Second); !strings.Contains(cause.Error(), "shutting down") {
		t.Fatalf("silent connection closed with %v", cause)
	}
}
