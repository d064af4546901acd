package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// parsed is what a test app's action saw.
type parsed struct {
	dir     string
	connect []string
	timeout time.Duration
	other   bool
	level   string
	sub     bool
}

// testApp has one flag of each kind the daemons use, wrapped as theirs
// are, and a subcommand.
func testApp(got *parsed) *cli.App {
	return &cli.App{
		Name: "tdfs-test",
		Flags: WithConfigFile(append([]cli.Flag{
			&cli.StringFlag{Name: "dir", Aliases: []string{"m"}, EnvVars: []string{"TDFS_DIR"}},
			&cli.StringSliceFlag{Name: "connect", Aliases: []string{"c"}, EnvVars: []string{"TDFS_CONNECT"}},
			&cli.DurationFlag{Name: "sync-timeout", Value: 10 * time.Second, EnvVars: []string{"TDFS_SYNC_TIMEOUT"}},
			&cli.BoolFlag{Name: "allow-other", EnvVars: []string{"TDFS_ALLOW_OTHER"}},
		}, LogFlags()...)),
		Before:         LoadConfigFile,
		OnUsageError:   OnUsageError,
		ExitErrHandler: func(*cli.Context, error) {},
		Action: func(c *cli.Context) error {
			*got = parsed{dir: c.String("dir"), connect: c.StringSlice("connect"), timeout: c.Duration("sync-timeout"),
				other: c.Bool("allow-other"), level: c.String("log-level")}
			return nil
		},
		Commands: []*cli.Command{{Name: "sub", Action: func(*cli.Context) error { got.sub = true; return nil }}},
	}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tdfs.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runTest runs the test app and returns what it parsed, its exit code and
// its stderr.
func runTest(t *testing.T, args ...string) (parsed, int, string) {
	t.Helper()
	var got parsed
	var stderr strings.Builder
	code := Run(testApp(&got), append([]string{"tdfs-test"}, args...), &stderr)
	return got, code, stderr.String()
}

const fullConfig = `# every kind of flag
dir: /srv/from-file
connect: [a:1, b:2]
sync-timeout: 1m30s
allow-other: true
log-level: debug
`

func TestConfigFileValues(t *testing.T) {
	p := writeConfig(t, fullConfig)
	got, code, stderr := runTest(t, "--config", p)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := parsed{dir: "/srv/from-file", connect: []string{"a:1", "b:2"}, timeout: 90 * time.Second, other: true, level: "debug"}
	if got.dir != want.dir || strings.Join(got.connect, ",") != "a:1,b:2" || got.timeout != want.timeout ||
		got.other != want.other || got.level != want.level {
		t.Errorf("from the file: %+v, want %+v", got, want)
	}

	// Without --config, the defaults.
	got, _, _ = runTest(t)
	if got.dir != "" || got.timeout != 10*time.Second || got.other || got.level != "info" {
		t.Errorf("without a file: %+v", got)
	}

	// TDFS_CONFIG names the file too.
	t.Setenv("TDFS_CONFIG", p)
	if got, _, _ = runTest(t); got.dir != "/srv/from-file" {
		t.Errorf("with TDFS_CONFIG: dir %q", got.dir)
	}
}

func TestConfigFileOverridden(t *testing.T) {
	p := writeConfig(t, fullConfig)
	// The command line wins over the file, under a flag's alias too.
	got, code, stderr := runTest(t, "--config", p, "-m", "/srv/flag", "-c", "x:9", "--sync-timeout", "2s")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if got.dir != "/srv/flag" || strings.Join(got.connect, ",") != "x:9" || got.timeout != 2*time.Second {
		t.Errorf("flags did not override the file: %+v", got)
	}
	if got.level != "debug" || !got.other {
		t.Errorf("keys no flag overrode were lost: %+v", got)
	}

	// So does an environment variable; and the command line wins over it.
	t.Setenv("TDFS_DIR", "/srv/env")
	t.Setenv("TDFS_CONNECT", "e:1,f:2")
	t.Setenv("TDFS_ALLOW_OTHER", "false")
	if got, _, _ = runTest(t, "--config", p); got.dir != "/srv/env" || strings.Join(got.connect, ",") != "e:1,f:2" || got.other {
		t.Errorf("environment did not override the file: %+v", got)
	}
	if got, _, _ = runTest(t, "--config", p, "--dir", "/srv/flag"); got.dir != "/srv/flag" {
		t.Errorf("the command line did not override the environment: %+v", got)
	}
}

func TestConfigFileSubcommand(t *testing.T) {
	// A subcommand does not read the daemon's file, even a broken one.
	p := writeConfig(t, "nonsense: [")
	got, code, stderr := runTest(t, "--config", p, "sub")
	if code != ExitOK || !got.sub {
		t.Errorf("sub with a broken config: exit %d, ran %v: %s", code, got.sub, stderr)
	}
}

func TestConfigFileRefused(t *testing.T) {
	for _, c := range []struct{ name, text, want string }{
		{"unknown key", "dir: /x\nconect: [a]\n", `line 2: unknown key "conect"`},
		{"config key", "config: /etc/other.yaml\n", `unknown key "config"`},
		{"bad yaml", "dir: [unclosed\n", "yaml: line"},
		{"not a mapping", "- dir\n", "want a mapping"},
		{"bad duration", "sync-timeout: soon\n", `sync-timeout: "soon": want a duration`},
		{"bad bool", "allow-other: maybe\n", `allow-other: "maybe": want true or false`},
		{"list for a value", "dir: [a, b]\n", "dir: want a single value"},
		{"null", "dir:\n", "dir: no value"},
		{"twice", "dir: /a\nm: /b\n", `"m" given twice (also as "dir")`},
		{"nested list", "connect: [[a]]\n", "want a list of values"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeConfig(t, c.text)
			_, code, stderr := runTest(t, "--config", p)
			if code != ExitUsage {
				t.Errorf("exit %d, want %d", code, ExitUsage)
			}
			line := strings.TrimSuffix(stderr, "\n")
			if strings.Contains(line, "\n") || !strings.HasPrefix(line, "tdfs-test: --config "+p+": ") ||
				!strings.Contains(line, c.want) {
				t.Errorf("stderr %q: want one line naming %s and containing %q", stderr, p, c.want)
			}
		})
	}
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	if _, code, stderr := runTest(t, "--config", missing); code != ExitUsage ||
		stderr != "tdfs-test: --config "+missing+": no such file\n" {
		t.Errorf("missing file: exit %d, %q", code, stderr)
	}
}

func TestConfigFileEmpty(t *testing.T) {
	p := writeConfig(t, "# nothing set yet\n")
	got, code, stderr := runTest(t, "--config", p)
	if code != ExitOK || got.timeout != 10*time.Second {
		t.Errorf("empty file: exit %d, %+v: %s", code, got, stderr)
	}
}

func TestWithConfigFileWrapsEveryKind(t *testing.T) {
	var got parsed
	for _, f := range testApp(&got).Flags[1:] {
		if !FromConfigFile(f) {
			t.Errorf("flag %s cannot be set from a config file", f.Names()[0])
		}
	}
	if FromConfigFile(&cli.Float64Flag{Name: "x"}) {
		t.Error("an unwrapped flag is reported as settable")
	}
}
