package main

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tdfs/tdfs/certs"
)

// mustRun runs tdfs-certs and fails unless it exits 0.
func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := runT(t, args...)
	if r.code != exitOK {
		t.Fatalf("tdfs-certs %s: %+v", strings.Join(args, " "), r)
	}
	return r
}

func TestRevoke(t *testing.T) {
	for _, kt := range []string{"ed25519", "p256"} {
		t.Run(kt, func(t *testing.T) {
			dir := t.TempDir()
			D := func(f string) string { return filepath.Join(dir, f) }
			mustRun(t, "ca", "--dir", dir, "--key-type", kt)
			mustRun(t, "master", "--dir", dir, "--key-type", kt, "m1")
			mustRun(t, "slave", "--dir", dir, "--key-type", kt, "s1", "127.0.0.1")

			r := mustRun(t, "revoke", "--dir", dir, "m1")
			if r.stdout != D("ca.crl")+"\n" || !strings.Contains(r.stderr, `revoked "m1" (serial `) {
				t.Errorf("revoke m1: %+v", r)
			}
			// A renewed slave certificate: the old one, moved aside, is
			// revoked by its path; the list keeps m1.
			if err := os.Rename(D("s1.crt"), D("s1.old.crt")); err != nil {
				t.Fatal(err)
			}
			os.Remove(D("s1.key"))
			mustRun(t, "slave", "--dir", dir, "s1", "127.0.0.1")
			mustRun(t, "revoke", "--dir", dir, "--days", "7", D("s1.old.crt"))

			crl, err := certs.LoadCRL(D("ca.crl"))
			if err != nil {
				t.Fatal(err)
			}
			ca, err := certs.LoadCA(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
				t.Errorf("CRL not signed by the CA: %v", err)
			}
			if crl.Number.Int64() != 2 || len(crl.RevokedCertificateEntries) != 2 {
				t.Errorf("CRL number %v with %d entries, want 2 and 2", crl.Number, len(crl.RevokedCertificateEntries))
			}
			if d := time.Until(crl.NextUpdate); d < 6*24*time.Hour || d > 8*24*time.Hour {
				t.Errorf("next update in %v, want 7 days", d)
			}
			for _, f := range []string{"m1.crt", "s1.old.crt"} {
				if !listed(t, crl, D(f)) {
					t.Errorf("%s not in the CRL", f)
				}
			}
			if listed(t, crl, D("s1.crt")) {
				t.Error("the renewed s1.crt is in the CRL")
			}
			if m := mode(t, D("ca.crl")); m.Perm() != 0o644 {
				t.Errorf("ca.crl mode %v, want 0644", m)
			}

			// Again: not an error, the list is re-signed, no duplicate.
			r = mustRun(t, "revoke", "--dir", dir, "m1")
			if !strings.Contains(r.stderr, "already revoked") {
				t.Errorf("revoke m1 twice: %+v", r)
			}
			crl, err = certs.LoadCRL(D("ca.crl"))
			if err != nil {
				t.Fatal(err)
			}
			if crl.Number.Int64() != 3 || len(crl.RevokedCertificateEntries) != 2 {
				t.Errorf("after revoking again: number %v, %d entries", crl.Number, len(crl.RevokedCertificateEntries))
			}
		})
	}
}

func listed(t *testing.T, crl *x509.RevocationList, file string) bool {
	t.Helper()
	c, err := readCert(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
			return true
		}
	}
	return false
}

func TestRevokeRefusals(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	mustRun(t, "ca", "--dir", dir)
	mustRun(t, "ca", "--dir", other)
	mustRun(t, "master", "--dir", other, "foreign")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"revoke", "--dir", dir}, "revoke takes one NAME or FILE.crt"},
		{[]string{"revoke", "--dir", dir, "a", "b"}, "revoke takes one NAME or FILE.crt"},
		{[]string{"revoke", "--dir", dir, "nope"}, "nope.crt: no such certificate"},
		{[]string{"revoke", "--dir", dir, "ca"}, "is the CA itself"},
		{[]string{"revoke", "--dir", dir, filepath.Join(dir, "ca.crt")}, "is a CA certificate"},
		{[]string{"revoke", "--dir", dir, "../x"}, "no such certificate"},
		{[]string{"revoke", "--dir", dir, "a b"}, "bad name"},
		{[]string{"revoke", "--dir", dir, "--days", "0", "x"}, "--days 0"},
		{[]string{"revoke", "--dir", dir, filepath.Join(other, "foreign.crt")}, "was not issued by the CA"},
		{[]string{"revoke", "--dir", t.TempDir(), filepath.Join(other, "foreign.crt")}, "no CA in"},
	} {
		t.Run(strings.Join(tc.args[1:], " "), func(t *testing.T) {
			wantFail(t, runT(t, tc.args...), exitUsage, tc.want)
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.crl")); err == nil {
		t.Error("a refused revoke wrote ca.crl")
	}

	// A list signed by another CA is not extended.
	mustRun(t, "revoke", "--dir", other, "foreign")
	mustRun(t, "master", "--dir", dir, "m1")
	data, err := os.ReadFile(filepath.Join(other, "ca.crl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crl"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	wantFail(t, runT(t, "revoke", "--dir", dir, "m1"), exitUsage, "is not signed by the CA")
}
