package certs

import (
	"crypto"
	"crypto/tls"
	"testing"
	"time"
)

var keyTypes = []KeyType{Ed25519, ECDSAP256}

func mustCA(t *testing.T, name string, kt KeyType) *CA {
	t.Helper()
	ca, err := NewCA(name, kt)
	if err != nil {
		t.Fatalf("NewCA(%q, %v): %v", name, kt, err)
	}
	return ca
}

// mustPair issues a certificate and returns it as a tls.Certificate.
func mustPair(t *testing.T, ca *CA, o IssueOptions) tls.Certificate {
	t.Helper()
	cert, key, err := ca.Issue(o)
	if err != nil {
		t.Fatalf("Issue(%+v): %v", o, err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// near reports whether a and b are within a minute of each other: the
// certificates' times are computed from time.Now inside the call.
func near(a, b time.Time) bool {
	d := a.Sub(b)
	return d > -time.Minute && d < time.Minute
}

// samePublicKey compares keys with the Equal method every crypto key type
// of the standard library has.
func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
