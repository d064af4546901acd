package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func setVars(t *testing.T, v, c, d string) {
	t.Helper()
	saved := [3]string{Version, Commit, Date}
	Version, Commit, Date = v, c, d
	t.Cleanup(func() { Version, Commit, Date = saved[0], saved[1], saved[2] })
}

func buildInfo(version string, settings ...string) func() (*debug.BuildInfo, bool) {
	return func() (*debug.BuildInfo, bool) {
		bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/tdfs/tdfs", Version: version}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi, true
	}
}

func TestGet(t *testing.T) {
	gov := runtime.Version()
	for _, c := range []struct {
		name    string
		vars    [3]string
		read    func() (*debug.BuildInfo, bool)
		want    BuildInfo
		wantStr string
	}{
		{"ldflags", [3]string{"0.6.0", "68aa327", "2026-12-06"}, buildInfo("v9.9.9", "vcs.revision", "ffffffffffff"),
			BuildInfo{"0.6.0", gov, "68aa327", "2026-12-06"}, "0.6.0 (" + gov + ", commit 68aa327, built 2026-12-06)"},
		{"ldflags, no git", [3]string{"0.6.0+nogit", "unknown", "2026-12-06"}, buildInfo("(devel)"),
			BuildInfo{"0.6.0+nogit", gov, "", "2026-12-06"}, "0.6.0+nogit (" + gov + ", built 2026-12-06)"},
		{"go build with vcs", [3]string{}, buildInfo("v0.0.0-20261206224600-68aa327abcde+dirty",
			"vcs.revision", "68aa327abcdef0123", "vcs.time", "2026-12-06T22:46:00Z", "vcs.modified", "true"),
			BuildInfo{"0.0.0-20261206224600-68aa327abcde+dirty", gov, "68aa327-dirty", "2026-12-06"},
			"0.0.0-20261206224600-68aa327abcde+dirty (" + gov + ", commit 68aa327-dirty, built 2026-12-06)"},
		{"-buildvcs=false", [3]string{}, buildInfo("(devel)"),
			BuildInfo{"devel", gov, "", ""}, "devel (" + gov + ")"},
		{"no build info", [3]string{}, func() (*debug.BuildInfo, bool) { return nil, false },
			BuildInfo{"devel", gov, "", ""}, "devel (" + gov + ")"},
	} {
		t.Run(c.name, func(t *testing.T) {
			setVars(t, c.vars[0], c.vars[1], c.vars[2])
			got := get(c.read)
			if got != c.want {
				t.Errorf("get: %+v, want %+v", got, c.want)
			}
			if got.String() != c.wantStr {
				t.Errorf("String: %q, want %q", got.String(), c.wantStr)
			}
		})
	}
}

func TestInfo(t *testing.T) {
	setVars(t, "0.6.0", "unknown", "")
	got := Info()
	if len(got) != 3 || got["version"] != "0.6.0" || got["goversion"] != runtime.Version() || got["commit"] == "" {
		t.Errorf("Info: %v", got)
	}
	setVars(t, "0.6.0", "68aa327", "")
	if got := Info()["commit"]; got != "68aa327" {
		t.Errorf("Info commit: %q", got)
	}
}

func TestVersionFlag(t *testing.T) {
	setVars(t, "0.6.0", "68aa327", "2026-12-06")
	for _, args := range [][]string{{"tdfs-test", "--version"}, {"tdfs-test", "-version"}} {
		var out strings.Builder
		app := &cli.App{Name: "tdfs-test", Version: String(), Writer: &out,
			Action: func(*cli.Context) error { t.Error("the action ran"); return nil }}
		if err := app.Run(args); err != nil {
			t.Fatal(err)
		}
		if want := "tdfs-test 0.6.0 (" + runtime.Version() + ", commit 68aa327, built 2026-12-06)\n"; out.String() != want {
			t.Errorf("%v: %q, want %q", args, out.String(), want)
		}
	}
	// -v is not --version (left free for other uses).
	app := &cli.App{Name: "tdfs-test", Version: String(), Writer: &strings.Builder{}, ErrWriter: &strings.Builder{},
		ExitErrHandler: func(*cli.Context, error) {}, Action: func(*cli.Context) error { return nil }}
	if err := app.Run([]string{"tdfs-test", "-v"}); err == nil {
		t.Error("-v was accepted")
	}
}
