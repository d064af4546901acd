package daemon

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
	"gopkg.in/yaml.v3"
)

// A config file is a YAML mapping from long flag names to values:
//
//	dir: /srv/data
//	connect: [web1:7430, web2:7430]
//	sync-timeout: 10s
//	allow-other: true
//
// It is applied through urfave/cli's altsrc, which gives the precedence
// command line > TDFS_* environment variable > config file > default.
// Unlike a bare altsrc YAML source, it is strict: an unknown key, a key
// given twice (or under a name and its alias), a list for a single value
// or a value of the wrong type is an error naming the file, so a typo never
// silently leaves a default in place. Scalars are taken as written
// (compress: 3 is the string "3"), so a key takes exactly what the flag
// takes on the command line. Relative paths are relative to the daemon's
// working directory, as on the command line; use absolute paths.

// ConfigFlag is --config, the flag naming the file.
func ConfigFlag() cli.Flag {
	return &cli.StringFlag{Name: "config", EnvVars: []string{"TDFS_CONFIG"}, TakesFile: true,
		Usage: "read flags from YAML `FILE`, one key per long flag name (log-level: debug); the command line " +
			"and environment variables override it; an unknown key is an error"}
}

// WithConfigFile returns --config followed by flags, each wrapped so that
// the config file can set it. Flags of a kind the file cannot set are left
// as they are; LoadConfigFile refuses their keys, and each daemon's tests
// check that it has none.
func WithConfigFile(flags []cli.Flag) []cli.Flag {
	out := []cli.Flag{ConfigFlag()}
	for _, f := range flags {
		switch f := f.(type) {
		case *cli.StringFlag:
			out = append(out, altsrc.NewStringFlag(f))
		case *cli.PathFlag:
			out = append(out, altsrc.NewPathFlag(f))
		case *cli.StringSliceFlag:
			out = append(out, altsrc.NewStringSliceFlag(f))
		case *cli.BoolFlag:
			out = append(out, altsrc.NewBoolFlag(f))
		case *cli.DurationFlag:
			out = append(out, altsrc.NewDurationFlag(f))
		case *cli.IntFlag:
			out = append(out, altsrc.NewIntFlag(f))
		default:
			out = append(out, f)
		}
	}
	return out
}

// FromConfigFile reports whether flag f (from WithConfigFile) can be set
// in a config file.
func FromConfigFile(f cli.Flag) bool {
	_, ok := f.(altsrc.FlagInputSourceExtension)
	return ok
}

// LoadConfigFile is the Before function of a daemon whose flags come from
// WithConfigFile: it reads the file named by --config (if any) and sets
// every flag that neither the command line nor an environment variable
// set. A subcommand (tdfs-master verify) is left alone: the file holds the
// daemon's flags, not the subcommand's.
func LoadConfigFile(c *cli.Context) error {
	path := c.String("config")
	if path == "" {
		return nil
	}
	if c.Args().Present() && c.App.Command(c.Args().First()) != nil {
		return nil
	}
	flags := c.App.Flags
	if c.Command != nil && len(c.Command.Flags) > 0 {
		flags = c.Command.Flags
	}
	values, err := readConfigFile(path, flags)
	if err != nil {
		// A plain error, not cli.Exit: urfave/cli would call os.Exit
		// itself from Before. daemon.Run prints it as one line and
		// returns ExitUsage.
		return fmt.Errorf("--config %s: %s", path, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	if err := altsrc.ApplyInputSourceValues(c, altsrc.NewMapInputSource(path, values), flags); err != nil {
		return fmt.Errorf("--config %s: %s", path, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return nil
}

// readConfigFile parses the YAML file at path and checks every key against
// flags, returning the values keyed by each flag's primary name, typed as
// altsrc's MapInputSource expects them.
func readConfigFile(path string, flags []cli.Flag) (map[any]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errors.New("no such file")
		}
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	values := map[any]any{}
	if len(doc.Content) == 0 {
		return values, nil // empty file, or only comments
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping of flag names to values (dir: /srv/data)", top.Line)
	}
	byName := map[string]cli.Flag{}
	for _, f := range flags {
		for _, n := range f.Names() {
			byName[n] = f
		}
	}
	from := map[string]string{} // primary name -> the key that set it
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: a key must be a flag name", k.Line)
		}
		f, ok := byName[k.Value]
		if !ok || k.Value == "config" {
			return nil, fmt.Errorf("line %d: unknown key %q (keys are long flag names, see --help)", k.Line, k.Value)
		}
		if !FromConfigFile(f) {
			return nil, fmt.Errorf("line %d: %q cannot be set in a config file", k.Line, k.Value)
		}
		name := f.Names()[0]
		if prev, dup := from[name]; dup {
			return nil, fmt.Errorf("line %d: %q given twice (also as %q)", k.Line, k.Value, prev)
		}
		from[name] = k.Value
		val, err := configValue(f, v)
		if err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", v.Line, k.Value, err)
		}
		values[name] = val
	}
	return values, nil
}

// configValue converts YAML node v to the Go type altsrc reads for flag f.
func configValue(f cli.Flag, v *yaml.Node) (any, error) {
	if _, list := f.(*altsrc.StringSliceFlag); list {
		switch v.Kind {
		case yaml.ScalarNode: // a single value: the same as a list of one
			return []any{v.Value}, nil
		case yaml.SequenceNode:
			l := make([]any, 0, len(v.Content))
			for _, e := range v.Content {
				if e.Kind != yaml.ScalarNode {
					return nil, errors.New("want a list of values")
				}
				l = append(l, e.Value)
			}
			return l, nil
		}
		return nil, errors.New("want a value or a list of values")
	}
	if v.Kind != yaml.ScalarNode {
		return nil, errors.New("want a single value")
	}
	if v.Tag == "!!null" {
		return nil, errors.New("no value (an empty value must be quoted: \"\")")
	}
	switch f.(type) {
	case *altsrc.BoolFlag:
		var b bool
		if err := v.Decode(&b); err != nil {
			return nil, fmt.Errorf("%q: want true or false", v.Value)
		}
		return b, nil
	case *altsrc.DurationFlag:
		d, err := time.ParseDuration(v.Value)
		if err != nil {
			return nil, fmt.Errorf("%q: want a duration such as 10s or 1m30s", v.Value)
		}
		return d, nil
	case *altsrc.IntFlag:
		var n int
		if err := v.Decode(&n); err != nil {
			return nil, fmt.Errorf("%q: want an integer", v.Value)
		}
		return n, nil
	}
	return v.Value, nil
}

// ConfigList reads the list a config file gives for flag name (one of
// flags), as LoadConfigFile would: ok is false when the file does not set
// it. For a daemon reloading part of its configuration on SIGHUP.
func ConfigList(path string, flags []cli.Flag, name string) (list []string, ok bool, err error) {
	values, err := readConfigFile(path, flags)
	if err != nil {
		return nil, false, fmt.Errorf("--config %s: %s", path, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	v, ok := values[name]
	if !ok {
		return nil, false, nil
	}
	l, isList := v.([]any)
	if !isList {
		return nil, false, fmt.Errorf("--config %s: %s is not a list", path, name)
	}
	for _, e := range l {
		list = append(list, fmt.Sprint(e))
	}
	return list, true, nil
}
