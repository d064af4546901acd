package certs

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPEMEncoding(t *testing.T) {
	for _, kt := range keyTypes {
		ca := mustCA(t, "ca", kt)
		b, rest := pem.Decode(CertPEM(ca.Cert))
		if b == nil || b.Type != "CERTIFICATE" || len(rest) != 0 || !bytes.Equal(b.Bytes, ca.Cert.Raw) {
			t.Fatalf("%v: CertPEM does not decode to the certificate", kt)
		}
		kp, err := KeyPEM(ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		b, _ = pem.Decode(kp)
		if b == nil || b.Type != "PRIVATE KEY" {
			t.Fatalf("%v: KeyPEM block %v", kt, b)
		}
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			t.Fatalf("%v: %v", kt, err)
		}
		if !samePublicKey(ca.Key.Public(), k.(crypto.Signer).Public()) {
			t.Errorf("%v: key changed in the round trip", kt)
		}
	}
}

func TestSaveLoadCA(t *testing.T) {
	for _, kt := range keyTypes {
		t.Run(kt.String(), func(t *testing.T) {
			dir := t.TempDir()
			ca := mustCA(t, "round trip", kt)
			if err := SavePair(dir, "ca", ca.Cert, ca.Key); err != nil {
				t.Fatal(err)
			}
			checkMode(t, filepath.Join(dir, "ca.key"), 0o600)
			got, err := LoadCA(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Cert.Raw, ca.Cert.Raw) || !samePublicKey(got.Key.Public(), ca.Key.Public()) {
				t.Fatal("LoadCA returned another CA")
			}
			// The loaded CA issues certificates that verify under the
			// pool loaded from the same file.
			leaf, _, err := got.Issue(IssueOptions{Name: "m", Role: RoleMaster})
			if err != nil {
				t.Fatal(err)
			}
			pool, err := LoadPool(filepath.Join(dir, "ca.crt"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("leaf of the loaded CA does not verify: %v", err)
			}
		})
	}
}

func TestSaveLoadKeyPair(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "ca", ECDSAP256)
	cert, key, err := ca.Issue(IssueOptions{Name: "slave-1", Role: RoleSlave, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := SavePair(dir, "slave-1", cert, key); err != nil {
		t.Fatal(err)
	}
	crt, keyf := filepath.Join(dir, "slave-1.crt"), filepath.Join(dir, "slave-1.key")
	checkMode(t, keyf, 0o600)
	if st, err := os.Stat(crt); err != nil || st.Mode().Perm()&0o400 == 0 || st.Mode().Perm()&0o022 != 0 {
		t.Errorf("certificate file mode: %v %v", st.Mode(), err)
	}
	pair, err := LoadKeyPair(crt, keyf)
	if err != nil {
		t.Fatal(err)
	}
	if pair.Leaf == nil || !bytes.Equal(pair.Leaf.Raw, cert.Raw) || len(pair.Certificate) != 1 {
		t.Fatal("LoadKeyPair: wrong or missing leaf")
	}
	if !samePublicKey(key.Public(), pair.Leaf.PublicKey) {
		t.Error("LoadKeyPair: key does not match")
	}
}

func TestSavePairRefusesOverwrite(t *testing.T) {
	ca := mustCA(t, "ca", Ed25519)
	other := mustCA(t, "other", Ed25519)

	t.Run("both exist", func(t *testing.T) {
		dir := t.TempDir()
		if err := SavePair(dir, "ca", ca.Cert, ca.Key); err != nil {
			t.Fatal(err)
		}
		crt0, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
		key0, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
		err := SavePair(dir, "ca", other.Cert, other.Key)
		want := filepath.Join(dir, "ca.crt") + " already exists: refusing to overwrite it"
		if err == nil || err.Error() != want {
			t.Fatalf("err %v, want %q", err, want)
		}
		if !errors.Is(err, ErrExists) {
			t.Errorf("%v does not match ErrExists", err)
		}
		crt1, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
		key1, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
		if !bytes.Equal(crt0, crt1) || !bytes.Equal(key0, key1) {
			t.Error("files changed by a refused SavePair")
		}
	})

	t.Run("only the key exists", func(t *testing.T) {
		dir := t.TempDir()
		keyf := filepath.Join(dir, "m.key")
		if err := os.WriteFile(keyf, []byte("precious"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := SavePair(dir, "m", ca.Cert, ca.Key)
		if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), keyf) {
			t.Fatalf("err %v, want ErrExists naming %s", err, keyf)
		}
		if _, err := os.Lstat(filepath.Join(dir, "m.crt")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("refused SavePair left m.crt behind: %v", err)
		}
		if b, _ := os.ReadFile(keyf); string(b) != "precious" {
			t.Errorf("key overwritten: %q", b)
		}
	})

	t.Run("dangling symlink", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(dir, "elsewhere")
		if err := os.Symlink(target, filepath.Join(dir, "m.key")); err != nil {
			t.Fatal(err)
		}
		if err := SavePair(dir, "m", ca.Cert, ca.Key); !errors.Is(err, ErrExists) {
			t.Fatalf("err %v, want ErrExists", err)
		}
		if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
			t.Error("SavePair wrote through a symlink")
		}
	})

	t.Run("missing directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "missing")
		if err := SavePair(dir, "m", ca.Cert, ca.Key); err == nil || errors.Is(err, ErrExists) {
			t.Fatalf("err %v, want a create error", err)
		}
	})
}

func TestLoadKeyPairRefusesLooseKey(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "ca", Ed25519)
	if err := SavePair(dir, "ca", ca.Cert, ca.Key); err != nil {
		t.Fatal(err)
	}
	keyf := filepath.Join(dir, "ca.key")
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(keyf, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeyPair(filepath.Join(dir, "ca.crt"), keyf)
		if err == nil {
			t.Fatalf("mode %v accepted", mode)
		}
		if !errors.Is(err, ErrKeyPermissions) || !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), keyf) {
			t.Errorf("mode %v: err %q, want ErrKeyPermissions naming the file and saying chmod 600", mode, err)
		}
		if _, err := LoadCA(dir); !errors.Is(err, ErrKeyPermissions) {
			t.Errorf("LoadCA with key mode %v: err %v", mode, err)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		if err := os.Chmod(keyf, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadKeyPair(filepath.Join(dir, "ca.crt"), keyf); err != nil {
			t.Errorf("mode %v refused: %v", mode, err)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "ca", Ed25519)
	if err := SavePair(dir, "ca", ca.Cert, ca.Key); err != nil {
		t.Fatal(err)
	}
	leaf, key, err := ca.Issue(IssueOptions{Name: "m", Role: RoleMaster})
	if err != nil {
		t.Fatal(err)
	}
	if err := SavePair(dir, "m", leaf, key); err != nil {
		t.Fatal(err)
	}

	t.Run("missing CA", func(t *testing.T) {
		_, err := LoadCA(t.TempDir())
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("err %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("missing certificate", func(t *testing.T) {
		_, err := LoadKeyPair(filepath.Join(dir, "nope.crt"), filepath.Join(dir, "m.key"))
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "nope.crt") {
			t.Errorf("err %v, want fs.ErrNotExist naming nope.crt", err)
		}
	})
	t.Run("key of another certificate", func(t *testing.T) {
		_, err := LoadKeyPair(filepath.Join(dir, "m.crt"), filepath.Join(dir, "ca.key"))
		if err == nil || !strings.Contains(err.Error(), "private key does not match public key") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("leaf as CA", func(t *testing.T) {
		d := t.TempDir()
		if err := SavePair(d, "ca", leaf, key); err != nil {
			t.Fatal(err)
		}
		_, err := LoadCA(d)
		if err == nil || !strings.Contains(err.Error(), "not a CA certificate") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("pool from non-PEM file", func(t *testing.T) {
		p := filepath.Join(dir, "garbage.crt")
		if err := os.WriteFile(p, []byte("this is not PEM\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadPool(p)
		if err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") || !strings.Contains(err.Error(), p) {
			t.Errorf("err %v, want one naming %s and saying no PEM certificate", err, p)
		}
		// A key is PEM, but not a certificate.
		_, err = LoadPool(filepath.Join(dir, "m.key"))
		if err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
			t.Errorf("key file as CA file: err %v", err)
		}
	})
	t.Run("pool from missing file", func(t *testing.T) {
		if _, err := LoadPool(filepath.Join(dir, "absent.crt")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("err %v, want fs.ErrNotExist", err)
		}
	})
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != want {
		t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), want)
	}
}
