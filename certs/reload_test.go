package certs

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePair writes p as dir/name.crt and dir/name.key (0600), replacing
// what is there, and returns their paths.
func writePair(t *testing.T, dir, name string, p tls.Certificate) (crt, key string) {
	t.Helper()
	crt, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	kp, err := KeyPEM(p.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, kp, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(crt, CertPEM(p.Leaf), 0o644); err != nil {
		t.Fatal(err)
	}
	return crt, key
}

// writeCAFile writes the certificates of cas to dir/name.
func writeCAFile(t *testing.T, dir, name string, cas ...*CA) string {
	t.Helper()
	var b []byte
	for _, ca := range cas {
		b = append(b, CertPEM(ca.Cert)...)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// mustStore writes p and the CA file and loads a store for role.
func mustStore(t *testing.T, p tls.Certificate, role Role, crl string, cas ...*CA) *Store {
	t.Helper()
	dir := t.TempDir()
	crt, key := writePair(t, dir, "me", p)
	s, err := LoadStore(Files{Cert: crt, Key: key, CA: writeCAFile(t, dir, "ca.crt", cas...), CRL: crl}, role, nil)
	if err != nil {
		t.Fatalf("LoadStore: %v", err)
	}
	return s
}

// logBuffer is a logger whose output a test reads.
func logBuffer() (*slog.Logger, *bytes.Buffer) {
	var b bytes.Buffer
	return slog.New(slog.NewTextHandler(&b, nil)), &b
}

func TestStoreLoadErrors(t *testing.T) {
	w := newWorld(t, Ed25519, Ed25519)
	other := newWorld(t, Ed25519, Ed25519)
	dir := t.TempDir()
	crt, key := writePair(t, dir, "slave", w.slave)
	ca := writeCAFile(t, dir, "ca.crt", w.ca)
	mcrt, mkey := writePair(t, dir, "master", w.master)
	_, okey := writePair(t, dir, "other", other.slave)
	loose := filepath.Join(dir, "loose.key")
	data, _ := os.ReadFile(key)
	os.WriteFile(loose, data, 0o644)
	foreignCRL := filepath.Join(dir, "foreign.crl")
	if _, err := RevokeFile(foreignCRL, other.ca, other.master.Leaf, 0); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), 0o644)
	for _, tc := range []struct {
		name string
		f    Files
		want string
	}{
		{"no CA", Files{Cert: crt, Key: key}, "are required"},
		{"missing cert", Files{Cert: dir + "/nope.crt", Key: key, CA: ca}, "no such file"},
		{"key of another cert", Files{Cert: crt, Key: okey, CA: ca}, "private key does not match public key"},
		{"loose key", Files{Cert: crt, Key: loose, CA: ca}, "loose.key is accessible by other users"},
		{"wrong role", Files{Cert: mcrt, Key: mkey, CA: ca}, "is not a slave (serverAuth) certificate"},
		{"CA file not PEM", Files{Cert: crt, Key: key, CA: key}, "holds no PEM certificate"},
		{"missing CRL", Files{Cert: crt, Key: key, CA: ca, CRL: dir + "/nope.crl"}, "CRL file: open " + dir + "/nope.crl"},
		{"CRL not PEM", Files{Cert: crt, Key: key, CA: ca, CRL: ca}, "holds no PEM CRL"},
		{"CRL garbage", Files{Cert: crt, Key: key, CA: ca, CRL: garbage}, "CRL file " + garbage},
		{"CRL of another CA", Files{Cert: crt, Key: key, CA: ca, CRL: foreignCRL}, "CRL file " + foreignCRL + " is not signed by the CA in " + ca},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadStore(tc.f, RoleSlave, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadStore: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestStoreReload: a reload swaps the material of new handshakes, a failed
// one keeps the old, and a connection established before either stays up.
func TestStoreReload(t *testing.T) {
	w := newWorld(t, Ed25519, ECDSAP256)
	dir := t.TempDir()
	crt, key := writePair(t, dir, "slave", w.slave)
	ca := writeCAFile(t, dir, "ca.crt", w.ca)
	crl := filepath.Join(dir, "ca.crl")
	other := mustPair(t, w.ca, IssueOptions{Name: "someone-else", Role: RoleMaster})
	if _, err := RevokeFile(crl, w.ca, other.Leaf, 0); err != nil {
		t.Fatal(err)
	}
	s, err := LoadStore(Files{Cert: crt, Key: key, CA: ca, CRL: crl}, RoleSlave, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := s.ServerConfig(nil)
	cli := ClientConfig(w.master, w.pool, "slave-a")

	// A connection made now must survive everything below.
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	ts, tc := tls.Server(sc, srv), tls.Client(cc, cli)
	errc := make(chan error, 1)
	go func() { errc <- ts.Handshake() }()
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	echo := func(when string) {
		t.Helper()
		go func() {
			var b [4]byte
			if _, err := io.ReadFull(ts, b[:]); err == nil {
				ts.Write(b[:])
			}
		}()
		var b [4]byte
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := tc.Write([]byte("ping")); err != nil {
			t.Fatalf("%s: established connection: %v", when, err)
		}
		if _, err := io.ReadFull(tc, b[:]); err != nil || string(b[:]) != "ping" {
			t.Fatalf("%s: established connection: %q %v", when, b, err)
		}
	}
	echo("before reloads")

	old := s.Leaf()
	// Failed reloads: the error names the file; the old material stays.
	renewed := mustPair(t, w.ca, IssueOptions{Name: "slave-a", Role: RoleSlave, Hosts: []string{"127.0.0.1"}})
	os.WriteFile(crt, CertPEM(renewed.Leaf), 0o644) // the key is still the old one
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), crt) {
		t.Errorf("reload with a mismatched key: %v", err)
	}
	writePair(t, dir, "slave", renewed)
	os.Chmod(key, 0o640)
	if err := s.Reload(); !errors.Is(err, ErrKeyPermissions) || !strings.Contains(err.Error(), key) {
		t.Errorf("reload with a loose key: %v", err)
	}
	os.Chmod(key, 0o600)
	os.WriteFile(crl, []byte("garbage"), 0o644)
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), crl) {
		t.Errorf("reload with a garbage CRL: %v", err)
	}
	if s.Leaf() != old {
		t.Fatal("a failed reload changed the certificate")
	}
	if _, serr, cerr := handshake(t, srv, cli); serr != nil || cerr != nil {
		t.Fatalf("after failed reloads: server %v, client %v", serr, cerr)
	}
	echo("after failed reloads")

	// A good reload: the renewed certificate, and the master revoked.
	os.Remove(crl)
	if _, err := RevokeFile(crl, w.ca, w.master.Leaf, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if s.Leaf().SerialNumber.Cmp(renewed.Leaf.SerialNumber) != 0 || s.Revoked() != 1 {
		t.Fatalf("after reload: serial %s, %d revoked", Serial(s.Leaf().SerialNumber), s.Revoked())
	}
	_, serr, cerr := handshake(t, srv, cli)
	if serr == nil || !strings.Contains(serr.Error(), `certificate "master-1" serial `+Serial(w.master.Leaf.SerialNumber)+" is revoked by "+crl) ||
		!errors.Is(serr, ErrRevoked) || cerr == nil {
		t.Errorf("revoked master after reload: server %v, client %v", serr, cerr)
	}
	echo("after the reload that revoked its master")
}

func TestStoreReloadIfChanged(t *testing.T) {
	w := newWorld(t, Ed25519, Ed25519)
	dir := t.TempDir()
	crt, key := writePair(t, dir, "slave", w.slave)
	s, err := LoadStore(Files{Cert: crt, Key: key, CA: writeCAFile(t, dir, "ca.crt", w.ca)}, RoleSlave, nil)
	if err != nil {
		t.Fatal(err)
	}
	poll := func(wantOK bool, wantErr string) {
		t.Helper()
		ok, err := s.ReloadIfChanged()
		if ok != wantOK || (err == nil) != (wantErr == "") || (err != nil && !strings.Contains(err.Error(), wantErr)) {
			t.Fatalf("ReloadIfChanged: %v %v, want %v %q", ok, err, wantOK, wantErr)
		}
	}
	poll(false, "")
	// Half a replacement (the certificate before its key): it settles
	// for one poll, then fails once, and is not retried while unchanged.
	renewed := mustPair(t, w.ca, IssueOptions{Name: "slave-a", Role: RoleSlave})
	os.WriteFile(crt, CertPEM(renewed.Leaf), 0o644)
	poll(false, "")
	poll(false, crt)
	poll(false, "")
	poll(false, "")
	// The key arrives: loaded after one quiet poll.
	writePair(t, dir, "slave", renewed)
	poll(false, "")
	poll(true, "")
	poll(false, "")
	if s.Leaf().SerialNumber.Cmp(renewed.Leaf.SerialNumber) != 0 {
		t.Error("the renewed certificate was not loaded")
	}
}

func TestStoreExpiryWarnings(t *testing.T) {
	ca := mustCA(t, "tdfs test CA", Ed25519)
	now := time.Now()
	soon := mustPair(t, ca, IssueOptions{Name: "slave-a", Role: RoleSlave, Hosts: []string{"127.0.0.1"}, NotAfter: now.Add(10 * 24 * time.Hour)})
	master := mustPair(t, ca, IssueOptions{Name: "master-1", Role: RoleMaster, NotAfter: now.Add(5 * 24 * time.Hour)})
	dir := t.TempDir()
	crt, key := writePair(t, dir, "slave", soon)
	crl := filepath.Join(dir, "ca.crl")
	if _, err := RevokeFile(crl, ca, mustPair(t, ca, IssueOptions{Name: "x", Role: RoleMaster}).Leaf, 48*time.Hour); err != nil {
		t.Fatal(err)
	}
	log, buf := logBuffer()
	s, err := LoadStore(Files{Cert: crt, Key: key, CA: writeCAFile(t, dir, "ca.crt", ca), CRL: crl}, RoleSlave, log)
	if err != nil {
		t.Fatal(err)
	}
	count := func(sub string) int { return strings.Count(buf.String(), sub) }

	s.CheckExpiry()
	s.CheckExpiry()
	if n := count("certificate expires in 9 days"); n != 1 {
		t.Errorf("%d warnings about the own certificate, want 1:\n%s", n, buf)
	}
	if count("CA certificate") != 0 || count("revocation list") != 0 {
		t.Errorf("warned about a CA or CRL far from expiry:\n%s", buf)
	}
	// A master whose certificate expires soon: one warning a day.
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for range 2 {
		if _, serr, cerr := handshake(t, s.ServerConfig(nil), ClientConfig(master, pool, "127.0.0.1")); serr != nil || cerr != nil {
			t.Fatalf("server %v, client %v", serr, cerr)
		}
	}
	if n := count(`cert="master certificate presented by a peer" name=master-1`); n != 1 {
		t.Errorf("%d warnings about the master's certificate, want 1:\n%s", n, buf)
	}

	// A day and more later: again; three days later the CRL is past its
	// next update, and the warning says it is still used.
	s.now = func() time.Time { return now.Add(3 * 24 * time.Hour) }
	s.CheckExpiry()
	if n := count("certificate expires in"); n != 3 {
		t.Errorf("%d expiry warnings after a day, want 3:\n%s", n, buf)
	}
	if n := count("the revocation list is past its next update: still using it"); n != 1 {
		t.Errorf("%d CRL warnings, want 1:\n%s", n, buf)
	}
	s.now = func() time.Time { return now.Add(11 * 24 * time.Hour) }
	s.CheckExpiry()
	if n := count("certificate has expired"); n != 1 {
		t.Errorf("%d warnings about an expired certificate, want 1:\n%s", n, buf)
	}
}
