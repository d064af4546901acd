package certs

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// CRLValidity is how long a revocation list written by RevokeFile stays
// current (its NextUpdate). Past it the daemons keep using the list and
// warn once a day: refusing every peer because nobody re-signed the CRL in
// time would turn a bookkeeping lapse into an outage. Re-running
// tdfs-certs revoke (even for a name already revoked) re-signs it.
const CRLValidity = 365 * 24 * time.Hour

// ErrRevoked: a peer certificate is on the revocation list.
var ErrRevoked = errors.New("certificate revoked")

// pemCRL is the PEM block type of a CRL (RFC 7468 section 5).
const pemCRL = "X509 CRL"

// CRLPEM encodes a DER revocation list as PEM.
func CRLPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCRL, Bytes: der})
}

// Serial formats a serial number as openssl prints it (x509 -serial, crl
// -text): upper-case hexadecimal, so a user can grep either output.
func Serial(n *big.Int) string {
	if n == nil {
		return "?"
	}
	return strings.ToUpper(n.Text(16))
}

// parseCRLs reads every PEM CRL in data; there must be at least one.
func parseCRLs(data []byte, file string) ([]*x509.RevocationList, error) {
	var out []*x509.RevocationList
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != pemCRL {
			continue
		}
		crl, err := x509.ParseRevocationList(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CRL file %s: %w", file, err)
		}
		out = append(out, crl)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("CRL file %s holds no PEM CRL (-----BEGIN X509 CRL-----)", file)
	}
	return out, nil
}

// LoadCRL reads the first PEM revocation list of file. It checks no
// signature: see RevokeFile and Store for that.
func LoadCRL(file string) (*x509.RevocationList, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CRL file: %w", err)
	}
	crls, err := parseCRLs(data, file)
	if err != nil {
		return nil, err
	}
	return crls[0], nil
}

// RevokeFile adds cert to the revocation list in file, signed by ca: the
// entries already there are kept, the CRL number goes up by one and the
// list is current for validity (CRLValidity when zero). A missing file is
// a new, empty list. cert must have been issued by ca, and an existing
// list must be ca's. It reports whether cert was revoked already (the
// list is re-signed all the same, which renews its NextUpdate).
//
// The file is replaced atomically (a temporary file renamed over it), so a
// daemon reading it sees the old list or the new one, never half of one.
func RevokeFile(file string, ca *CA, cert *x509.Certificate, validity time.Duration) (already bool, err error) {
	if validity == 0 {
		validity = CRLValidity
	}
	if validity < 0 {
		return false, fmt.Errorf("CRL validity %v is negative", validity)
	}
	if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
		return false, fmt.Errorf("certificate %q (serial %s) was not issued by the CA %q: %w",
			cert.Subject.CommonName, Serial(cert.SerialNumber), ca.Cert.Subject.CommonName, err)
	}
	number := big.NewInt(1)
	var entries []x509.RevocationListEntry
	switch prev, err := LoadCRL(file); {
	case err == nil:
		if err := prev.CheckSignatureFrom(ca.Cert); err != nil {
			return false, fmt.Errorf("%s is not signed by the CA %q: refusing to extend it: %w", file, ca.Cert.Subject.CommonName, err)
		}
		if prev.Number != nil {
			number.Add(prev.Number, big.NewInt(1))
		}
		entries = prev.RevokedCertificateEntries
	case errors.Is(err, fs.ErrNotExist):
	default:
		return false, err
	}
	for _, e := range entries {
		if e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			already = true
		}
	}
	now := time.Now()
	if !already {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: cert.SerialNumber, RevocationTime: now})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		RevokedCertificateEntries: entries,
		Number:                    number,
		ThisUpdate:                now.Add(-5 * time.Minute), // tolerate small clock skew
		NextUpdate:                now.Add(validity),
	}, ca.Cert, ca.Key)
	if err != nil {
		return false, fmt.Errorf("sign CRL %s: %w", file, err)
	}
	return already, replaceFile(file, CRLPEM(der), 0o644)
}

// replaceFile writes data to path through a temporary file in the same
// directory, renamed over path once synced.
func replaceFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
