package certs

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"master", "slave-a", "slave_1", "s1.example.com", "10.0.0.1", "A", "x-", strings.Repeat("a", 64)} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", ".hidden", "-rf", "--dir", "_x", "a/b", "../ca", "a b", "a\x00b", "é", "a:b", "a*", strings.Repeat("a", 65)} {
		err := CheckName(bad)
		if !errors.Is(err, ErrBadName) {
			t.Errorf("CheckName(%q) = %v, want ErrBadName", bad, err)
		}
	}
}

func TestCheckHost(t *testing.T) {
	for _, ok := range []string{"localhost", "slave-a", "s1.example.com", "host_1.lan", "127.0.0.1", "::1", "fe80::1", "2001:db8::7"} {
		if err := CheckHost(ok); err != nil {
			t.Errorf("CheckHost(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "a..b", ".a", "a.", "-a", "a-", "a/b", "a b", "*.example.com", "http://x", "1.2.3.4:5", strings.Repeat("a", 64), strings.Repeat("a.", 127) + "a"} {
		if err := CheckHost(bad); !errors.Is(err, ErrBadName) {
			t.Errorf("CheckHost(%q) = %v, want ErrBadName", bad, err)
		}
	}
}

// Every name CheckName accepts must also work as a SAN that crypto/x509
// matches when a client dials it: names are DNS SANs.
func TestCheckNameIsHost(t *testing.T) {
	ca := mustCA(t, "ca", Ed25519)
	for _, n := range []string{"slave_1", "s1.example.com", "x-", "10.0.0.1"} {
		if err := CheckName(n); err != nil {
			t.Fatal(err)
		}
		cert, _, err := ca.Issue(IssueOptions{Name: n, Role: RoleSlave})
		if err != nil {
			t.Fatalf("Issue(%q): %v", n, err)
		}
		if err := cert.VerifyHostname(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
}
