package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1048576": 1 << 20, "512K": 512 << 10, "256M": 256 << 20,
		"2G": 2 << 30, "1T": 1 << 40, "64MiB": 64 << 20, "3 g": 3 << 30} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "1Q", "99999999999T", "1.5G"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

func TestDirAndWithin(t *testing.T) {
	d := t.TempDir()
	f := filepath.Join(d, "f")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Dir("-m", f); err == nil || err.Error() != "-m "+f+": not a directory" {
		t.Errorf("Dir(file) = %v", err)
	}
	if _, err := Dir("-m", filepath.Join(d, "nope")); err == nil {
		t.Error("Dir(missing) succeeded")
	}
	if _, err := Dir("-m", ""); err == nil {
		t.Error("Dir(\"\") succeeded")
	}
	got, err := Dir("-m", d+"/.")
	if err != nil || got != d {
		t.Errorf("Dir(%s/.) = %q, %v", d, got, err)
	}
	for _, c := range []struct {
		p, d string
		want bool
	}{{"/a/b", "/a", true}, {"/a", "/a", true}, {"/ab", "/a", false}, {"/a", "/a/b", false}, {"/a/..b", "/a", true}} {
		if got := Within(c.p, c.d); got != c.want {
			t.Errorf("Within(%q, %q) = %v", c.p, c.d, got)
		}
	}
}

func TestLock(t *testing.T) {
	d := t.TempDir()
	release, err := Lock("-m", d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock("-m", d); err == nil || err.Error() != "-m "+d+" is in use by another tdfs process" {
		t.Fatalf("second lock: %v", err)
	}
	release()
	release2, err := Lock("-m", d)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	release2()
}

func TestStateDir(t *testing.T) {
	d := t.TempDir()
	got, err := StateDir("", "/var/lib/x", "/srv/data", "/srv/data")
	if err != nil || got != "/var/lib/x/_srv_data" {
		t.Errorf("default: %q, %v", got, err)
	}
	if _, err := StateDir(d+"/in/st", "/r", d, "/elsewhere", d); err == nil {
		t.Error("a state dir inside a forbidden dir was accepted")
	}
	if got, err := StateDir(d+"/st/.", "/r", "/x", "/x"); err != nil || got != d+"/st" {
		t.Errorf("explicit: %q, %v", got, err)
	}
}

func TestLongFlags(t *testing.T) {
	for in, want := range map[string]string{
		"flag provided but not defined: -bogus":                   "flag provided but not defined: --bogus",
		"invalid value \"x\" for flag -sync-timeout: parse error": "invalid value \"x\" for flag --sync-timeout: parse error",
		"flag provided but not defined: -z":                       "flag provided but not defined: -z",
		"flag needs an argument: -m":                              "flag needs an argument: -m",
		"--min-slaves 2: want 0 to the number of slaves (-c: 1)":  "--min-slaves 2: want 0 to the number of slaves (-c: 1)",
		"a-b is fine": "a-b is fine",
	} {
		if got := longFlags(in); got != want {
			t.Errorf("longFlags(%q) = %q, want %q", in, got, want)
		}
	}
}
