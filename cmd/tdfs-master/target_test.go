package main

import (
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	for _, c := range []struct {
		in, name, addr, err string
	}{
		{"web1@10.0.0.2:7431", "web1", "10.0.0.2:7431", ""},
		{"10.0.0.2", "10.0.0.2", "10.0.0.2:7430", ""},
		{"[::1]:9", "::1", "[::1]:9", ""},
		{"a b", "", "", "without spaces"},
		{"web1@ 10.0.0.2", "", "", "without spaces"},
		{"@host", "", "", "empty name"},
		{"host:0", "", "", "bad port"},
		{":7430", "", "", "no host"},
	} {
		name, addr, err := parseTarget(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("parseTarget(%q) = %q, %q, %v; want an error naming %q", c.in, name, addr, err, c.err)
			}
			continue
		}
		if err != nil || name != c.name || addr != c.addr {
			t.Errorf("parseTarget(%q) = %q, %q, %v; want %q, %q", c.in, name, addr, err, c.name, c.addr)
		}
	}
}
