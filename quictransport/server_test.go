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

	"github.com/tdfs/tdfs/quictransport/wire"
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

// rawHello opens the control stream, sends Hello and reads the HelloAck.
func rawHello(t *testing.T, conn *quic.Conn, run wire.RunID, first uint64) (*quic.Stream, wire.HelloAck) {
	t.Helper()
	ctrl, ack, err := tryHello(conn, run, first)
	if err != nil {
		t.Fatal(err)
	}
	return ctrl, ack
}

func tryHello(conn *quic.Conn, run wire.RunID, first uint64) (*quic.Stream, wire.HelloAck, error) {
	ctrl, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		return nil, wire.HelloAck{}, err
	}
	h := wire.Hello{Version: wire.Version, Run: run, First: first}
	if _, err := ctrl.Write(wire.AppendFrame(nil, wire.FrameHello, h.Append(nil), nil)); err != nil {
		return nil, wire.HelloAck{}, err
	}
	ctrl.SetReadDeadline(time.Now().Add(60 * time.Second))
	kind, body, err := wire.NewFrameReader(ctrl, nil).Next()
	if err != nil {
		return nil, wire.HelloAck{}, fmt.Errorf("reading hello-ack: %w", err)
	}
	if kind != wire.FrameHelloAck {
		return nil, wire.HelloAck{}, fmt.Errorf("%v frame instead of hello-ack", kind)
	}
	ack, err := wire.ParseHelloAck(body)
	return ctrl, ack, err
}

func opFrame(seq uint64, op wire.Op) []byte {
	return wire.AppendFrame(nil, wire.FrameOp, wire.AppendOp(nil, seq, op), nil)
}

// Garbage from an authenticated peer closes that connection with one log
// line naming the peer and the reason; the slave keeps serving, and a good
// master works afterwards.
func TestServerGarbage(t *testing.T) {
	p := newPKI(t, "garbage")
	h := newFakeHandler()
	run := newRun(t)
	h.run, h.durable, h.lastSeq = run, 10, 10 // the slave is at op 10 of run
	srv := startServer(t, ServerConfig{TLS: p.serverTLS(), Handler: h, MaxPending: minPending})
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
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.log.count("closing master connection")
			conn := rawMaster(t, p, addr)
			var ctrl *quic.Stream
			if tc.hello {
				var ack wire.HelloAck
				ctrl, ack = rawHello(t, conn, run, 1)
				if ack.Run != run || ack.Applied != 10 || ack.Durable != 10 {
					t.Fatalf("hello-ack %+v, want run/10/10", ack)
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
	if recs, _, errs := h.snapshot(); len(recs) != 0 || len(errs) != 0 {
		t.Fatalf("garbage reached the handler: %d ops, %v", len(recs), errs)
	}

	// The slave still serves a good master, which resumes at op 11.
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: addr, TLS: p.clientTLS()}}, Run: run})
	want := map[uint64][]byte{}
	g := newOpGen(9)
	appendOps(m.Master, g, 10, 0, 0, want) // ops 1..10: the slave has them
	appendOps(m.Master, g, 50, 10, 128<<10, want)
	waitApplied(t, h, run, g.seq, 60*time.Second)
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
	srv := startServer(t, ServerConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	addr := srv.Addr().String()
	run := newRun(t)
	release := h.blockAt(40)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: addr, TLS: p.clientTLS()}}, Run: run, quic: fastQUIC()})
	g := newOpGen(10)
	want := map[uint64][]byte{}
	appendOps(m.Master, g, 200, 10, 128<<10, want)
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
		_, ack, err := tryHello(conn, run, 1)
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
	if r.ack.Run != run || r.ack.Applied != 40 || r.ack.Durable != 0 {
		t.Fatalf("hello-ack %+v, want run, applied 40 (in memory), durable 0", r.ack)
	}
	eventually(t, 30*time.Second, "the master to see the replacement", func() bool {
		return strings.Contains(m.status(0).LastError, "replaced by a newer connection")
	})
	conn.CloseWithError(0, "done")
	// The master comes back and resumes at 41: nothing twice, nothing lost.
	waitApplied(t, h, run, g.seq, 60*time.Second)
	checkRecords(t, h, run, want, g.seq)
}

// NewServer reports an unusable address at once.
func TestNewServerBindError(t *testing.T) {
	p := newPKI(t, "bind")
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = NewServer(ServerConfig{Listen: c.LocalAddr().String(), TLS: p.serverTLS(), Handler: newFakeHandler()})
	if err == nil || !strings.Contains(err.Error(), "cannot listen on UDP "+c.LocalAddr().String()) {
		t.Fatalf("NewServer on a busy port: %v", err)
	}
	_, err = NewServer(ServerConfig{Listen: "127.0.0.1:0", TLS: p.serverTLS(), Handler: newFakeHandler(), MaxPending: 1 << 20})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("tiny MaxPending: %v", err)
	}
	s, err := NewServer(ServerConfig{Listen: "127.0.0.1:0", TLS: p.serverTLS(), Handler: newFakeHandler()})
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
	srv := startServer(t, ServerConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	run := newRun(t)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: run})
	g := newOpGen(11)
	want := map[uint64][]byte{}
	appendOps(m.Master, g, 30, 0, 0, want)
	waitApplied(t, h, run, 30, 30*time.Second)
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

// A connection that never says Hello is replaced at once by the next one:
// the master does not wait for the hello timeout.
func TestServerSilentConnectionReplaced(t *testing.T) {
	p := newPKI(t, "silent")
	h := newFakeHandler()
	srv := startServer(t, ServerConfig{TLS: p.serverTLS(), Handler: h})
	addr := srv.Addr().String()
	silent := rawMaster(t, p, addr)
	eventually(t, 30*time.Second, "the silent connection to be accepted", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.cur != nil
	})
	run := newRun(t)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: addr, TLS: p.clientTLS()}}, Run: run})
	m.Append(1, &wire.Mkdir{Path: "a", Mode: 0o755})
	waitApplied(t, h, run, 1, 60*time.Second)
	if cause := closeCause(t, silent, 30*time.Second); !strings.Contains(cause.Error(), "replaced by a newer connection") {
		t.Fatalf("silent connection closed with %v", cause)
	}
	l := srv.log.String()
	if !strings.Contains(l, "connection closed during its handshake: replaced by a newer connection") || strings.Contains(l, "closing master connection") {
		t.Fatalf("the silent connection was not replaced during its handshake:\n%s", l)
	}
}
