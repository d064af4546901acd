package certs

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// handshake runs one TLS connection over 127.0.0.1 TCP between a server
// (the slave) and a client (the master) and returns each side's error.
//
// In TLS 1.3 the client's Handshake returns before the server has checked
// the client certificate, so the client also reads one byte the server
// writes after its Handshake: a refusal by the server shows up there, as it
// does on the first stream read over QUIC.
func handshake(t *testing.T, server, client *tls.Config) (cs tls.ConnectionState, serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(30 * time.Second)
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		tc := tls.Server(c, server)
		if err := tc.Handshake(); err != nil {
			done <- err
			return
		}
		if _, err := tc.Write([]byte{'!'}); err != nil {
			done <- err
			return
		}
		// Wait for the client to close so our close cannot race its read.
		io.Copy(io.Discard, tc)
		done <- nil
	}()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(deadline)
	tc := tls.Client(c, client)
	clientErr = tc.Handshake()
	if clientErr == nil {
		cs = tc.ConnectionState()
		var b [1]byte
		if _, err := io.ReadFull(tc, b[:]); err != nil {
			clientErr = err
		}
	}
	c.Close()
	return cs, <-done, clientErr
}

// world is a CA with a good master and slave certificate.
type world struct {
	ca            *CA
	pool          *x509.CertPool
	master, slave tls.Certificate
}

func newWorld(t *testing.T, caKT, leafKT KeyType) *world {
	t.Helper()
	w := &world{ca: mustCA(t, "tdfs test CA", caKT), pool: x509.NewCertPool()}
	w.pool.AddCert(w.ca.Cert)
	w.master = mustPair(t, w.ca, IssueOptions{Name: "master-1", Role: RoleMaster, KeyType: leafKT, Hosts: []string{"backup-writer"}})
	w.slave = mustPair(t, w.ca, IssueOptions{Name: "slave-a", Role: RoleSlave, KeyType: leafKT, Hosts: []string{"127.0.0.1", "slave-a.example.com"}})
	return w
}

func TestHandshakeGood(t *testing.T) {
	for _, caKT := range keyTypes {
		for _, leafKT := range keyTypes {
			t.Run(caKT.String()+"-CA/"+leafKT.String()+"-leaves", func(t *testing.T) {
				w := newWorld(t, caKT, leafKT)
				for _, sn := range []string{"slave-a", "slave-a.example.com", "127.0.0.1"} {
					cs, serr, cerr := handshake(t, ServerConfig(w.slave, w.pool, nil), ClientConfig(w.master, w.pool, sn))
					if serr != nil || cerr != nil {
						t.Fatalf("ServerName %q: server %v, client %v", sn, serr, cerr)
					}
					if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != ALPN {
						t.Errorf("version %x ALPN %q, want TLS 1.3 and %q", cs.Version, cs.NegotiatedProtocol, ALPN)
					}
					if len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0].Subject.CommonName != "slave-a" {
						t.Errorf("peer certificates %v", cs.PeerCertificates)
					}
				}
			})
		}
	}
}

// refusal is a handshake that must fail on the side that checks, with
// messages a user would search for; the other side must fail too.
type refusal struct {
	name           string
	server, client func(w *world) *tls.Config
	serverWant     string // substring of the server's error; "" if the client refuses
	clientWant     string // substring of the client's error
}

func TestHandshakeRefusals(t *testing.T) {
	w := newWorld(t, Ed25519, Ed25519)
	other := newWorld(t, Ed25519, Ed25519) // another CA, same names
	now := time.Now()
	issue := func(o IssueOptions) tls.Certificate { return mustPair(t, w.ca, o) }
	expiredMaster := issue(IssueOptions{Name: "master-1", Role: RoleMaster, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	futureMaster := issue(IssueOptions{Name: "master-1", Role: RoleMaster, NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour)})
	expiredSlave := issue(IssueOptions{Name: "slave-a", Role: RoleSlave, NotAfter: now.Add(-24 * time.Hour)})
	futureSlave := issue(IssueOptions{Name: "slave-a", Role: RoleSlave, NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour)})
	noEKUMaster := issue(IssueOptions{Name: "master-1", Role: RoleMaster, NoUsage: true})
	noEKUSlave := issue(IssueOptions{Name: "slave-a", Role: RoleSlave, NoUsage: true})
	slaveAsMaster := issue(IssueOptions{Name: "master-1", Role: RoleSlave})
	masterAsSlave := issue(IssueOptions{Name: "slave-a", Role: RoleMaster})

	srv := func(cert tls.Certificate, pool *x509.CertPool, allow ...string) func(*world) *tls.Config {
		return func(*world) *tls.Config { return ServerConfig(cert, pool, allow) }
	}
	cli := func(cert tls.Certificate, pool *x509.CertPool, sn string) func(*world) *tls.Config {
		return func(*world) *tls.Config { return ClientConfig(cert, pool, sn) }
	}
	goodSrv := srv(w.slave, w.pool)
	goodCli := cli(w.master, w.pool, "slave-a")

	cases := []refusal{
		{name: "slave trusts another CA", server: srv(w.slave, other.pool), client: goodCli,
			serverWant: "x509: certificate signed by unknown authority", clientWant: "remote error: tls: unknown certificate authority"},
		{name: "master trusts another CA", server: goodSrv, client: cli(w.master, other.pool, "slave-a"),
			clientWant: "x509: certificate signed by unknown authority", serverWant: "remote error: tls: bad certificate"},
		{name: "master cert from another CA", server: goodSrv, client: cli(other.master, w.pool, "slave-a"),
			serverWant: "x509: certificate signed by unknown authority", clientWant: "remote error: tls: unknown certificate authority"},
		{name: "no client certificate", server: goodSrv, client: cli(tls.Certificate{}, w.pool, "slave-a"),
			serverWant: "client didn't provide a certificate", clientWant: "certificate required"},
		{name: "expired master", server: goodSrv, client: cli(expiredMaster, w.pool, "slave-a"),
			serverWant: "x509: certificate has expired", clientWant: "remote error: tls: expired certificate"},
		{name: "not yet valid master", server: goodSrv, client: cli(futureMaster, w.pool, "slave-a"),
			serverWant: "is not yet valid", clientWant: "remote error: tls: expired certificate"},
		{name: "expired slave", server: srv(expiredSlave, w.pool), client: goodCli,
			clientWant: "x509: certificate has expired", serverWant: "remote error: tls: bad certificate"},
		{name: "not yet valid slave", server: srv(futureSlave, w.pool), client: goodCli,
			clientWant: "is not yet valid", serverWant: "remote error: tls: bad certificate"},
		{name: "slave certificate used as master", server: goodSrv, client: cli(slaveAsMaster, w.pool, "slave-a"),
			serverWant: "incompatible key usage", clientWant: "remote error: tls: bad certificate"},
		{name: "master certificate used as slave", server: srv(masterAsSlave, w.pool), client: goodCli,
			clientWant: "incompatible key usage", serverWant: "remote error: tls: bad certificate"},
		{name: "no EKU as master", server: goodSrv, client: cli(noEKUMaster, w.pool, "slave-a"),
			serverWant: `certificate "master-1" is not a master certificate`, clientWant: "remote error: tls: bad certificate"},
		{name: "no EKU as slave", server: srv(noEKUSlave, w.pool), client: goodCli,
			clientWant: `certificate "slave-a" is not a slave certificate`, serverWant: "remote error: tls: bad certificate"},
		{name: "master not in allow list", server: srv(w.slave, w.pool, "master-2", "other"), client: goodCli,
			serverWant: `master "master-1" is not in --allow-master`, clientWant: "remote error: tls: bad certificate"},
		{name: "slave certificate used as an allowed master", server: srv(w.slave, w.pool, "master-1"), client: cli(slaveAsMaster, w.pool, "slave-a"),
			serverWant: "incompatible key usage", clientWant: "remote error: tls: bad certificate"},
		{name: "server name mismatch", server: goodSrv, client: cli(w.master, w.pool, "slave-b"),
			clientWant: "certificate is valid for slave-a, slave-a.example.com, not slave-b", serverWant: "remote error: tls: bad certificate"},
		{name: "IP not in certificate", server: goodSrv, client: cli(w.master, w.pool, "127.0.0.2"),
			clientWant: "certificate is valid for 127.0.0.1, not 127.0.0.2", serverWant: "remote error: tls: bad certificate"},
		{name: "other protocol version", server: goodSrv, client: func(w *world) *tls.Config {
			c := ClientConfig(w.master, w.pool, "slave-a")
			c.NextProtos = []string{"tdfs/0"}
			return c
		}, serverWant: "unsupported application protocols", clientWant: "no application protocol"},
		{name: "TLS 1.2 client", server: goodSrv, client: func(w *world) *tls.Config {
			c := ClientConfig(w.master, w.pool, "slave-a")
			c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			return c
		}, serverWant: "unsupported versions", clientWant: "protocol version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, serr, cerr := handshake(t, tc.server(w), tc.client(w))
			t.Logf("server: %v; client: %v", serr, cerr)
			if serr == nil || cerr == nil {
				t.Fatalf("server err %v, client err %v: want both to fail", serr, cerr)
			}
			if !strings.Contains(serr.Error(), tc.serverWant) {
				t.Errorf("server err %q, want it to contain %q", serr, tc.serverWant)
			}
			if !strings.Contains(cerr.Error(), tc.clientWant) {
				t.Errorf("client err %q, want it to contain %q", cerr, tc.clientWant)
			}
		})
	}
}

func TestAllowMaster(t *testing.T) {
	w := newWorld(t, Ed25519, Ed25519)
	// The master is known by its common name or any DNS SAN.
	for _, allow := range [][]string{{"master-1"}, {"other", "backup-writer"}, nil, {}} {
		_, serr, cerr := handshake(t, ServerConfig(w.slave, w.pool, allow), ClientConfig(w.master, w.pool, "slave-a"))
		if serr != nil || cerr != nil {
			t.Errorf("allow %q: server %v, client %v", allow, serr, cerr)
		}
	}
}

// TestNoEKUControl shows what the usage checks in VerifyConnection are for:
// without them crypto/tls accepts a certificate with no extended key usage
// in either role. Were it to refuse them, the refusal cases above would no
// longer test our code.
func TestNoEKUControl(t *testing.T) {
	w := newWorld(t, Ed25519, Ed25519)
	noEKUMaster := mustPair(t, w.ca, IssueOptions{Name: "master-1", NoUsage: true})
	noEKUSlave := mustPair(t, w.ca, IssueOptions{Name: "slave-a", NoUsage: true})
	s, c := ServerConfig(noEKUSlave, w.pool, nil), ClientConfig(noEKUMaster, w.pool, "slave-a")
	s.VerifyConnection, c.VerifyConnection = nil, nil
	if _, serr, cerr := handshake(t, s, c); serr != nil || cerr != nil {
		t.Fatalf("plain crypto/tls refused no-EKU certificates: server %v, client %v", serr, cerr)
	}
}

func TestConfigs(t *testing.T) {
	w := newWorld(t, Ed25519, Ed25519)
	s := ServerConfig(w.slave, w.pool, nil)
	if s.MinVersion != tls.VersionTLS13 || s.ClientAuth != tls.RequireAndVerifyClientCert || s.ClientCAs != w.pool ||
		!s.SessionTicketsDisabled || len(s.NextProtos) != 1 || s.NextProtos[0] != ALPN || s.InsecureSkipVerify {
		t.Errorf("server config %+v", s)
	}
	c := ClientConfig(w.master, w.pool, "slave-a")
	if c.MinVersion != tls.VersionTLS13 || c.RootCAs != w.pool || c.ServerName != "slave-a" ||
		!c.SessionTicketsDisabled || len(c.NextProtos) != 1 || c.NextProtos[0] != ALPN || c.InsecureSkipVerify {
		t.Errorf("client config %+v", c)
	}
	// VerifyConnection alone, without a peer: never a panic, always a refusal.
	if err := s.VerifyConnection(tls.ConnectionState{}); err == nil || !strings.Contains(err.Error(), "no certificate") {
		t.Errorf("server VerifyConnection without peer: %v", err)
	}
	if err := c.VerifyConnection(tls.ConnectionState{}); err == nil || !strings.Contains(err.Error(), "no certificate") {
		t.Errorf("client VerifyConnection without peer: %v", err)
	}
}

func TestCheckRole(t *testing.T) {
	ca, err := NewCA("ca", Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		role    Role
		noUsage bool
	}{{RoleMaster, false}, {RoleSlave, false}, {RoleMaster, true}} {
		c, _, err := ca.Issue(IssueOptions{Name: "x", Role: tc.role, NoUsage: tc.noUsage})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []Role{RoleMaster, RoleSlave} {
			err := CheckRole(c, r)
			if ok := r == tc.role && !tc.noUsage; ok != (err == nil) {
				t.Errorf("issued %v (no usage %v) checked as %v: %v", tc.role, tc.noUsage, r, err)
			}
		}
	}
}
