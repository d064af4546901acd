package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestMain clears the environment variables tdfs-certs reads, so that a
// developer's own settings cannot change what the tests see.
func TestMain(m *testing.M) {
	for _, e := range []string{"TDFS_CERT_DIR", "TDFS_KEY_TYPE", "TDFS_CERT_DAYS", "TDFS_CRL_DAYS"} {
		os.Unsetenv(e)
	}
	os.Exit(m.Run())
}

type result struct {
	code           int
	stdout, stderr string
}

func runT(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"tdfs-certs"}, args...), &out, &errb)
	return result{code, out.String(), errb.String()}
}

// wantFail checks a refusal: the exit code, one line on stderr that starts
// with the program name and contains want, nothing on stdout.
func wantFail(t *testing.T, r result, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d (stderr %q)", r.code, code, r.stderr)
	}
	if !strings.HasPrefix(r.stderr, "tdfs-certs: ") || strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("stderr %q: want one line starting with \"tdfs-certs: \"", r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q, want it to contain %q", r.stderr, want)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q on failure", r.stdout)
	}
}

func TestHelp(t *testing.T) {
	r := runT(t, "--help")
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("--help: %+v", r)
	}
	for _, c := range []string{"ca", "master", "slave", "revoke"} {
		if !strings.Contains(r.stdout, "\n   "+c+" ") {
			t.Errorf("top-level help does not list %q:\n%s", c, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "\n   help") {
		t.Errorf("top-level help lists a help command:\n%s", r.stdout)
	}

	defaults := map[string]string{"ca": "(default: 3650)", "master": "(default: 730)", "slave": "(default: 730)", "revoke": "(default: 365)"}
	for _, cmd := range newApp(nil, nil).Commands {
		if cmd.Name == "completion" || cmd.Name == "man" {
			continue // no flags of their own: see cmd/internal/daemon/completion_test.go
		}
		r := runT(t, cmd.Name, "--help")
		if r.code != exitOK || r.stderr != "" {
			t.Fatalf("%s --help: %+v", cmd.Name, r)
		}
		nflags, want := 3, []string{"--dir", "--key-type", "--days", "$TDFS_CERT_DIR", "$TDFS_KEY_TYPE", "$TDFS_CERT_DAYS", "ed25519", "p256"}
		if cmd.Name == "revoke" {
			// No key is made: no --key-type; --days is the CRL's.
			nflags, want = 2, []string{"--dir", "--days", "$TDFS_CERT_DIR", "$TDFS_CRL_DAYS"}
		}
		if len(cmd.Flags) != nflags {
			t.Errorf("%s has %d flags, want %d (%q)", cmd.Name, len(cmd.Flags), nflags, want)
		}
		for _, f := range cmd.Flags {
			df, ok := f.(cli.DocGenerationFlag)
			if !ok {
				t.Fatalf("%s: flag %v has no usage text or env vars", cmd.Name, f.Names())
			}
			if df.GetUsage() == "" {
				t.Errorf("%s --%s has no help text", cmd.Name, f.Names()[0])
			}
			envs := df.GetEnvVars()
			if len(envs) == 0 {
				t.Errorf("%s --%s has no environment variable", cmd.Name, f.Names()[0])
			}
			for _, n := range f.Names() {
				dash := "--"
				if len(n) == 1 {
					dash = "-"
				}
				if !strings.Contains(r.stdout, dash+n) {
					t.Errorf("%s --help does not mention %s%s:\n%s", cmd.Name, dash, n, r.stdout)
				}
			}
			for _, e := range envs {
				if !strings.HasPrefix(e, "TDFS_") || !strings.Contains(r.stdout, "[$"+e+"]") {
					t.Errorf("%s --help: env var %q not TDFS_* or not shown:\n%s", cmd.Name, e, r.stdout)
				}
			}
		}
		for _, s := range append(want, defaults[cmd.Name]) {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("%s --help does not mention %q:\n%s", cmd.Name, s, r.stdout)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	if r := runT(t, "ca", "--dir", dir); r.code != exitOK {
		t.Fatalf("ca: %+v", r)
	}
	cases := []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"renew"}, `unknown command "renew"`},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"master", "--dir", dir, "--bogus", "m"}, "flag provided but not defined: -bogus (see tdfs-certs master --help)"},
		{[]string{"ca", "--dir", dir, "extra"}, "ca takes no arguments"},
		{[]string{"master", "--dir", dir}, "NAME is missing"},
		{[]string{"slave", "--dir", dir}, "NAME is missing"},
		{[]string{"master", "--dir", dir, "m1", "m2"}, "master takes one NAME"},
		{[]string{"master", "m1", "--dir", dir}, "--dir: flags go before the arguments"},
		{[]string{"slave", "--dir", dir, "s1", "host", "--days", "3"}, "--days: flags go before the arguments"},
		{[]string{"master", "--dir", dir, "--key-type", "rsa", "m"}, `unknown key type "rsa" (want ed25519 or p256)`},
		{[]string{"master", "--dir", dir, "--days", "0", "m"}, "--days 0: want 1 to 36500"},
		{[]string{"master", "--dir", dir, "--days", "36501", "m"}, "--days 36501"},
		{[]string{"master", "--dir", dir, "--days", "ten", "m"}, `invalid value "ten" for flag -days`},
		{[]string{"master", "--dir", "", "m"}, "--dir is empty"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			wantFail(t, runT(t, tc.args...), exitUsage, tc.want)
		})
	}
	// Nothing but the CA was written by any of these.
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("files in %s after refusals: %v", dir, ents)
	}
}

func TestBadEnvValue(t *testing.T) {
	t.Setenv("TDFS_CERT_DAYS", "abc")
	wantFail(t, runT(t, "ca", "--dir", t.TempDir()), exitUsage, `"TDFS_CERT_DAYS"`)
}

func TestBadNames(t *testing.T) {
	dir := t.TempDir()
	if r := runT(t, "ca", "--dir", dir); r.code != exitOK {
		t.Fatalf("ca: %+v", r)
	}
	for _, cmd := range []string{"master", "slave"} {
		for _, name := range []string{"ca", "CA", "../x", "a/b", "/etc/passwd", ".hidden", ".", "..", "a b", "", "x;y", strings.Repeat("n", 65)} {
			t.Run(cmd+"/"+name, func(t *testing.T) {
				want := "bad name"
				if strings.EqualFold(name, "ca") {
					want = "reserved"
				}
				wantFail(t, runT(t, cmd, "--dir", dir, name), exitUsage, want)
			})
		}
	}
	for _, host := range []string{"a/b", "*.example.com", "a..b", "host:443", ""} {
		t.Run("slave host "+host, func(t *testing.T) {
			wantFail(t, runT(t, "slave", "--dir", dir, "s1", "ok.example.com", host), exitUsage, "not a host name or IP address")
		})
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "ca.crt ca.key" {
		t.Errorf("files after refusals: %v", names)
	}
	if _, err := os.Lstat(filepath.Join(filepath.Dir(dir), "x.crt")); err == nil {
		t.Error("../x wrote outside --dir")
	}
}
