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
// "now + LeafValidity".
type IssueOptions struct {
	Name      string   // common name and first DNS SAN
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
	return nil, fmt.Errorf("unknown key type %d", t)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NewCA creates a self-signed CA named name.
func NewCA(name string, kt KeyType) (*CA, error) {
	key, err := newKey(kt)
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-5 * time.Minute), // tolerate small clock skew
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Issue creates a key and a certificate signed by ca.
func (ca *CA) Issue(o IssueOptions) (*x509.Certificate, crypto.Signer, error) {
	if o.Name == "" {
		return nil, nil, errors.New("certificate name is empty")
	}
	key, err := newKey(o.KeyType)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-5 * time.Minute)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(LeafValidity)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: o.Name},
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		DNSNames:     []string{o.Name},
	}
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyAgreement
	}
	for _, h := range o.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if !o.NoUsage {
		switch o.Role {
		case RoleMaster:
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		case RoleSlave:
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		default:
			return nil, nil, fmt.Errorf("cannot issue a leaf certificate for role %d", o.Role)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}
