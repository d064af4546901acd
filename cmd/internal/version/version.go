// Package version tells which tdfs a binary is: its version, the Go
// toolchain that built it, and the commit and date it was built from.
//
// make build sets Version, Commit and Date with -ldflags -X (see the
// Makefile and packaging/version.sh). A plain "go build" or "go install"
// leaves them empty, and they come from what the Go toolchain recorded in
// the binary (runtime/debug.ReadBuildInfo): the module version and, unless
// it built with -buildvcs=false, the commit and its time. What neither
// says is "devel" for the version and is left out of String.
//
// Importing the package also makes urfave/cli's --version print
// "PROG VERSION" (String's form) instead of "PROG version VERSION", and
// drops the -v alias urfave/cli gives --version.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

// Set with -ldflags "-X github.com/tdfs/tdfs/cmd/internal/version.Version=0.6.0 ...".
// "unknown" counts as unset.
var (
	// Version is the release (0.6.0) or a build between releases
	// (0.6.0+git20261206.68aa327: after 0.6.0, before the next one).
	Version string
	// Commit is the abbreviated commit hash, with "-dirty" when the work
	// tree had changes.
	Commit string
	// Date is the date of the build, YYYY-MM-DD (make build: the commit's,
	// or SOURCE_DATE_EPOCH's, so that a build can be repeated exactly).
	Date string
)

// BuildInfo is what a binary knows about its build.
type BuildInfo struct {
	Version   string // never empty: "devel" when unknown
	GoVersion string // runtime.Version(): go1.26.8
	Commit    string // empty when unknown
	Date      string // YYYY-MM-DD, empty when unknown
}

// Get returns the build information of this binary.
func Get() BuildInfo {
	return get(debug.ReadBuildInfo)
}

func get(read func() (*debug.BuildInfo, bool)) BuildInfo {
	b := BuildInfo{Version: known(Version), GoVersion: runtime.Version(), Commit: known(Commit), Date: known(Date)}
	if b.Version != "" && b.Commit != "" && b.Date != "" {
		return b
	}
	bi, ok := read()
	if ok {
		if v := bi.Main.Version; b.Version == "" && v != "" && v != "(devel)" {
			b.Version = strings.TrimPrefix(v, "v")
		}
		var rev, vtime string
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				vtime = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if b.Commit == "" && rev != "" {
			b.Commit = rev[:min(len(rev), 7)]
			if modified {
				b.Commit += "-dirty"
			}
		}
		if b.Date == "" && len(vtime) >= len("2006-01-02") {
			b.Date = vtime[:len("2006-01-02")]
		}
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	return b
}

func known(s string) string {
	if s == "unknown" {
		return ""
	}
	return s
}

// String is the version as --version prints it after the program's name:
// "0.6.0 (go1.26.8, commit 68aa327, built 2026-12-06)".
func (b BuildInfo) String() string {
	s := b.Version + " (" + b.GoVersion
	if b.Commit != "" {
		s += ", commit " + b.Commit
	}
	if b.Date != "" {
		s += ", built " + b.Date
	}
	return s + ")"
}

// String returns Get().String(), the cli.App's Version.
func String() string {
	return Get().String()
}

// Info returns the labels of the tdfs_build_info gauge (always 1):
// version, goversion and commit ("unknown" when the binary does not know
// it). For a prometheus.GaugeOpts's ConstLabels.
func Info() map[string]string {
	b := Get()
	commit := b.Commit
	if commit == "" {
		commit = "unknown"
	}
	return map[string]string{"version": b.Version, "goversion": b.GoVersion, "commit": commit}
}

func init() {
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version and exit", DisableDefaultText: true}
	cli.VersionPrinter = func(c *cli.Context) {
		fmt.Fprintf(c.App.Writer, "%s %s\n", c.App.Name, c.App.Version)
	}
}
