package certs

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNewCA(t *testing.T) {
	for _, kt := range keyTypes {
		t.Run(kt.String(), func(t *testing.T) {
			before := time.Now()
			ca := mustCA(t, "test CA", kt)
			c := ca.Cert
			if !c.IsCA || !c.BasicConstraintsValid {
				t.Errorf("IsCA=%v BasicConstraintsValid=%v, want both true", c.IsCA, c.BasicConstraintsValid)
			}
			// Path length 0: the CA signs leaves only, never an intermediate.
			if c.MaxPathLen != 0 || !c.MaxPathLenZero {
				t.Errorf("MaxPathLen=%d MaxPathLenZero=%v, want 0 true", c.MaxPathLen, c.MaxPathLenZero)
			}
			if c.KeyUsage&x509.KeyUsageCertSign == 0 {
				t.Errorf("KeyUsage %b lacks CertSign", c.KeyUsage)
			}
			if c.Subject.CommonName != "test CA" {
				t.Errorf("CN %q", c.Subject.CommonName)
			}
			if err := c.CheckSignatureFrom(c); err != nil {
				t.Errorf("not self-signed: %v", err)
			}
			if !c.NotBefore.Before(before) {
				t.Errorf("NotBefore %v is not before the call (%v): no clock-skew margin", c.NotBefore, before)
			}
			if !near(c.NotAfter, before.Add(CAValidity)) {
				t.Errorf("NotAfter %v, want about %v", c.NotAfter, before.Add(CAValidity))
			}
			checkKeyType(t, c, kt)
		})
	}
}

func TestNewCAWithValidity(t *testing.T) {
	ca, err := NewCAWithValidity("short CA", Ed25519, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Now().Add(48 * time.Hour); !near(ca.Cert.NotAfter, want) {
		t.Errorf("NotAfter %v, want about %v", ca.Cert.NotAfter, want)
	}
	if _, err := NewCAWithValidity("x", Ed25519, 0); err == nil {
		t.Error("zero validity accepted")
	}
	if _, err := NewCA("", Ed25519); err == nil {
		t.Error("empty CA name accepted")
	}
	if _, err := NewCA("x", KeyType(42)); err == nil || !strings.Contains(err.Error(), "unknown key type") {
		t.Errorf("unknown key type: err %v", err)
	}
}

func checkKeyType(t *testing.T, c *x509.Certificate, kt KeyType) {
	t.Helper()
	switch kt {
	case Ed25519:
		if _, ok := c.PublicKey.(ed25519.PublicKey); !ok {
			t.Errorf("public key %T, want ed25519", c.PublicKey)
		}
	case ECDSAP256:
		k, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P256() {
			t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
		}
	}
}

func TestIssueRoles(t *testing.T) {
	cases := []struct {
		name    string
		role    Role
		noUsage bool
		want    []x509.ExtKeyUsage
	}{
		{"master", RoleMaster, false, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{"slave", RoleSlave, false, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		{"master-nousage", RoleMaster, true, nil},
		{"slave-nousage", RoleSlave, true, nil},
	}
	for _, caKT := range keyTypes {
		ca := mustCA(t, "ca-"+caKT.String(), caKT)
		for _, kt := range keyTypes {
			for _, tc := range cases {
				t.Run(caKT.String()+"/"+kt.String()+"/"+tc.name, func(t *testing.T) {
					before := time.Now()
					cert, key, err := ca.Issue(IssueOptions{Name: tc.name, Role: tc.role, KeyType: kt, NoUsage: tc.noUsage})
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(cert.ExtKeyUsage, tc.want) {
						t.Errorf("ExtKeyUsage %v, want %v", cert.ExtKeyUsage, tc.want)
					}
					if len(cert.UnknownExtKeyUsage) != 0 {
						t.Errorf("unknown EKUs %v", cert.UnknownExtKeyUsage)
					}
					// NoUsage must leave out the extension itself, not write
					// an empty one: that is what the refusal tests need.
					for _, ext := range cert.Extensions {
						if ext.Id.Equal([]int{2, 5, 29, 37}) && tc.noUsage {
							t.Error("NoUsage certificate carries an extended key usage extension")
						}
					}
					if cert.IsCA {
						t.Error("leaf is a CA")
					}
					if cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
						t.Errorf("KeyUsage %b lacks DigitalSignature (TLS 1.3 CertificateVerify)", cert.KeyUsage)
					}
					if cert.Subject.CommonName != tc.name || !slices.Equal(cert.DNSNames, []string{tc.name}) {
						t.Errorf("CN %q DNS %v, want %q", cert.Subject.CommonName, cert.DNSNames, tc.name)
					}
					if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
						t.Errorf("not signed by the CA: %v", err)
					}
					if !samePublicKey(key.Public(), cert.PublicKey) {
						t.Error("returned key does not match the certificate")
					}
					checkKeyType(t, cert, kt)
					if !cert.NotBefore.Before(before) || !near(cert.NotAfter, before.Add(LeafValidity)) {
						t.Errorf("validity %v..%v, want just before now .. now+%v", cert.NotBefore, cert.NotAfter, LeafValidity)
					}
					pool := x509.NewCertPool()
					pool.AddCert(ca.Cert)
					usage := x509.ExtKeyUsageServerAuth
					if tc.role == RoleMaster {
						usage = x509.ExtKeyUsageClientAuth
					}
					if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
						t.Errorf("chain does not verify for its usage: %v", err)
					}
					other := x509.ExtKeyUsageClientAuth
					if tc.role == RoleMaster {
						other = x509.ExtKeyUsageServerAuth
					}
					_, err = cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{other}})
					if tc.noUsage && err != nil {
						// Documents why VerifyConnection checks the usage:
						// crypto/x509 takes "no extension" as "any usage".
						t.Errorf("x509 refused a certificate without EKU (%v): the VerifyConnection checks may be obsolete", err)
					}
					if !tc.noUsage && err == nil {
						t.Errorf("a %s certificate verifies for usage %v", tc.name, other)
					}
				})
			}
		}
	}
}

func TestIssueSANs(t *testing.T) {
	ca := mustCA(t, "ca", Ed25519)
	cert, _, err := ca.Issue(IssueOptions{
		Name:  "slave-a",
		Role:  RoleSlave,
		Hosts: []string{"10.1.2.3", "::1", "slave-a.example.com", "slave-a", "10.1.2.3", "localhost"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"slave-a", "slave-a.example.com", "localhost"}; !slices.Equal(cert.DNSNames, want) {
		t.Errorf("DNS SANs %v, want %v (name first, duplicates dropped)", cert.DNSNames, want)
	}
	wantIPs := []net.IP{net.ParseIP("10.1.2.3"), net.ParseIP("::1")}
	if !slices.EqualFunc(cert.IPAddresses, wantIPs, net.IP.Equal) {
		t.Errorf("IP SANs %v, want %v", cert.IPAddresses, wantIPs)
	}
	for _, h := range []string{"slave-a", "slave-a.example.com", "localhost", "10.1.2.3", "::1"} {
		if err := cert.VerifyHostname(h); err != nil {
			t.Errorf("VerifyHostname(%q): %v", h, err)
		}
	}
	if err := cert.VerifyHostname("slave-b"); err == nil {
		t.Error("VerifyHostname(slave-b) succeeded")
	}
}

func TestIssueIPName(t *testing.T) {
	ca := mustCA(t, "ca", Ed25519)
	cert, _, err := ca.Issue(IssueOptions{Name: "192.0.2.7", Role: RoleSlave})
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("192.0.2.7")) {
		t.Errorf("DNS %v IP %v, want one IP SAN 192.0.2.7", cert.DNSNames, cert.IPAddresses)
	}
	if err := cert.VerifyHostname("192.0.2.7"); err != nil {
		t.Errorf("a client dialing the name's IP would refuse it: %v", err)
	}
}

func TestIssueValidity(t *testing.T) {
	ca := mustCA(t, "ca", Ed25519)
	nb := time.Now().Add(24 * time.Hour).Truncate(time.Second)
	na := nb.Add(72 * time.Hour)
	cert, _, err := ca.Issue(IssueOptions{Name: "later", Role: RoleMaster, NotBefore: nb, NotAfter: na})
	if err != nil {
		t.Fatal(err)
	}
	if !cert.NotBefore.Equal(nb) || !cert.NotAfter.Equal(na) {
		t.Errorf("validity %v..%v, want %v..%v", cert.NotBefore, cert.NotAfter, nb, na)
	}

	// NotAfter in the past alone: an expired certificate, not an error.
	past := time.Now().Add(-24 * time.Hour).Truncate(time.Second)
	cert, _, err = ca.Issue(IssueOptions{Name: "old", Role: RoleMaster, NotAfter: past})
	if err != nil {
		t.Fatalf("expired certificate: %v", err)
	}
	if !cert.NotAfter.Equal(past) || !cert.NotBefore.Before(past) {
		t.Errorf("validity %v..%v, want ..%v", cert.NotBefore, cert.NotAfter, past)
	}

	if _, _, err := ca.Issue(IssueOptions{Name: "inverted", Role: RoleMaster, NotBefore: na, NotAfter: nb}); err == nil {
		t.Error("NotAfter before NotBefore accepted")
	}
}

func TestIssueErrors(t *testing.T) {
	ca := mustCA(t, "ca", Ed25519)
	for _, o := range []IssueOptions{
		{Name: "", Role: RoleMaster},
		{Name: "x", Role: RoleCA},
		{Name: "x", Role: Role(9)},
		{Name: "x", Role: RoleMaster, KeyType: KeyType(9)},
	} {
		if c, _, err := ca.Issue(o); err == nil {
			t.Errorf("Issue(%+v) succeeded: %v", o, c.Subject)
		}
	}
}
