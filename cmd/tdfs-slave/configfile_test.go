package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/certs"
	"github.com/tdfs/tdfs/cmd/internal/daemon"
	"github.com/tdfs/tdfs/replayer"
)

// slavePKI writes a CA and a slave certificate to a new dir and returns
// the cert, key and CA paths.
func slavePKI(t *testing.T) (crt, key, ca string) {
	t.Helper()
	d := t.TempDir()
	c, err := certs.NewCA("test CA", certs.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	cert, k, err := c.Issue(certs.IssueOptions{Name: "s1", Hosts: []string{"127.0.0.1"}, Role: certs.RoleSlave})
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.SavePair(d, "ca", c.Cert, c.Key); err != nil {
		t.Fatal(err)
	}
	if err := certs.SavePair(d, "s1", cert, k); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(d, "s1.crt"), filepath.Join(d, "s1.key"), filepath.Join(d, "ca.crt")
}

// configureWith runs tdfs-slave's command line up to configure, without
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
	code := daemon.Run(app, append([]string{"tdfs-slave"}, args...), &stderr)
	return got, code, stderr.String()
}

func TestConfigFile(t *testing.T) {
	crt, key, ca := slavePKI(t)
	base := t.TempDir()
	dir := filepath.Join(base, "replica")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(base, "slave.yaml")
	text := "dir: " + dir + "\nstate: " + filepath.Join(base, "state") + "\nlisten: 127.0.0.1:7431\n" +
		"cert: " + crt + "\nkey: " + key + "\nca: " + ca + "\nallow-master: [m1, m2]\nmax-pending: 8M\n"
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, code, stderr := configureWith(t, "--config", p)
	if code != daemon.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if cfg.dir != dir || cfg.stateDir != filepath.Join(base, "state") || cfg.server.Listen != "127.0.0.1:7431" ||
		cfg.server.MaxPending != 8<<20 {
		t.Errorf("the file's values were not used: %+v", cfg)
	}
	// A flag overrides the file; so does an environment variable.
	if cfg, _, stderr = configureWith(t, "--config", p, "--listen", "127.0.0.1:9"); cfg == nil || cfg.server.Listen != "127.0.0.1:9" {
		t.Errorf("--listen did not override the file: %+v %s", cfg, stderr)
	}
	t.Setenv("TDFS_MAX_PENDING", "16M")
	if cfg, _, stderr = configureWith(t, "--config", p); cfg == nil || cfg.server.MaxPending != 16<<20 {
		t.Errorf("TDFS_MAX_PENDING did not override the file: %+v %s", cfg, stderr)
	}

	bad := filepath.Join(base, "bad.yaml")
	if err := os.WriteFile(bad, []byte("dir: "+dir+"\nlisten-addr: :1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, code, stderr = configureWith(t, "--config", bad)
	if code != daemon.ExitUsage || stderr != "tdfs-slave: --config "+bad+": line 2: unknown key \"listen-addr\" (keys are long flag names, see --help)\n" {
		t.Errorf("unknown key: exit %d, %q", code, stderr)
	}
}

// TestConfigFileEveryFlag checks that every flag can be set from the file,
// and that the example file in contrib/ names every key and nothing else.
func TestConfigFileEveryFlag(t *testing.T) {
	example := filepath.Join("..", "..", "contrib", "systemd", "slave.yaml")
	text, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range newApp(nil).Flags {
		name := f.Names()[0]
		if name == "config" {
			continue
		}
		if !daemon.FromConfigFile(f) {
			t.Errorf("--%s cannot be set from a config file", name)
		}
		if !regexp.MustCompile(`(?m)^(# )?` + regexp.QuoteMeta(name) + `:`).Match(text) {
			t.Errorf("%s does not document the key %s", example, name)
		}
	}
	_, code, stderr := configureWith(t, "--config", example)
	if code != daemon.ExitUsage || strings.Contains(stderr, "--config") {
		t.Errorf("the example file is refused: %s", stderr)
	}
}

// TestMaxHandlesFitsTheLimit: the default --max-handles fits the
// open-file limit (so no warning can matter); a given one is kept.
func TestMaxHandlesFitsTheLimit(t *testing.T) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Skip(err)
	}
	n := maxHandles(replayer.DefaultMaxHandles, false)
	if uint64(n)+fdReserve > rl.Cur && n != 1024 {
		t.Errorf("default max handles %d with a limit of %d", n, rl.Cur)
	}
	if got := maxHandles(123456, true); got != 123456 {
		t.Errorf("a given --max-handles became %d", got)
	}
}
