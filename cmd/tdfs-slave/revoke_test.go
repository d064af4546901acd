package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/certs"
	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/replayer"
	"github.com/tdfs/tdfs/slave"
	"github.com/tdfs/tdfs/wire"
)

func writePair(t *testing.T, dir, name string, c tls.Certificate) (string, string) {
	t.Helper()
	crt, key := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	kp, err := certs.KeyPEM(c.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, kp, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(crt, certs.CertPEM(c.Leaf), 0o644); err != nil {
		t.Fatal(err)
	}
	return crt, key
}

// A master connection whose TLS handshake completed before its
// certificate was revoked, and which says Hello only after the reload
// (found by review: a thief keeps a spare connection ready), is refused
// when its Hello arrives; the live connection is closed by Recheck; no op
// of the revoked certificate is applied.
func TestRevokedMasterSpareConnection(t *testing.T) {
	ca, err := certs.NewCA("ca", certs.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(o certs.IssueOptions) tls.Certificate {
		c, k, err := ca.Issue(o)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k, Leaf: c}
	}
	master := issue(certs.IssueOptions{Name: "stolen-master", Role: certs.RoleMaster})
	other := issue(certs.IssueOptions{Name: "other", Role: certs.RoleMaster})
	slaveCert := issue(certs.IssueOptions{Name: "slave", Hosts: []string{"127.0.0.1"}, Role: certs.RoleSlave})
	dir := t.TempDir()
	crt, key := writePair(t, dir, "slave", slaveCert)
	caf := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caf, certs.CertPEM(ca.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	crl := filepath.Join(dir, "ca.crl")
	if _, err := certs.RevokeFile(crl, ca, other.Leaf, 0); err != nil {
		t.Fatal(err)
	}
	store, err := certs.LoadStore(certs.Files{Cert: crt, Key: key, CA: caf, CRL: crl}, certs.RoleSlave, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuf{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	root := filepath.Join(dir, "r")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := replayer.New(root, replayer.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h, err := slave.New(r, root, t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	srv, err := quictransport.NewSlave(quictransport.SlaveConfig{Listen: "127.0.0.1:0",
		TLS: store.ServerConfig([]string{"stolen-master"}), CheckPeer: store.CheckPeer, Handler: h, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { srv.Serve(ctx); close(served) }()
	defer func() { cancel(); <-served }()

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	dial := func() *quic.Conn {
		t.Helper()
		dctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		conn, err := quic.DialAddr(dctx, srv.Addr().String(), certs.ClientConfig(master, pool, "127.0.0.1"),
			&quic.Config{HandshakeIdleTimeout: 5 * time.Second, MaxIdleTimeout: 60 * time.Second, KeepAlivePeriod: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	// hello sends Hello and returns the slave's answer: a HelloAck, or the
	// error that closed the connection.
	hello := func(conn *quic.Conn) (*quic.Stream, *wire.FrameReader, error) {
		ctrl, err := conn.OpenStreamSync(context.Background())
		if err != nil {
			return nil, nil, err
		}
		hh := wire.Hello{Version: wire.Version, Epoch: hostileEpoch, Run: wire.RunID{1}, First: 1}
		ctrl.Write(wire.AppendFrame(nil, wire.FrameHello, hh.Append(nil), nil))
		fr := wire.NewFrameReader(ctrl, nil)
		ctrl.SetReadDeadline(time.Now().Add(10 * time.Second))
		kind, body, err := fr.Next()
		if err != nil {
			return nil, nil, err
		}
		switch kind {
		case wire.FrameHelloAck:
			if _, err := wire.ParseHelloAck(body); err != nil {
				return nil, nil, err
			}
			return ctrl, fr, nil
		case wire.FrameError:
			e, _ := wire.ParseError(body)
			return nil, nil, errors.New(e.Msg)
		}
		return nil, nil, errors.New("unexpected frame")
	}

	live := dial()
	if _, _, err := hello(live); err != nil {
		t.Fatalf("the master, not yet revoked: %v", err)
	}
	spare := dial() // TLS done, no Hello yet

	if _, err := certs.RevokeFile(crl, ca, master.Leaf, 0); err != nil {
		t.Fatal(err)
	}
	if err := store.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Recheck(); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("Recheck of the live connection: %v, want revoked", err)
	}
	select {
	case <-live.Context().Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the revoked master's live connection stays up")
	}

	// The spare's Hello is refused, and nothing it sends is applied.
	ctrl, _, err := hello(spare)
	if err == nil {
		ctrl.Write(opFrame(1, &wire.RunStart{Run: wire.RunID{1}}))
		ctrl.Write(opFrame(2, &wire.Mkdir{Path: "written-after-revocation", Mode: 0o755, Mtime: omitTime, DirMtime: omitTime}))
		t.Fatalf("the spare connection of a revoked master was accepted (master %q)", srv.Master())
	}
	if _, err := os.Stat(filepath.Join(root, "written-after-revocation")); !os.IsNotExist(err) {
		t.Fatalf("an op of a revoked master was applied: %v", err)
	}
	if !strings.Contains(logs.String(), "is revoked") {
		t.Errorf("the slave's log does not name the revocation:\n%s", logs.String())
	}
}
