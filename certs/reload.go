package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ExpiryWarning is how long before a certificate expires a Store starts
// warning about it (once a day per certificate).
const ExpiryWarning = 30 * 24 * time.Hour

// expiryRelog is how often the same expiry warning is logged again.
const expiryRelog = 24 * time.Hour

// Files names what a Store loads.
type Files struct {
	Cert, Key string // this daemon's certificate and private key (PEM)
	CA        string // CA certificates peers must chain to (PEM, one or more)
	CRL       string // revocation lists signed by one of those CAs (PEM); "" for none
}

// Store holds a daemon's TLS material (its certificate and key, the CA,
// the revocation list) and swaps it atomically on Reload. The TLS
// configurations it builds read the current material at every handshake
// through callbacks (GetConfigForClient, GetClientCertificate,
// VerifyConnection), so a reload changes what new handshakes use while
// established connections, already authenticated, stay up.
//
// A reload that fails (unreadable or malformed file, key not matching the
// certificate, key file readable by others, certificate of the wrong role,
// CRL not signed by the CA) changes nothing: the previous material stays
// in use and the error names the file.
type Store struct {
	files Files
	role  Role
	log   *slog.Logger
	now   func() time.Time // tests

	cur atomic.Pointer[material]

	mu     sync.Mutex // serialises loads; guards seen and failed
	seen   string     // stamp of the files at the last poll
	failed string     // stamp of the files whose load failed ("" if none)

	warnMu sync.Mutex
	warned map[[sha256.Size]byte]time.Time // last expiry warning per certificate or CRL
}

// material is one consistent set of files, loaded together.
type material struct {
	cert    *tls.Certificate
	cas     []*x509.Certificate
	pool    *x509.CertPool
	crls    []*x509.RevocationList
	revoked map[revKey]time.Time // revocation time by issuer and serial
	stamp   string               // the files' sizes and times before they were read
}

type revKey struct{ issuer, serial string }

func revKeyOf(issuer []byte, serial *big.Int) revKey {
	return revKey{string(issuer), string(serial.Bytes())}
}

// LoadStore loads the files for a daemon of role (RoleMaster or
// RoleSlave); log receives expiry warnings (nil: none). An error here is a
// startup error.
func LoadStore(f Files, role Role, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{files: f, role: role, log: log, now: time.Now, warned: map[[sha256.Size]byte]time.Time{}}
	m, err := load(f, role)
	if err != nil {
		return nil, err
	}
	s.cur.Store(m)
	s.seen = m.stamp
	return s, nil
}

// Files returns the files the store loads.
func (s *Store) Files() Files { return s.files }

// Leaf returns the current certificate of this daemon.
func (s *Store) Leaf() *x509.Certificate { return s.cur.Load().cert.Leaf }

// Revoked returns how many serials the current revocation lists hold.
func (s *Store) Revoked() int { return len(s.cur.Load().revoked) }

// Reload loads every file anew and, if all of them are good, makes them
// the material of new handshakes. On error the previous material stays.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked()
}

func (s *Store) reloadLocked() error {
	m, err := load(s.files, s.role)
	if err != nil {
		s.failed = stamp(s.files)
		return err
	}
	s.cur.Store(m)
	s.seen, s.failed = m.stamp, ""
	return nil
}

// ReloadIfChanged reloads when the files' sizes or modification times
// differ from those loaded and have not changed since the previous call:
// called every few seconds, it waits for a copy in progress (a certificate
// replaced before its key) to settle, and tries files that failed to load
// only once until they change again. It reports whether it reloaded.
func (s *Store) ReloadIfChanged() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := stamp(s.files)
	prev := s.seen
	s.seen = st
	if st == s.cur.Load().stamp || st != prev || st == s.failed {
		return false, nil
	}
	if err := s.reloadLocked(); err != nil {
		return false, err
	}
	return true, nil
}

// stamp describes the files' sizes and modification times. A rename over
// a file (how RevokeFile and most tools replace one) changes it.
func stamp(f Files) string {
	var b strings.Builder
	for _, p := range []string{f.Cert, f.Key, f.CA, f.CRL} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err != nil {
			fmt.Fprintf(&b, "%s:missing;", p)
		} else {
			fmt.Fprintf(&b, "%s:%d:%d:%v;", p, st.Size(), st.ModTime().UnixNano(), st.Mode())
		}
	}
	return b.String()
}

func load(f Files, role Role) (*material, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, errors.New("a certificate, its key and a CA file are required")
	}
	m := &material{stamp: stamp(f)}
	pair, err := LoadKeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, err
	}
	if err := CheckRole(pair.Leaf, role); err != nil {
		return nil, fmt.Errorf("certificate file %s: %w", f.Cert, err)
	}
	m.cert = &pair
	if m.cas, err = loadCerts(f.CA); err != nil {
		return nil, err
	}
	m.pool = x509.NewCertPool()
	for _, c := range m.cas {
		m.pool.AddCert(c)
	}
	if f.CRL == "" {
		return m, nil
	}
	data, err := os.ReadFile(f.CRL)
	if err != nil {
		return nil, fmt.Errorf("CRL file: %w", err)
	}
	if m.crls, err = parseCRLs(data, f.CRL); err != nil {
		return nil, err
	}
	m.revoked = map[revKey]time.Time{}
	for _, crl := range m.crls {
		if !signedByOneOf(crl, m.cas) {
			return nil, fmt.Errorf("CRL file %s is not signed by the CA in %s (issuer %q)", f.CRL, f.CA, crl.Issuer.CommonName)
		}
		for _, e := range crl.RevokedCertificateEntries {
			m.revoked[revKeyOf(crl.RawIssuer, e.SerialNumber)] = e.RevocationTime
		}
	}
	return m, nil
}

func signedByOneOf(crl *x509.RevocationList, cas []*x509.Certificate) bool {
	for _, ca := range cas {
		if crl.CheckSignatureFrom(ca) == nil {
			return true
		}
	}
	return false
}

// loadCerts reads every PEM certificate of a CA file; there must be one.
func loadCerts(file string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA file %s: %w", file, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", file)
	}
	return out, nil
}

// checkRevoked refuses leaf if a current revocation list holds it.
func (s *Store) checkRevoked(m *material, leaf *x509.Certificate) error {
	at, ok := m.revoked[revKeyOf(leaf.RawIssuer, leaf.SerialNumber)]
	if !ok {
		return nil
	}
	return &fileError{kind: ErrRevoked, msg: fmt.Sprintf("tdfs: certificate %q serial %s is revoked by %s (since %s)",
		leaf.Subject.CommonName, Serial(leaf.SerialNumber), s.files.CRL, at.UTC().Format(time.RFC3339))}
}

// CheckPeer reports whether a peer's certificate, accepted at an earlier
// handshake, is revoked by the revocation list loaded now: a daemon
// closes the connections of revoked peers after a reload.
func (s *Store) CheckPeer(leaf *x509.Certificate) error {
	return s.checkRevoked(s.cur.Load(), leaf)
}

// ServerConfig returns the slave's TLS configuration: as the package-level
// ServerConfig, plus the revocation list, with the material current at
// each handshake.
func (s *Store) ServerConfig(allow []string) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		ClientAuth:             tls.RequireAndVerifyClientCert,
		NextProtos:             []string{ALPN},
		SessionTicketsDisabled: true,
		// The whole configuration of a handshake comes from the material
		// current when the ClientHello arrives: the CA pool crypto/tls
		// verifies the master against cannot be swapped in a config
		// quic-go has already cloned, but this callback runs per
		// handshake (quic-go wraps it, tls_config_go126.go). crypto/tls
		// keeps verifying the chain itself, with its precise alerts.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.cur.Load()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*m.cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    m.pool,
				NextProtos:   []string{ALPN},
				// See the package-level ServerConfig.
				SessionTicketsDisabled: true,
				VerifyConnection: func(cs tls.ConnectionState) error {
					leaf, err := checkMaster(cs, allow)
					if err != nil {
						return err
					}
					if err := s.checkRevoked(m, leaf); err != nil {
						return err
					}
					s.warnExpiry("master certificate presented by a peer", leaf)
					return nil
				},
			}, nil
		},
	}
}

// ClientConfig returns the master's TLS configuration for dialing the
// slave known as serverName: as the package-level ClientConfig, plus the
// revocation list, with the material current now. A client configuration
// has no per-handshake hook like GetConfigForClient (and quic-go copies it
// at each dial), so the master asks for a new one before every dial
// (quictransport.Peer.TLSFunc): a reload takes effect at the next
// connection, and crypto/tls verifies the chain itself, with its own
// alerts.
func (s *Store) ClientConfig(serverName string) *tls.Config {
	m := s.cur.Load()
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		ServerName:   serverName,
		RootCAs:      m.pool,
		Certificates: []tls.Certificate{*m.cert},
		NextProtos:   []string{ALPN},
		// No session cache: no resumption, no 0-RTT (replayable).
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := checkSlave(cs); err != nil {
				return err
			}
			leaf := cs.PeerCertificates[0]
			if err := s.checkRevoked(m, leaf); err != nil {
				return err
			}
			s.warnExpiry("slave certificate presented by "+serverName, leaf)
			return nil
		},
	}
}

// CheckExpiry logs a warning for this daemon's certificate and each CA
// certificate that expires within ExpiryWarning (or has expired), and for
// a revocation list past its NextUpdate; each at most once a day. Daemons
// call it periodically; handshakes warn about peers' certificates.
func (s *Store) CheckExpiry() {
	m := s.cur.Load()
	s.warnExpiry("this daemon's certificate "+s.files.Cert, m.cert.Leaf)
	for _, ca := range m.cas {
		s.warnExpiry("CA certificate in "+s.files.CA, ca)
	}
	now := s.now()
	for _, crl := range m.crls {
		if crl.NextUpdate.IsZero() || now.Before(crl.NextUpdate) {
			continue
		}
		if s.due(sha256.Sum256(crl.Raw), now) {
			s.log.Warn("the revocation list is past its next update: still using it; re-sign it "+
				"(tdfs-certs revoke re-signs it) and reload", "crl", s.files.CRL,
				"next_update", crl.NextUpdate.UTC().Format(time.RFC3339), "number", crl.Number)
		}
	}
}

// warnExpiry logs that c expires soon or has expired, once a day.
func (s *Store) warnExpiry(what string, c *x509.Certificate) {
	now := s.now()
	left := c.NotAfter.Sub(now)
	if left > ExpiryWarning || !s.due(sha256.Sum256(c.Raw), now) {
		return
	}
	msg := fmt.Sprintf("certificate expires in %d days: renew it (tdfs-certs) and reload", int(left.Hours()/24))
	if left <= 0 {
		msg = "certificate has expired: renew it (tdfs-certs) and reload"
	}
	s.log.Warn(msg, "cert", what, "name", c.Subject.CommonName, "serial", Serial(c.SerialNumber),
		"not_after", c.NotAfter.UTC().Format(time.RFC3339))
}

// due reports whether a warning about key is due at now, and if so notes it.
func (s *Store) due(key [sha256.Size]byte, now time.Time) bool {
	s.warnMu.Lock()
	defer s.warnMu.Unlock()
	if last, ok := s.warned[key]; ok && now.Sub(last) < expiryRelog {
		return false
	}
	s.warned[key] = now
	return true
}
