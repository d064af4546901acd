package quictransport

import (
	"context"
	"crypto/tls"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/certs"
	"github.com/tdfs/tdfs/wire"
)

// laneConns returns the connections of the master's current session with
// its first slave (primary first).
func laneConns(m *Master) []*quic.Conn {
	m.mu.Lock()
	ls := m.peers[0].lanes
	m.mu.Unlock()
	if ls == nil {
		return nil
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	var out []*quic.Conn
	for _, c := range ls.conns {
		out = append(out, c.conn)
	}
	return out
}

// currentSession is the slave's current master session.
func currentSession(s *Slave) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// With four lanes, many large writes spread over the four connections
// and are applied in order with their contents; status counts the lanes
// and the bytes sent on all of them.
func TestLanesReplicate(t *testing.T) {
	p := newPKI(t, "lanes")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	run := newRun(t)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: run, Lanes: 4})
	eventually(t, 30*time.Second, "four lanes up", func() bool { return m.status(0).Lanes == 4 })
	g := newOpGen(61)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 400, 40, 256<<10, want)
	waitApplied(t, h, g.seq, 120*time.Second)
	checkRecords(t, h, want, g.seq)

	conns := laneConns(m.Master)
	if len(conns) != 4 {
		t.Fatalf("%d connections, want 4", len(conns))
	}
	var total uint64
	for i, c := range conns {
		sent := c.ConnectionStats().BytesSent
		total += sent
		if sent < 2<<20 {
			t.Errorf("connection %d sent only %d bytes: data streams were not spread over the lanes", i, sent)
		}
	}
	st := m.status(0)
	if st.WireBytesSent < total {
		t.Errorf("status wire bytes sent %d, below the %d the connections sent", st.WireBytesSent, total)
	}
	if n := srv.log.count("lane connected"); n != 3 {
		t.Errorf("the slave logged %d lanes connected, want 3", n)
	}
}

// Through a relay with latency and loss, four lanes still deliver every
// op in order.
func TestLanesThroughLossyRelay(t *testing.T) {
	m := deliverThroughLoss(t, 4, 0.01, 62, 300, 30, 256<<10)
	if st := m.status(0); st.Lanes < 2 {
		t.Errorf("%d lanes at the end, want several", st.Lanes)
	}
}

// A slave that allows no lanes (MaxLanes 1) serves a master that asks for
// four on one connection.
func TestLanesNotGranted(t *testing.T) {
	p := newPKI(t, "nolanes")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, MaxLanes: 1})
	run := newRun(t)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: run, Lanes: 4})
	g := newOpGen(63)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 100, 30, 128<<10, want)
	waitApplied(t, h, g.seq, 60*time.Second)
	checkRecords(t, h, want, g.seq)
	if st := m.status(0); st.Lanes != 1 {
		t.Errorf("%d lanes, want 1", st.Lanes)
	}
	if !strings.Contains(m.log.String(), "the slave grants 1 of the 4 lanes asked") {
		t.Errorf("the master did not log the grant:\n%s", m.log)
	}
}

// dialRogueLane opens a lane to srv with tlsConf and tok, and returns the
// slave's answer (FrameError also when the connection closed first) and
// why the connection closed.
func dialRogueLane(t *testing.T, addr string, tlsConf *tls.Config, tok wire.LaneToken, lane uint32) (wire.FrameKind, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, tlsConf, fastQUIC())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lh := wire.LaneHello{Version: wire.Version, Token: tok, Lane: lane}
	if _, err := s.Write(wire.AppendFrame(nil, wire.FrameLaneHello, lh.Append(nil), nil)); err != nil {
		t.Fatal(err)
	}
	// Data the rogue lane would deliver if it were bound: a write of the
	// next op.
	ds, err := conn.OpenUniStream()
	if err != nil {
		t.Fatal(err)
	}
	ds.Write(wire.AppendFrame(nil, wire.FrameOp, wire.AppendOp(nil, 1<<20, &wire.Write{Handle: 1, Data: make([]byte, 70<<10)}), nil))
	ds.Close()
	s.SetReadDeadline(time.Now().Add(30 * time.Second))
	kind, body, err := wire.NewFrameReader(s, nil).Next()
	if err != nil {
		// The close (which carries the code) may overtake the FrameError.
		return wire.FrameError, err
	}
	if kind == wire.FrameError {
		e, err := wire.ParseError(body)
		if err != nil {
			t.Fatal(err)
		}
		if e.Code != wire.CodeLane {
			t.Errorf("refused with %v, want %v", e.Code, wire.CodeLane)
		}
		t.Logf("refused: %v", e)
	}
	return kind, closeCause(t, conn, 30*time.Second)
}

// A lane with an unknown token, or with the right token from another
// master certificate, is refused with CodeLane and a log line, and the
// session it claims goes on untouched.
func TestLaneRefused(t *testing.T) {
	p := newPKI(t, "rogue")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	run := newRun(t)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: run, Lanes: 2})
	g := newOpGen(64)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 50, 30, 128<<10, want)
	waitApplied(t, h, g.seq, 60*time.Second)
	eventually(t, 30*time.Second, "two lanes up", func() bool { return m.status(0).Lanes == 2 })
	sess := currentSession(srv.Slave)
	sess.laneMu.Lock()
	tok := sess.laneToken
	sess.laneMu.Unlock()

	other := p.issue(t, certs.IssueOptions{Name: "other-master", Role: certs.RoleMaster})
	otherTLS := certs.ClientConfig(other, p.pool(), "127.0.0.1")
	var wrong wire.LaneToken
	copy(wrong[:], "not the token!!!")
	for i, tc := range []struct {
		name string
		tls  *tls.Config
		tok  wire.LaneToken
		lane uint32
		log  string
	}{
		{"unknown token", p.clientTLS(), wrong, 1, "unknown lane token"},
		{"another certificate", otherTLS, tok, 1, `is not the one of its session's connection`},
		{"lane beyond the grant", p.clientTLS(), tok, 5, "beyond the 2 connections granted"},
		{"lane taken", p.clientTLS(), tok, 1, "lane 1 is connected already"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kind, cause := dialRogueLane(t, srv.Addr().String(), tc.tls, tc.tok, tc.lane)
			if kind != wire.FrameError {
				t.Fatalf("the slave answered %v, want an error", kind)
			}
			if code, ok := appErrorCode(cause); !ok || code != wire.CodeLane {
				t.Errorf("closed with %v, want %v", cause, wire.CodeLane)
			}
			if srv.log.count("refused a lane connection: ") != i+1 || !strings.Contains(srv.log.String(), tc.log) {
				t.Errorf("the slave did not log the refusal %q:\n%s", tc.log, srv.log)
			}
		})
	}
	// The session goes on: same session, more ops, nothing else applied.
	appendOps(m.Master, g, 50, 30, 128<<10, want)
	waitApplied(t, h, g.seq, 60*time.Second)
	checkRecords(t, h, want, g.seq)
	if cur := currentSession(srv.Slave); cur != sess || cur.ctx.Err() != nil {
		t.Error("a refused lane disturbed the session")
	}
	if n := srv.Refusals()[wire.CodeLane.String()]; n != 4 {
		t.Errorf("%d lane refusals counted, want 4", n)
	}
	if n := m.log.count("slave connected: resuming"); n != 1 {
		t.Errorf("the master connected %d times, want once", n)
	}
}

// A lane that dies ends its session on both sides; the master reconnects
// with all its lanes and nothing is lost or applied twice. The bytes sent
// keep counting across sessions.
func TestLaneLostEndsSession(t *testing.T) {
	p := newPKI(t, "lanelost")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, quic: fastQUIC()})
	run := newRun(t)
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}}, Run: run,
		Lanes: 3, quic: fastQUIC()})
	g := newOpGen(65)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 100, 30, 128<<10, want)
	waitApplied(t, h, g.seq, 60*time.Second)
	eventually(t, 30*time.Second, "three lanes up", func() bool { return m.status(0).Lanes == 3 })
	before := m.status(0).WireBytesSent
	first := currentSession(srv.Slave)

	// Kill lane 2 from the slave's side while writes flow.
	appendOps(m.Master, g, 100, 30, 128<<10, want)
	first.laneMu.Lock()
	lane := first.lanes[2]
	first.laneMu.Unlock()
	if lane == nil {
		t.Fatal("the slave has no lane 2")
	}
	lane.CloseWithError(0x42, "test kills the lane")
	select {
	case <-first.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the session did not end with its lane")
	}
	eventually(t, 30*time.Second, "a new session with three lanes", func() bool {
		cur := currentSession(srv.Slave)
		return cur != nil && cur != first && m.status(0).Lanes == 3
	})
	appendOps(m.Master, g, 100, 30, 128<<10, want)
	waitApplied(t, h, g.seq, 60*time.Second)
	checkRecords(t, h, want, g.seq)
	if !strings.Contains(srv.log.String(), "lane 2 (") || !strings.Contains(m.log.String(), "lane 2") {
		t.Errorf("the lost lane was not logged:\nslave:\n%s\nmaster:\n%s", srv.log, m.log)
	}
	if after := m.status(0).WireBytesSent; after <= before {
		t.Errorf("wire bytes sent went from %d to %d across sessions", before, after)
	}
}

// TestLanesThroughputReport measures (it asserts nothing) how fast 1 and
// 4 lanes carry 1 MiB writes through a relay at 40 ms RTT and 0.1% loss.
// Run it by hand, without -race: TDFS_LANES_MEASURE=1 go test -run
// LanesThroughputReport -v ./quictransport/
func TestLanesThroughputReport(t *testing.T) {
	if os.Getenv("TDFS_LANES_MEASURE") != "1" {
		t.Skip("a measurement: set TDFS_LANES_MEASURE=1 to run it")
	}
	mib := 32
	if v, err := strconv.Atoi(os.Getenv("TDFS_LANES_MIB")); err == nil && v > 0 {
		mib = v
	}
	for _, lanes := range []int{1, 4} {
		p := newPKI(t, "measure")
		h := newFakeHandler()
		srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
		r := relayTo(t, srv.Addr().String(), 20*time.Millisecond, 0.001)
		run := newRun(t)
		m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: r.Addr(), TLS: p.clientTLS()}}, Run: run, Lanes: lanes})
		eventually(t, 30*time.Second, "lanes up", func() bool { return m.status(0).Lanes == lanes })
		m.Append(1, &wire.RunStart{Run: run})
		data := make([]byte, 1<<20)
		for i := range data {
			data[i] = byte(i*7 + i>>9) // incompressible enough, and no compressor anyway
		}
		start := time.Now()
		for i := range mib {
			m.Append(uint64(2+i), &wire.Write{Handle: 1, Off: int64(i) << 20, Data: data})
		}
		waitApplied(t, h, uint64(1+mib), 600*time.Second)
		d := time.Since(start)
		st := m.status(0)
		_, dropped := r.Stats()
		t.Logf("lanes %d: %d MiB in %v = %.2f MB/s (wire bytes sent %d, packets lost %d of %d, relay dropped %d)",
			lanes, mib, d.Round(time.Millisecond), float64(mib<<20)/d.Seconds()/1e6, st.WireBytesSent,
			st.PacketsLost, st.PacketsSent, dropped)
		m.stop(t)
		srv.stop(t)
		r.Close()
	}
}
