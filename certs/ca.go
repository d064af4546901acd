package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// Role is what a certificate may be used for.
type Role int

// Roles.
const (
	RoleCA     Role = iota
	RoleMaster      // clientAuth
	RoleSlave       // serverAuth
)

// KeyType selects the key algorithm of a new certificate.
type KeyType int

// Key types. Ed25519 keeps certificates small (QUIC handshakes must fit in
// 16 KiB per encryption level); ECDSA P-256 interoperates more widely.
const (
	Ed25519 KeyType = iota
	ECDSAP256
)

// Validity periods for new certificates.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	LeafValidity = 2 * 365 * 24 * time.Hour
)

// CA is a certificate authority that can issue certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// IssueOptions describe a certificate to issue. Zero times mean "now" and
// "now + LeafValidity" (a zero NotBefore with a NotAfter in the past means
// one hour before NotAfter). NotAfter must be later than NotBefore.
type IssueOptions struct {
	Name      string   // common name and first SAN (IP SAN if it is an IP address)
	Hosts     []string // more SANs: IP addresses become IP SANs, the rest DNS SANs
	Role      Role
	KeyType   KeyType
	NotBefore time.Time
	NotAfter  time.Time
	// NoUsage leaves out the extended key usage extension (for tests of the
	// refusal of such certificates).
	NoUsage bool
}

func newKey(t KeyType) (crypto.Signer, error) {
	switch t {
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return nil, fmt.Errorf("unknown key type %v", t)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NewCA creates a self-signed CA named name, valid for CAValidity.
func NewCA(name string, kt KeyType) (*CA, error) {
	return NewCAWithValidity(name, kt, CAValidity)
}

// NewCAWithValidity creates a self-signed CA named name, valid from five
// minutes ago (clock skew) for validity.
func NewCAWithValidity(name string, kt KeyType, validity time.Duration) (*CA, error) {
	if name == "" {
		return nil, errors.New("CA name is empty")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("CA validity %v is not positive", validity)
	}
	key, err := newKey(kt)
	if err != nil {
		return nil, fmt.Errorf("new CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, fmt.Errorf("new CA serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-5 * time.Minute), // tolerate small clock skew
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate %q: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate %q: %w", name, err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Issue creates a key and a certificate signed by ca.
//
// The name is the common name and the first SAN: a DNS SAN, or an IP SAN
// when it is an IP address (a client dialing an IP address matches only IP
// SANs). Hosts repeating a SAN already present are skipped.
func (ca *CA) Issue(o IssueOptions) (*x509.Certificate, crypto.Signer, error) {
	if o.Name == "" {
		return nil, nil, errors.New("certificate name is empty")
	}
	if !o.NoUsage && o.Role != RoleMaster && o.Role != RoleSlave {
		return nil, nil, fmt.Errorf("issue %q: cannot issue a leaf certificate for role %d", o.Name, o.Role)
	}
	key, err := newKey(o.KeyType)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %q: %w", o.Name, err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, fmt.Errorf("issue %q: serial: %w", o.Name, err)
	}
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-5 * time.Minute) // tolerate small clock skew
		// An explicit NotAfter in the past (an expired certificate for a
		// test) gets a NotBefore before it rather than an error.
		if !o.NotAfter.IsZero() && !o.NotAfter.After(o.NotBefore) {
			o.NotBefore = o.NotAfter.Add(-time.Hour)
		}
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(LeafValidity)
	}
	if !o.NotAfter.After(o.NotBefore) {
		return nil, nil, fmt.Errorf("issue %q: not after %v is not later than not before %v", o.Name, o.NotAfter, o.NotBefore)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: o.Name},
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyAgreement
	}
	for _, h := range append([]string{o.Name}, o.Hosts...) {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if h != "" && !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if !o.NoUsage {
		switch o.Role {
		case RoleMaster:
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		case RoleSlave:
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %q: %w", o.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %q: parse: %w", o.Name, err)
	}
	return cert, key, nil
}
