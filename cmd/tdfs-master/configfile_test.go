package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/certs"
	"github.com/tdfs/tdfs/cmd/internal/daemon"
)

// testPKI writes a CA and a certificate of role under the name role to a
// new dir and returns the flags that name them.
func testPKI(t *testing.T, name string, role certs.Role) []string {
	t.Helper()
	d := t.TempDir()
	ca, err := certs.NewCA("test CA", certs.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(certs.IssueOptions{Name: name, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.SavePair(d, "ca", ca.Cert, ca.Key); err != nil {
		t.Fatal(err)
	}
	if err := certs.SavePair(d, name, cert, key); err != nil {
		t.Fatal(err)
	}
	return []string{filepath.Join(d, name+".crt"), filepath.Join(d, name+".key"), filepath.Join(d, "ca.crt")}
}

// configureWith runs tdfs-master's command line up to configure, without
// serving, and returns the config, the exit code and stderr.
func configureWith(t *testing.T, args ...string) (*config, int, string) {
	t.Helper()
	var stderr strings.Builder
	app := newApp(&stderr)
	app.ExitErrHandler = func(*cli.Context, error) {} // errors come back to daemon.Run, not os.Exit
	var got *config
	app.Action = daemon.Action(configure, func(_ context.Context, cfg *config) error {
		got = cfg
		return nil
	})
	code := daemon.Run(app, append([]string{"tdfs-master"}, args...), &stderr)
	return got, code, stderr.String()
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFile(t *testing.T) {
	pki := testPKI(t, "master", certs.RoleMaster)
	base := t.TempDir()
	dir, mnt := filepath.Join(base, "dir"), filepath.Join(base, "mnt")
	for _, d := range []string{dir, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	yaml := "dir: " + dir + "\nmount: " + mnt + "\nconnect: [127.0.0.1:7430, b@127.0.0.2]\n" +
		"cert: " + pki[0] + "\nkey: " + pki[1] + "\nca: " + pki[2] + "\n" +
		"journal: " + filepath.Join(base, "journal") + "\njournal-max: 128M\n" +
		"sync: sync\nsync-timeout: 3s\ncompress: 2\nallow-other: true\nlog-level: warn\n"
	p := writeFile(t, "master.yaml", yaml)

	cfg, code, stderr := configureWith(t, "--config", p)
	if code != daemon.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if cfg.dir != dir || cfg.mount != mnt || len(cfg.transport.Peers) != 2 || cfg.transport.SyncTimeout != 3*time.Second ||
		cfg.transport.Compressor == nil || !cfg.fuse.AllowOther || cfg.journalMax != 128<<20 ||
		cfg.journalDir != filepath.Join(base, "journal") || cfg.transport.Mode.String() != "sync" {
		t.Errorf("the file's values were not used: %+v", cfg)
	}

	// Flags override the file.
	cfg, code, stderr = configureWith(t, "--config", p, "--sync-timeout", "5s", "-c", "127.0.0.3")
	if code != daemon.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if cfg.transport.SyncTimeout != 5*time.Second || len(cfg.transport.Peers) != 1 ||
		cfg.transport.Peers[0].Addr != "127.0.0.3:7430" {
		t.Errorf("flags did not override the file: timeout %v, peers %d", cfg.transport.SyncTimeout, len(cfg.transport.Peers))
	}

	// So do environment variables; and TDFS_CONFIG names the file.
	t.Setenv("TDFS_CONFIG", p)
	t.Setenv("TDFS_SYNC_TIMEOUT", "7s")
	t.Setenv("TDFS_ALLOW_OTHER", "false")
	cfg, code, stderr = configureWith(t)
	if code != daemon.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if cfg.transport.SyncTimeout != 7*time.Second || cfg.fuse.AllowOther || cfg.dir != dir {
		t.Errorf("environment did not override the file: timeout %v, allow-other %v", cfg.transport.SyncTimeout, cfg.fuse.AllowOther)
	}
}

func TestConfigFileRefused(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"mountpoint: /mnt\n", `line 1: unknown key "mountpoint"`},
		{"dir: /x\n  mount: [\n", "yaml: line"},
		{"sync-timeout: 10\n", `sync-timeout: "10": want a duration`},
	} {
		p := writeFile(t, "master.yaml", c.text)
		_, code, stderr := configureWith(t, "--config", p)
		want := regexp.MustCompile(`^tdfs-master: --config ` + regexp.QuoteMeta(p) + `: .*` + regexp.QuoteMeta(c.want) + ".*\n$")
		if code != daemon.ExitUsage || !want.MatchString(stderr) {
			t.Errorf("%q: exit %d, stderr %q; want %d and one line matching %s", c.text, code, stderr, daemon.ExitUsage, want)
		}
	}
}

// TestConfigFileEveryFlag checks that every flag can be set from the file,
// and that the example file in contrib/ names every key and nothing else.
func TestConfigFileEveryFlag(t *testing.T) {
	example := filepath.Join("..", "..", "contrib", "systemd", "master.yaml")
	text, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range newApp(nil).Flags {
		name := f.Names()[0]
		if name == "config" || name == "help" {
			continue
		}
		if !daemon.FromConfigFile(f) {
			t.Errorf("--%s cannot be set from a config file", name)
		}
		if !regexp.MustCompile(`(?m)^(# )?` + regexp.QuoteMeta(name) + `:`).Match(text) {
			t.Errorf("%s does not document the key %s", example, name)
		}
	}
	// The example is a valid file (configure then fails on its paths,
	// which do not exist here, not on the file).
	_, code, stderr := configureWith(t, "--config", example)
	if code != daemon.ExitUsage || strings.Contains(stderr, "--config") {
		t.Errorf("the example file is refused: %s", stderr)
	}
}
