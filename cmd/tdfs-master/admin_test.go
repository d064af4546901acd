package main

import (
	"strings"
	"testing"
)

func TestBarText(t *testing.T) {
	for _, tc := range []struct {
		p    progressLine
		want []string
	}{
		{progressLine{Slave: "s1", Kind: "resync", ElapsedMs: 10_000, Entries: 250, TotalEntries: 1000, BytesSent: 50e6},
			[]string{"resync s1", "[#####...............]", " 25%", "250/1000 entries", "50.0 MB sent (5.0 MB/s)", "ETA 30s"}},
		{progressLine{Slave: "s2", Kind: "verify", ElapsedMs: 1000, Entries: 7, Compared: 3 << 20, Differences: 2},
			[]string{"verify s2: 7 entries", "3 MB compared, 2 differences"}},
		{progressLine{Slave: "s3", Kind: "check", Entries: 10, TotalEntries: 10},
			[]string{"100%", "10/10 entries", "0.0 MB sent"}},
	} {
		got := barText(tc.p)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("barText(%+v) = %q, lacks %q", tc.p, got, w)
			}
		}
		if tc.p.TotalEntries == tc.p.Entries && strings.Contains(got, "ETA") {
			t.Errorf("barText of a finished pass shows an ETA: %q", got)
		}
	}
}
