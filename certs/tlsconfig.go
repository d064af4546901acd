package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
)

// ALPN is the application protocol both sides offer; its suffix is the
// protocol version, so mismatched versions fail the handshake with
// "no application protocol".
const ALPN = "tdfs/3"

// ServerConfig returns the slave's TLS configuration: TLS 1.3, the peer
// must present a certificate that chains to pool and carries the clientAuth
// usage, and, when allow is not empty, whose name (common name or a DNS SAN)
// is in allow.
func ServerConfig(cert tls.Certificate, pool *x509.CertPool, allow []string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   []string{ALPN},
		// One long-lived connection per master: resumption gains nothing,
		// and resumed sessions skip VerifyPeerCertificate (crypto/tls docs).
		SessionTicketsDisabled: true,
		// VerifyConnection runs on every connection, resumed or not, after
		// the chain was verified.
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := checkMaster(cs, allow)
			return err
		},
	}
}

// checkMaster is the slave's check of a master, after crypto/tls verified
// its chain with the clientAuth usage: the certificate must say clientAuth
// (crypto/x509 accepts a leaf with no usage extension for any use), and
// carry an allowed name when allow is not empty.
func checkMaster(cs tls.ConnectionState, allow []string) (*x509.Certificate, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("tdfs: master presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return nil, fmt.Errorf("tdfs: certificate %q is not a master certificate (no clientAuth usage)", leaf.Subject.CommonName)
	}
	if len(allow) > 0 && !nameAllowed(leaf, allow) {
		return nil, fmt.Errorf("tdfs: master %q is not in --allow-master", leaf.Subject.CommonName)
	}
	return leaf, nil
}

func nameAllowed(c *x509.Certificate, allow []string) bool {
	if slices.Contains(allow, c.Subject.CommonName) {
		return true
	}
	for _, n := range c.DNSNames {
		if slices.Contains(allow, n) {
			return true
		}
	}
	return false
}

// ClientConfig returns the master's TLS configuration for dialing the slave
// known as serverName (a DNS name or IP address in its certificate):
// TLS 1.3, the slave's chain must verify against pool, name serverName and
// carry the serverAuth usage.
func ClientConfig(cert tls.Certificate, pool *x509.CertPool, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   serverName,
		NextProtos:   []string{ALPN},
		// No session cache: no resumption, no 0-RTT (replayable).
		SessionTicketsDisabled: true,
		VerifyConnection:       checkSlave,
	}
}

// checkSlave is the master's check of a slave, after its chain was
// verified with the serverAuth usage and the server name.
func checkSlave(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tdfs: slave presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	// crypto/x509 accepts a leaf with no usage extension for any use; a
	// slave certificate must say serverAuth.
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return fmt.Errorf("tdfs: certificate %q is not a slave certificate (no serverAuth usage)", leaf.Subject.CommonName)
	}
	return nil
}

// CheckRole reports whether c may act in role r, so a daemon given the
// wrong certificate says so at startup instead of failing every handshake.
func CheckRole(c *x509.Certificate, r Role) error {
	want, name := x509.ExtKeyUsageClientAuth, "master (clientAuth)"
	if r == RoleSlave {
		want, name = x509.ExtKeyUsageServerAuth, "slave (serverAuth)"
	}
	if !slices.Contains(c.ExtKeyUsage, want) {
		return fmt.Errorf("certificate %q is not a %s certificate", c.Subject.CommonName, name)
	}
	return nil
}
