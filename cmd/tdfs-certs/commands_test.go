package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tdfs/tdfs/certs"
)

func wantOK(t *testing.T, r result, paths ...string) {
	t.Helper()
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if want := strings.Join(paths, "\n") + "\n"; r.stdout != want {
		t.Errorf("stdout %q, want the paths written %q", r.stdout, want)
	}
}

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode()
}

// about reports whether d is within a day of days days: NotAfter is now
// plus the validity, computed inside the command.
func about(d time.Duration, days int) bool {
	want := time.Duration(days) * 24 * time.Hour
	return d > want-24*time.Hour && d <= want+time.Hour
}

func TestGeneratedChain(t *testing.T) {
	for _, kt := range []string{"ed25519", "p256"} {
		t.Run(kt, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "new", "pki") // ca creates missing parents
			D := func(f string) string { return filepath.Join(dir, f) }

			wantOK(t, runT(t, "ca", "--dir", dir, "--key-type", kt), D("ca.crt"), D("ca.key"))
			if m := mode(t, dir); !m.IsDir() || m.Perm() != 0o700 {
				t.Errorf("DIR mode %v, want drwx------", m)
			}
			wantOK(t, runT(t, "master", "--dir", dir, "--key-type", kt, "master-1"), D("master-1.crt"), D("master-1.key"))
			wantOK(t, runT(t, "slave", "--dir", dir, "--key-type", kt, "--days", "30", "slave-a", "10.0.0.7", "slave-a.example.com", "::1"),
				D("slave-a.crt"), D("slave-a.key"))

			for _, f := range []string{"ca.key", "master-1.key", "slave-a.key"} {
				if m := mode(t, D(f)); m.Perm() != 0o600 || !m.IsRegular() {
					t.Errorf("%s mode %v, want -rw-------", f, m)
				}
			}

			ca, err := certs.LoadCA(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !ca.Cert.IsCA || !about(time.Until(ca.Cert.NotAfter), caDays) {
				t.Errorf("CA: IsCA %v, NotAfter %v (want about %d days)", ca.Cert.IsCA, ca.Cert.NotAfter, caDays)
			}
			pool, err := certs.LoadPool(D("ca.crt"))
			if err != nil {
				t.Fatal(err)
			}
			master, err := certs.LoadKeyPair(D("master-1.crt"), D("master-1.key"))
			if err != nil {
				t.Fatal(err)
			}
			slave, err := certs.LoadKeyPair(D("slave-a.crt"), D("slave-a.key"))
			if err != nil {
				t.Fatal(err)
			}

			m, s := master.Leaf, slave.Leaf
			if !slices.Equal(m.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
				t.Errorf("master EKU %v, want clientAuth only", m.ExtKeyUsage)
			}
			if !slices.Equal(s.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
				t.Errorf("slave EKU %v, want serverAuth only", s.ExtKeyUsage)
			}
			if m.Subject.CommonName != "master-1" || !slices.Equal(m.DNSNames, []string{"master-1"}) || len(m.IPAddresses) != 0 {
				t.Errorf("master names: CN %q DNS %v IP %v", m.Subject.CommonName, m.DNSNames, m.IPAddresses)
			}
			if s.Subject.CommonName != "slave-a" || !slices.Equal(s.DNSNames, []string{"slave-a", "slave-a.example.com"}) {
				t.Errorf("slave names: CN %q DNS %v", s.Subject.CommonName, s.DNSNames)
			}
			if ips := []net.IP{net.ParseIP("10.0.0.7"), net.ParseIP("::1")}; !slices.EqualFunc(s.IPAddresses, ips, net.IP.Equal) {
				t.Errorf("slave IP SANs %v, want %v", s.IPAddresses, ips)
			}
			if !about(time.Until(m.NotAfter), leafDays) || !about(time.Until(s.NotAfter), 30) {
				t.Errorf("validity: master until %v (want %d days), slave until %v (want 30 days)", m.NotAfter, leafDays, s.NotAfter)
			}
			for _, c := range []*x509.Certificate{ca.Cert, m, s} {
				switch kt {
				case "ed25519":
					if _, ok := c.PublicKey.(ed25519.PublicKey); !ok {
						t.Errorf("%s: key %T, want ed25519", c.Subject.CommonName, c.PublicKey)
					}
				case "p256":
					if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve.Params().Name != "P-256" {
						t.Errorf("%s: key %T, want ECDSA P-256", c.Subject.CommonName, c.PublicKey)
					}
				}
			}

			// The chains verify for their own usage only, and the slave's for
			// every name and address it was issued for.
			client := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
			server := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			if _, err := m.Verify(client); err != nil {
				t.Errorf("master chain: %v", err)
			}
			if _, err := m.Verify(server); err == nil {
				t.Error("master certificate verifies as a server")
			}
			if _, err := s.Verify(client); err == nil {
				t.Error("slave certificate verifies as a client")
			}
			for _, h := range []string{"slave-a", "slave-a.example.com", "10.0.0.7", "::1"} {
				opts := server
				opts.DNSName = h
				if _, err := s.Verify(opts); err != nil {
					t.Errorf("slave chain for %q: %v", h, err)
				}
			}
			opts := server
			opts.DNSName = "slave-b"
			if _, err := s.Verify(opts); err == nil {
				t.Error("slave certificate verifies for slave-b")
			}
		})
	}
}

func TestEnvironment(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	t.Setenv("TDFS_CERT_DIR", dir)
	t.Setenv("TDFS_KEY_TYPE", "p256")
	t.Setenv("TDFS_CERT_DAYS", "10")
	wantOK(t, runT(t, "ca"), filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	wantOK(t, runT(t, "master", "m"), filepath.Join(dir, "m.crt"), filepath.Join(dir, "m.key"))
	for _, f := range []string{"ca", "m"} {
		pair, err := certs.LoadKeyPair(filepath.Join(dir, f+".crt"), filepath.Join(dir, f+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := pair.Leaf.PublicKey.(*ecdsa.PublicKey); !ok {
			t.Errorf("%s: key %T, want ECDSA from TDFS_KEY_TYPE", f, pair.Leaf.PublicKey)
		}
		if !about(time.Until(pair.Leaf.NotAfter), 10) {
			t.Errorf("%s: NotAfter %v, want 10 days from TDFS_CERT_DAYS", f, pair.Leaf.NotAfter)
		}
	}
	// The command line wins over the environment.
	other := t.TempDir()
	wantOK(t, runT(t, "ca", "--dir", other), filepath.Join(other, "ca.crt"), filepath.Join(other, "ca.key"))
}

func TestDefaultDir(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	wantOK(t, runT(t, "ca"), "ca.crt", "ca.key")
	wantOK(t, runT(t, "slave", "s"), "s.crt", "s.key")
	for _, f := range []string{"ca.crt", "ca.key", "s.crt", "s.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestOverwriteRefused(t *testing.T) {
	dir := t.TempDir()
	D := func(f string) string { return filepath.Join(dir, f) }
	wantOK(t, runT(t, "ca", "--dir", dir), D("ca.crt"), D("ca.key"))
	wantOK(t, runT(t, "master", "--dir", dir, "m"), D("m.crt"), D("m.key"))
	snapshot := func() map[string][]byte {
		s := map[string][]byte{}
		for _, f := range []string{"ca.crt", "ca.key", "m.crt", "m.key"} {
			b, err := os.ReadFile(D(f))
			if err != nil {
				t.Fatal(err)
			}
			s[f] = b
		}
		return s
	}
	before := snapshot()

	r := runT(t, "ca", "--dir", dir)
	wantFail(t, r, exitUsage, "")
	if want := "tdfs-certs: " + D("ca.crt") + " already exists: refusing to overwrite it\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
	wantFail(t, runT(t, "master", "--dir", dir, "m"), exitUsage, D("m.crt")+" already exists: refusing to overwrite it")
	wantFail(t, runT(t, "slave", "--dir", dir, "m"), exitUsage, D("m.crt")+" already exists: refusing to overwrite it")

	// A lone key (say, a certificate removed to be reissued) is kept too.
	if err := os.Remove(D("m.crt")); err != nil {
		t.Fatal(err)
	}
	wantFail(t, runT(t, "master", "--dir", dir, "m"), exitUsage, D("m.key")+" already exists: refusing to overwrite it")
	if _, err := os.Stat(D("m.crt")); err == nil {
		t.Error("refused master wrote m.crt")
	}
	for f, b := range before {
		if f == "m.crt" {
			continue
		}
		got, err := os.ReadFile(D(f))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s changed by a refused command (%v)", f, err)
		}
	}
}

func TestNoCA(t *testing.T) {
	dir := t.TempDir()
	r := runT(t, "master", "--dir", dir, "m")
	wantFail(t, r, exitUsage, "")
	if want := "tdfs-certs: no CA in " + dir + " (run: tdfs-certs ca --dir " + dir + ")\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
	wantFail(t, runT(t, "slave", "--dir", filepath.Join(dir, "absent"), "s"), exitUsage, "no CA in "+filepath.Join(dir, "absent"))
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files written without a CA: %v", ents)
	}

	// Half a CA is not "no CA": running ca would refuse, so say what is wrong.
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runT(t, "master", "--dir", dir, "m")
	wantFail(t, r, exitUsage, "CA in "+dir+":")
	if strings.Contains(r.stderr, "run: tdfs-certs ca") {
		t.Errorf("half a CA: %q suggests running ca", r.stderr)
	}
}

func TestLooseCAKey(t *testing.T) {
	dir := t.TempDir()
	wantOK(t, runT(t, "ca", "--dir", dir), filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err := os.Chmod(filepath.Join(dir, "ca.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantFail(t, runT(t, "master", "--dir", dir, "m"), exitUsage, "chmod 600")
}

func TestRuntimeFailure(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wantFail(t, runT(t, "ca", "--dir", filepath.Join(file, "pki")), exitRuntime, "not a directory")
}

func TestLeafOutlivesCA(t *testing.T) {
	dir := t.TempDir()
	wantOK(t, runT(t, "ca", "--dir", dir, "--days", "10"), filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	r := runT(t, "master", "--dir", dir, "--days", "20", "m")
	if r.code != exitOK || !strings.Contains(r.stderr, "warning: the CA expires") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("leaf outliving the CA: %+v", r)
	}
	if r := runT(t, "master", "--dir", dir, "--days", "5", "m2"); r.code != exitOK || r.stderr != "" {
		t.Errorf("leaf within the CA's life: %+v", r)
	}
}
