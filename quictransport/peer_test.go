package quictransport

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/certs"
	"github.com/tdfs/tdfs/wire"
)

// A master started before its slave keeps redialing and delivers
// everything once the slave listens.
func TestMasterStartedBeforeSlave(t *testing.T) {
	p := newPKI(t, "early")
	addr := freePort(t)
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: addr, TLS: p.clientTLS()}},
		Run:   run,
		quic:  fastQUIC(),
	})
	g := newOpGen(6)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 300, 10, 128<<10, want)
	eventually(t, 30*time.Second, "a failed dial", func() bool { return m.status(0).LastError != "" })
	if st := m.status(0); st.State != "connecting" {
		t.Fatalf("status %+v, want connecting", st)
	}
	h := newFakeHandler()
	startServer(t, SlaveConfig{Listen: addr, TLS: p.serverTLS(), Handler: h})
	waitApplied(t, h, g.seq, 60*time.Second)
	checkRecords(t, h, want, g.seq)
	if n := m.log.count("slave connection failed"); n > 2 {
		t.Errorf("the same dial failure was logged %d times:\n%s", n, m.log)
	}
}

// The slave's Serve is cancelled mid-stream and a new Slave starts with
// the same handler state: the master resumes from it, nothing is applied
// twice, nothing is missing.
func TestReconnectAfterSlaveRestart(t *testing.T) {
	p := newPKI(t, "restart")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	addr := srv.Addr().String()
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: addr, TLS: p.clientTLS()}},
		Run:   run,
		quic:  fastQUIC(),
	})
	g := newOpGen(7)
	want := map[uint64][]byte{}
	startRun(m.Master, g, run, want)
	appendOps(m.Master, g, 1500, 10, 128<<10, want)
	waitApplied(t, h, 200, 60*time.Second)
	if err := srv.stop(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// Serve synced what it applied before returning.
	recs, durable, _ := h.snapshot()
	if last := recs[len(recs)-1].seq; durable < last {
		t.Fatalf("after Serve returned: durable %d, applied %d", durable, last)
	}
	// The final ack reached the master before the connection closed.
	eventually(t, 10*time.Second, "the final ack", func() bool { return m.status(0).Durable == durable })
	appendOps(m.Master, g, 500, 10, 128<<10, want)
	srv2 := startServer(t, SlaveConfig{Listen: addr, TLS: p.serverTLS(), Handler: h})
	waitApplied(t, h, g.seq, 120*time.Second)
	checkRecords(t, h, want, g.seq)
	if !strings.Contains(srv2.log.String(), "master connected") || m.log.count("slave connected: resuming") < 2 {
		t.Errorf("the slave did not resume after its restart:\nmaster:\n%s\nslave:\n%s", m.log, srv2.log)
	}
	if m.log.count("the slave closed its control stream") < 1 {
		t.Errorf("the master did not see the slave's clean shutdown:\n%s", m.log)
	}
}

// Certificate problems are refused with errors that say what is wrong, on
// the master (Status.LastError, log) and on the slave (log).
func TestMutualTLSRefusals(t *testing.T) {
	good := newPKI(t, "good")
	other := newPKI(t, "other")
	past := time.Now().Add(-48 * time.Hour)
	expired := good.issue(t, certs.IssueOptions{Name: "old-master", Role: certs.RoleMaster, NotBefore: past, NotAfter: past.Add(time.Hour)})

	cases := []struct {
		name       string
		server     *tls.Config
		client     *tls.Config
		masterSays []string // in Status.LastError
		slaveSays  string   // in the slave's log ("" when the slave never sees it)
	}{
		{
			name:       "master does not trust the slave's CA",
			server:     other.serverTLS(),
			client:     good.clientTLS(),
			masterSays: []string{"not signed by our CA", "certificate signed by unknown authority"},
		},
		{
			name:   "slave does not trust the master's CA",
			server: certs.ServerConfig(good.slave, good.pool(), nil),
			client: certs.ClientConfig(other.master, good.pool(), "127.0.0.1"),
			// crypto/tls does not even offer a certificate whose issuer the
			// server did not ask for.
			masterSays: []string{"ours is missing or from another CA", "certificate required"},
			slaveSays:  "client didn't provide a certificate",
		},
		{
			name:   "slave does not trust the master's CA (certificate forced)",
			server: certs.ServerConfig(good.slave, good.pool(), nil),
			client: func() *tls.Config {
				c := certs.ClientConfig(other.master, good.pool(), "127.0.0.1")
				cert := c.Certificates[0]
				c.Certificates = nil
				c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
				return c
			}(),
			masterSays: []string{"the slave refused our certificate", "unknown certificate authority"},
			slaveSays:  "certificate signed by unknown authority",
		},
		{
			name:   "no client certificate",
			server: good.serverTLS(),
			client: func() *tls.Config {
				c := good.clientTLS()
				c.Certificates = nil
				return c
			}(),
			masterSays: []string{"ours is missing or from another CA", "certificate required"},
			slaveSays:  "client didn't provide a certificate",
		},
		{
			name:       "expired master certificate",
			server:     good.serverTLS(),
			client:     certs.ClientConfig(expired, good.pool(), "127.0.0.1"),
			masterSays: []string{"the slave refused our certificate", "expired certificate"},
			slaveSays:  "certificate has expired",
		},
		{
			name:       "slave certificate used as master",
			server:     good.serverTLS(),
			client:     certs.ClientConfig(good.slave, good.pool(), "127.0.0.1"),
			masterSays: []string{"the slave refused our certificate", "bad certificate"},
			slaveSays:  "incompatible key usage",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHandler()
			srv := startServer(t, SlaveConfig{TLS: tc.server, Handler: h})
			m := startMaster(t, MasterConfig{
				Peers: []Peer{{Addr: srv.Addr().String(), TLS: tc.client}},
				Run:   newRun(t),
				quic:  fastQUIC(),
			})
			m.Append(1, &wire.Mkdir{Path: "a", Mode: 0o755})
			eventually(t, 30*time.Second, "a refusal", func() bool { return m.status(0).LastError != "" })
			st := m.status(0)
			for _, s := range tc.masterSays {
				if !strings.Contains(st.LastError, s) {
					t.Errorf("LastError %q lacks %q", st.LastError, s)
				}
			}
			if st.State != "connecting" {
				t.Errorf("state %q, want connecting", st.State)
			}
			if !strings.Contains(m.log.String(), "slave connection failed: "+st.LastError) {
				t.Errorf("the master did not log the refusal:\n%s", m.log)
			}
			if tc.slaveSays != "" {
				eventually(t, 30*time.Second, "the slave to log the refusal", func() bool {
					l := srv.log.String()
					return strings.Contains(l, "refused a connection: handshake failed") && strings.Contains(l, tc.slaveSays)
				})
			}
			if recs, _, _ := h.snapshot(); len(recs) != 0 {
				t.Errorf("refused master delivered %d ops", len(recs))
			}
		})
	}
}

// A fake slave answering Hello with garbage: the master closes the
// connection with CodeProtocol, names the slave in its error, and keeps
// trying (it never crashes).
func TestMasterRefusesGarbageFromSlave(t *testing.T) {
	p := newPKI(t, "badslave")
	helloAck := func(maxPending uint64) []byte {
		a := wire.HelloAck{Epoch: testEpoch, MaxPending: maxPending}
		return wire.AppendFrame(nil, wire.FrameHelloAck, a.Append(nil), nil)
	}
	ack := wire.Ack{Applied: 99, Durable: 99}
	itemsAck := wire.Ack{Items: 3}
	cases := []struct {
		name  string
		reply []byte
		want  string
	}{
		{"junk", []byte("\x00\x01garbage"), "unknown frame kind 0"},
		{"tiny MaxPending", helloAck(1000), "the slave buffers only 1000 bytes"},
		{"ack for an op never sent", append(helloAck(64<<20), wire.AppendFrame(nil, wire.FrameAck, ack.Append(nil), nil)...), "ack for op 99, only 0 sent"},
		{"ack for resync items never sent", append(helloAck(64<<20), wire.AppendFrame(nil, wire.FrameAck, itemsAck.Append(nil), nil)...), "ack for 3 resync items, 0 sent"},
		{"malformed resync reply", append(helloAck(64<<20), wire.AppendFrame(nil, wire.FrameResyncReply, []byte{byte(wire.ResyncBeginKind)}, nil)...), "resync item kind begin in a reply frame"},
		{"op frame from the slave", append(helloAck(64<<20), wire.AppendFrame(nil, wire.FrameOp, wire.AppendOp(nil, 1, &wire.Sync{}), nil)...), "unexpected op frame from the slave"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := quic.ListenAddr("127.0.0.1:0", p.serverTLS(), fastQUIC())
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			causes := make(chan error, 10)
			go func() {
				for {
					conn, err := ln.Accept(context.Background())
					if err != nil {
						return
					}
					go func() {
						ctrl, err := conn.AcceptStream(context.Background())
						if err != nil {
							return
						}
						if _, _, err := wire.NewFrameReader(ctrl, nil).Next(); err != nil {
							return
						}
						ctrl.Write(tc.reply)
						<-conn.Context().Done()
						select {
						case causes <- context.Cause(conn.Context()):
						default:
						}
					}()
				}
			}()
			m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: ln.Addr().String(), TLS: p.clientTLS()}}, Run: newRun(t), quic: fastQUIC()})
			eventually(t, 30*time.Second, "the master to give up on the slave", func() bool { return m.status(0).LastError != "" })
			st := m.status(0)
			for _, s := range []string{"protocol violation", tc.want, `CN "badslave-slave"`} {
				if !strings.Contains(st.LastError, s) {
					t.Errorf("LastError %q lacks %q", st.LastError, s)
				}
			}
			select {
			case cause := <-causes:
				if code, ok := appErrorCode(cause); !ok || code != wire.CodeProtocol {
					t.Errorf("fake slave's connection closed by %v, want the master's protocol error", cause)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the master did not close the connection")
			}
			if st.State == "streaming" || st.State == "stopped" {
				t.Errorf("state %q after garbage", st.State)
			}
		})
	}
}
