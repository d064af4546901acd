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

// CertPEM encodes a certificate as PEM.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// KeyPEM encodes a private key as PKCS #8 PEM.
func KeyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// writeNew writes data to a file that must not exist yet.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists: refusing to overwrite it", path)
		}
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// SavePair writes dir/name.crt (0644) and dir/name.key (0600). Neither may
// exist yet.
func SavePair(dir, name string, cert *x509.Certificate, key crypto.Signer) error {
	kp, err := KeyPEM(key)
	if err != nil {
		return err
	}
	crt, keyf := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	for _, p := range []string{crt, keyf} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists: refusing to overwrite it", p)
		}
	}
	if err := writeNew(keyf, kp, 0o600); err != nil {
		return err
	}
	return writeNew(crt, CertPEM(cert), 0o644)
}

// LoadCA reads dir/ca.crt and dir/ca.key.
func LoadCA(dir string) (*CA, error) {
	pair, err := LoadKeyPair(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s: not a CA certificate", filepath.Join(dir, "ca.crt"))
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key cannot sign", filepath.Join(dir, "ca.key"))
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadKeyPair reads a certificate and its key, refusing a key file that
// other users can read.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	st, err := os.Stat(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("key file: %w", err)
	}
	if st.Mode().Perm()&0o007 != 0 {
		return tls.Certificate{}, fmt.Errorf("key file %s is accessible by other users (mode %v): chmod 600 it", keyFile, st.Mode().Perm())
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
