package certs

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRevokeFile(t *testing.T) {
	for _, kt := range keyTypes {
		t.Run(kt.String(), func(t *testing.T) {
			ca := mustCA(t, "tdfs test CA", kt)
			file := filepath.Join(t.TempDir(), "ca.crl")
			a, _, _ := ca.Issue(IssueOptions{Name: "a", Role: RoleMaster, KeyType: kt})
			b, _, _ := ca.Issue(IssueOptions{Name: "b", Role: RoleSlave, KeyType: kt})

			if already, err := RevokeFile(file, ca, a, 0); err != nil || already {
				t.Fatalf("revoke a: %v, already %v", err, already)
			}
			crl := mustLoadCRL(t, file, ca)
			if crl.Number.Int64() != 1 || !revokedIn(crl, a) || revokedIn(crl, b) {
				t.Fatalf("after a: number %v, entries %v", crl.Number, crl.RevokedCertificateEntries)
			}
			if d := time.Until(crl.NextUpdate); d < CRLValidity-time.Hour || d > CRLValidity {
				t.Errorf("next update in %v, want %v", d, CRLValidity)
			}

			if already, err := RevokeFile(file, ca, b, time.Hour); err != nil || already {
				t.Fatalf("revoke b: %v, already %v", err, already)
			}
			crl = mustLoadCRL(t, file, ca)
			if crl.Number.Int64() != 2 || !revokedIn(crl, a) || !revokedIn(crl, b) || len(crl.RevokedCertificateEntries) != 2 {
				t.Fatalf("after b: number %v, entries %v", crl.Number, crl.RevokedCertificateEntries)
			}
			if d := time.Until(crl.NextUpdate); d > time.Hour {
				t.Errorf("next update in %v, want an hour", d)
			}

			// Again: reported, re-signed, no duplicate entry.
			if already, err := RevokeFile(file, ca, a, 0); err != nil || !already {
				t.Fatalf("revoke a again: %v, already %v", err, already)
			}
			crl = mustLoadCRL(t, file, ca)
			if crl.Number.Int64() != 3 || len(crl.RevokedCertificateEntries) != 2 {
				t.Errorf("after a again: number %v, %d entries", crl.Number, len(crl.RevokedCertificateEntries))
			}
			if ents, _ := os.ReadDir(filepath.Dir(file)); len(ents) != 1 {
				t.Errorf("temporary files left: %v", ents)
			}
		})
	}
}

func TestRevokeFileRefusals(t *testing.T) {
	ca, other := mustCA(t, "ca", Ed25519), mustCA(t, "other", Ed25519)
	dir := t.TempDir()
	foreign, _, _ := other.Issue(IssueOptions{Name: "x", Role: RoleMaster})
	mine, _, _ := ca.Issue(IssueOptions{Name: "y", Role: RoleMaster})
	file := filepath.Join(dir, "ca.crl")
	if _, err := RevokeFile(file, ca, foreign, 0); err == nil || !strings.Contains(err.Error(), `was not issued by the CA "ca"`) {
		t.Errorf("foreign certificate: %v", err)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refusal wrote the CRL: %v", err)
	}
	if _, err := RevokeFile(file, other, foreign, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := RevokeFile(file, ca, mine, 0); err == nil || !strings.Contains(err.Error(), "is not signed by the CA") {
		t.Errorf("extending another CA's list: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.crl")
	os.WriteFile(garbage, []byte("not a CRL\n"), 0o644)
	if _, err := RevokeFile(garbage, ca, mine, 0); err == nil || !strings.Contains(err.Error(), "holds no PEM CRL") {
		t.Errorf("garbage list: %v", err)
	}
}

func mustLoadCRL(t *testing.T, file string, ca *CA) *x509.RevocationList {
	t.Helper()
	crl, err := LoadCRL(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	return crl
}

func revokedIn(crl *x509.RevocationList, c *x509.Certificate) bool {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
			return true
		}
	}
	return false
}
