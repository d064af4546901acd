package certs

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Sentinels for errors.Is; the messages users see name the file and say
// what to do.
var (
	// ErrExists: a file to be written already exists (nothing is ever
	// overwritten: a lost CA key cannot be recovered).
	ErrExists = errors.New("file already exists")
	// ErrKeyPermissions: a private key file is accessible by other users.
	ErrKeyPermissions = errors.New("key file accessible by other users")
)

// fileError carries a message for users and a sentinel for callers.
type fileError struct {
	msg  string
	kind error
}

func (e *fileError) Error() string { return e.msg }
func (e *fileError) Unwrap() error { return e.kind }

func existsError(path string) error {
	return &fileError{msg: path + " already exists: refusing to overwrite it", kind: ErrExists}
}

// CertPEM encodes a certificate as PEM.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// KeyPEM encodes a private key as PKCS #8 PEM.
func KeyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// writeNew writes data to a file that must not exist yet (O_EXCL also
// refuses a symlink planted at path). A partly written file is removed.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return existsError(path)
		}
		return fmt.Errorf("create %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// SavePair writes dir/name.crt (0644) and dir/name.key (0600). Neither may
// exist yet; on failure neither is left behind.
func SavePair(dir, name string, cert *x509.Certificate, key crypto.Signer) error {
	kp, err := KeyPEM(key)
	if err != nil {
		return err
	}
	crt, keyf := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	for _, p := range []string{crt, keyf} {
		if _, err := os.Lstat(p); err == nil {
			return existsError(p)
		}
	}
	if err := writeNew(keyf, kp, 0o600); err != nil {
		return err
	}
	if err := writeNew(crt, CertPEM(cert), 0o644); err != nil {
		// The key was created by this call (O_EXCL): a key without its
		// certificate is useless and would block a retry.
		os.Remove(keyf)
		return err
	}
	return nil
}

// LoadCA reads dir/ca.crt and dir/ca.key. A missing file gives an error
// matching fs.ErrNotExist.
func LoadCA(dir string) (*CA, error) {
	crt, keyf := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	pair, err := LoadKeyPair(crt, keyf)
	if err != nil {
		return nil, err
	}
	if !pair.Leaf.IsCA {
		return nil, fmt.Errorf("%s: not a CA certificate", crt)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key cannot sign", keyf)
	}
	return &CA{Cert: pair.Leaf, Key: key}, nil
}

// LoadKeyPair reads a certificate and its key, refusing a key file that
// other users (group or others) can access, as ssh does.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	st, err := os.Stat(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return tls.Certificate{}, &fileError{
			msg:  fmt.Sprintf("key file %s is accessible by other users (mode %v): chmod 600 it", keyFile, st.Mode().Perm()),
			kind: ErrKeyPermissions,
		}
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load certificate %s with key %s: %w", certFile, keyFile, err)
	}
	pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse certificate %s: %w", certFile, err)
	}
	return pair, nil
}

// LoadPool reads a PEM file of CA certificates.
func LoadPool(caFile string) (*x509.CertPool, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return pool, nil
}
