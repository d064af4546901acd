package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tdfs/tdfs/certs"
)

// serialOf is the serial of a certificate file as the daemons log it.
func serialOf(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM block", file)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return certs.Serial(c.SerialNumber)
}

// TestRevokeMaster: a slave running with --crl reloads the list on
// SIGHUP after tdfs-certs revoke, closes the live connection of the
// revoked master and refuses its next one, naming the revocation in its
// log; nothing the revoked master writes reaches it.
func TestRevokeMaster(t *testing.T) {
	k := newPKI(t, "s1")
	crl := filepath.Join(k.dir, "ca.crl")
	// The slave starts with a list already: one that revokes an old master.
	runOK(t, bin("tdfs-certs"), "master", "--dir", k.dir, "old-master")
	runOK(t, bin("tdfs-certs"), "revoke", "--dir", k.dir, "old-master")
	s := startSlave(t, k, "s1", "--crl", crl)

	m := startMaster(t, k, []*slave{s}, "--drain-timeout", "2s")
	m.waitLine(`slave connected`+ofSlave(s.addr), 60*time.Second)
	if err := os.WriteFile(filepath.Join(m.mnt, "before"), []byte("accepted"), 0o644); err != nil {
		t.Fatal(err)
	}
	converge(t, m, []*slave{s}, 60*time.Second)

	// Revoked while connected: the reload closes the live connection
	// too, and the master's redial is refused.
	serial := serialOf(t, filepath.Join(k.dir, "master.crt"))
	out := runOK(t, bin("tdfs-certs"), "revoke", "--dir", k.dir, "master")
	if !strings.Contains(out, crl) || !strings.Contains(out, serial) {
		t.Errorf("tdfs-certs revoke said %q, want the CRL path and serial %s", out, serial)
	}
	mark := s.mark()
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitLineFrom(mark, `certificates reloaded.*trigger=SIGHUP.*revoked=2`, 30*time.Second)
	s.waitLineFrom(mark, `closed the connection of a master whose certificate is now revoked`, 30*time.Second)
	s.waitLineFrom(mark, `refused a connection: handshake failed: .*certificate \\?"master\\?" serial `+serial+
		` is revoked by `+regexp.QuoteMeta(crl), 60*time.Second)
	m.waitLine(`the slave refused our certificate`+ofSlave(s.addr), 60*time.Second)
	if err := os.WriteFile(filepath.Join(m.mnt, "after"), []byte("refused"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.stop(syscall.SIGTERM, 60*time.Second)
	if _, err := os.Stat(filepath.Join(s.dir, "after")); !os.IsNotExist(err) {
		t.Fatalf("a revoked master replicated a file: %v", err)
	}
	s.stop(syscall.SIGTERM, 30*time.Second)
}

// TestReloadKeepsConnection: SIGHUP reloads a renewed slave certificate
// (and a failed reload keeps the old one) without dropping the master's
// live connection: the master logs no reconnect and writes keep
// replicating; SIGHUP to the master reloads it too, and ends neither.
func TestReloadKeepsConnection(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s})
	m.waitLine(`slave connected`+ofSlave(s.addr), 60*time.Second)
	workloadSmall(t, m.mnt)
	converge(t, m, []*slave{s}, 60*time.Second)
	mmark, smark := m.mark(), s.mark()

	// A failed reload: a key readable by others is refused, the old
	// material stays.
	key := filepath.Join(k.dir, "s1.key")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitLineFrom(smark, `certificate reload failed, keeping the previous certificates: key file `+
		regexp.QuoteMeta(key)+` is accessible by other users`, 30*time.Second)
	os.Chmod(key, 0o600)

	// Renew: issue anew, replace the files, SIGHUP.
	for _, f := range []string{"s1.crt", "s1.key"} {
		if err := os.Rename(filepath.Join(k.dir, f), filepath.Join(k.dir, "old-"+f)); err != nil {
			t.Fatal(err)
		}
	}
	runOK(t, bin("tdfs-certs"), "slave", "--dir", k.dir, "s1", "127.0.0.1", "localhost")
	serial := serialOf(t, filepath.Join(k.dir, "s1.crt"))
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitLineFrom(smark, `certificates reloaded.* serial=`+serial, 30*time.Second)
	m.cmd.Process.Signal(syscall.SIGHUP)
	m.waitLineFrom(mmark, `certificates reloaded.*trigger=SIGHUP`, 30*time.Second)

	for i := range 5 {
		if err := os.WriteFile(filepath.Join(m.mnt, fmt.Sprintf("after-reload-%d", i)), []byte("still replicating"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s}, 60*time.Second)
	if l := m.linesFrom(mmark, `slave connected|slave connection failed|slave state: (connecting|disconnected)`); len(l) > 0 {
		t.Errorf("the master reconnected across the reload:\n%s", strings.Join(l, "\n"))
	}
	if l := s.linesFrom(smark, `a new master connection replaces`); len(l) > 0 {
		t.Errorf("the slave took a new connection across the reload:\n%s", strings.Join(l, "\n"))
	}

	// New handshakes use the renewed certificate: a restarted master
	// connects to it.
	m.stop(syscall.SIGTERM, 60*time.Second)
	m2 := m.restart(t)
	m2.waitLine(`slave connected`+ofSlave(s.addr), 60*time.Second)
	m2.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}

// TestRevokeSlave: a master running with --crl closes the live connection
// of a slave whose certificate a reloaded list revokes, and refuses it
// from then on; the mount goes on.
func TestRevokeSlave(t *testing.T) {
	k := newPKI(t, "s1")
	crl := filepath.Join(k.dir, "ca.crl")
	runOK(t, bin("tdfs-certs"), "master", "--dir", k.dir, "old-master")
	runOK(t, bin("tdfs-certs"), "revoke", "--dir", k.dir, "old-master")
	s := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s}, "--crl", crl, "--drain-timeout", "2s")
	m.waitLine(`slave connected`+ofSlave(s.addr), 60*time.Second)
	converge(t, m, []*slave{s}, 60*time.Second)

	serial := serialOf(t, filepath.Join(k.dir, "s1.crt"))
	runOK(t, bin("tdfs-certs"), "revoke", "--dir", k.dir, "s1")
	mark := m.mark()
	m.cmd.Process.Signal(syscall.SIGHUP)
	m.waitLineFrom(mark, `closing the connection of a slave whose certificate is now refused`+ofSlave(s.addr)+`.*serial `+serial, 30*time.Second)
	m.waitLineFrom(mark, `is revoked by `+regexp.QuoteMeta(crl)+`.*`+ofSlave(s.addr), 60*time.Second)
	if err := os.WriteFile(filepath.Join(m.mnt, "after"), []byte("not for a revoked slave"), 0o644); err != nil {
		t.Fatalf("the mount after a slave was revoked: %v", err)
	}
	m.stop(syscall.SIGTERM, 60*time.Second)
	if _, err := os.Stat(filepath.Join(s.dir, "after")); !os.IsNotExist(err) {
		t.Fatalf("a revoked slave was sent a file: %v", err)
	}
	s.stop(syscall.SIGTERM, 30*time.Second)
}
