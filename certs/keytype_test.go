package certs

import "testing"

func TestKeyTypeNames(t *testing.T) {
	for _, kt := range keyTypes {
		got, err := ParseKeyType(kt.String())
		if err != nil || got != kt {
			t.Errorf("ParseKeyType(%q) = %v, %v; want %v", kt.String(), got, err, kt)
		}
	}
	if got, err := ParseKeyType("P256"); err != nil || got != ECDSAP256 {
		t.Errorf("ParseKeyType(P256) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "rsa", "ecdsa", "ed448"} {
		if _, err := ParseKeyType(bad); err == nil {
			t.Errorf("ParseKeyType(%q) accepted", bad)
		}
	}
	if s := KeyType(7).String(); s != "KeyType(7)" {
		t.Errorf("unknown key type prints as %q", s)
	}
}
