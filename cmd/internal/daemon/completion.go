package daemon

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

// Shell completion rides on urfave/cli's own: with App.EnableBashCompletion
// set, "PROG ... --generate-bash-completion" prints the commands or flags
// that may come next, and the scripts below ask for them at each <TAB>.
// The bash and zsh scripts are urfave/cli v2's autocomplete/bash_autocomplete
// and zsh_autocomplete with the program name filled in, the function named
// after it (so the scripts of the three tdfs commands can be loaded side by
// side), and "-" asked for in place of a partial flag: urfave/cli reads a
// word "--" as the end of the flags and would run the command instead.
//
// urfave/cli knows nothing of a flag's value, so the scripts complete
// values themselves, from a case statement made from the app's flags
// (flagValues): directories after --dir, --mount, --journal, --state;
// files after --cert, --key, --ca, --crl, --config and any flag with
// TakesFile; the few words --sync, --log-level, --log-format, --key-type
// and --compress take; nothing after any other flag that takes a value (a
// host, a size), rather than the commands. Both "--flag VALUE" and
// "--flag=VALUE" are completed.

const bashCompletion = `# bash completion for PROG; load with: source <(PROG completion bash)
_FUNC() {
  if [[ "${COMP_WORDS[0]}" != "source" ]]; then
    local cur prev opts words cword requestComp flag value
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    if declare -F _init_completion >/dev/null 2>&1; then
      _init_completion -n "=:" || return
    elif declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
      _get_comp_words_by_ref -n "=:" cur prev words cword
    else
      # No bash-completion package: the words as bash split them.
      words=("${COMP_WORDS[@]}")
      cword=$COMP_CWORD
    fi
    # A flag's value: the word after the flag, or what follows "=" in
    # --flag=VALUE (one word, or three where bash split at "=").
    value="$cur"
    flag=""
    if [[ "$cur" == -*=* ]]; then
      flag="${cur%%=*}"
      value="${cur#*=}"
    elif [[ "$cur" == "=" ]] && ((cword >= 1)); then
      flag="${words[cword-1]}"
      value=""
    elif ((cword >= 2)) && [[ "${words[cword-1]}" == "=" ]]; then
      flag="${words[cword-2]}"
    elif ((cword >= 1)); then
      flag="${words[cword-1]}"
    fi
    case "$flag" in
#BASHVALUES#    esac
    words=("${words[@]:0:$cword}")
    if [[ "$cur" == "-"* ]]; then
      # "-", not $cur: a word "--" would end the flags, and compgen
      # filters by $cur anyway.
      requestComp="${words[*]} - --generate-bash-completion"
    else
      requestComp="${words[*]} --generate-bash-completion"
    fi
    opts=$(eval "${requestComp}" 2>/dev/null)
    COMPREPLY=($(compgen -W "${opts}" -- ${cur}))
    return 0
  fi
}
_FUNC_paths() { # _FUNC_paths -d|-f: directories or files starting with $value
  # No fallback to every file (-o default) when no directory matches.
  compopt -o filenames +o nospace +o default +o bashdefault 2>/dev/null
  if declare -F _filedir >/dev/null 2>&1; then
    local cur="$value"
    if [[ "$1" == -d ]]; then _filedir -d; else _filedir; fi
  else
    mapfile -t COMPREPLY < <(compgen "$1" -- "$value")
  fi
}
complete -o bashdefault -o default -o nospace -F _FUNC PROG
`

const zshCompletion = `#compdef PROG
# zsh completion for PROG; load with: source <(PROG completion zsh)
# (or save it as _PROG in a directory of $fpath)
_FUNC() {
  local -a opts
  local cur flag
  cur=${words[-1]}
  flag=${words[-2]}
  # A flag's value: the word after the flag, or what follows "=" in
  # --flag=VALUE.
  if [[ "$cur" == -*=* ]]; then
    flag=${cur%%=*}
    compset -P '*='
  fi
  case "$flag" in
#ZSHVALUES#  esac
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} - --generate-bash-completion)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
if [[ "${funcstack[1]}" == "_PROG" ]]; then
  # Autoloaded from $fpath at the first <TAB>: complete now.
  _FUNC "$@"
else
  compdef _FUNC PROG
fi
`

// Kinds of flag values, for completion.
const (
	valueOther = iota // no candidates (a host, a size, a duration)
	valueDir
	valueFile
	valueWords
)

// Flag values by long flag name; a flag missing here takes a file if it
// says so (TakesFile), another value (valueOther) if it takes one, nothing
// otherwise.
var (
	dirFlags  = []string{"dir", "mount", "journal", "state", "slave-state"}
	fileFlags = []string{"cert", "key", "ca", "crl", "config", "admin-socket"}
	wordFlags = map[string]string{
		"sync":       "async fsync sync",
		"log-level":  "debug info warn error",
		"log-format": "text json",
		"key-type":   "ed25519 p256",
		"compress":   "0 1 2 3 4",
	}
)

// flagValue is what the value of one flag (under all its names) is.
type flagValue struct {
	names []string // as typed: --dir, -m
	kind  int
	words string // valueWords: the candidates
}

// flagValues returns the value of every flag of app and its commands that
// takes one, each flag once (by its names), in the order of the help.
func flagValues(app *cli.App) []flagValue {
	var out []flagValue
	seen := map[string]bool{}
	var add func(flags []cli.Flag, cmds []*cli.Command)
	add = func(flags []cli.Flag, cmds []*cli.Command) {
		for _, f := range flags {
			names := f.Names()
			if len(names) == 0 || seen[strings.Join(names, "|")] {
				continue
			}
			df, ok := f.(cli.DocGenerationFlag)
			if !ok || !df.TakesValue() {
				continue
			}
			seen[strings.Join(names, "|")] = true
			v := flagValue{kind: valueOther}
			switch {
			case contains(dirFlags, names[0]):
				v.kind = valueDir
			case contains(fileFlags, names[0]) || takesFile(f):
				v.kind = valueFile
			case wordFlags[names[0]] != "":
				v.kind, v.words = valueWords, wordFlags[names[0]]
			}
			for _, n := range names {
				if len(n) == 1 {
					v.names = append(v.names, "-"+n)
				} else {
					v.names = append(v.names, "--"+n)
				}
			}
			out = append(out, v)
		}
		for _, c := range cmds {
			add(c.Flags, c.Subcommands)
		}
	}
	add(app.Flags, app.Commands)
	return out
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// takesFile reports a flag's TakesFile, through the wrappers of
// WithConfigFile.
func takesFile(f cli.Flag) bool {
	switch f := f.(type) {
	case *cli.StringFlag:
		return f.TakesFile
	case *cli.StringSliceFlag:
		return f.TakesFile
	case *cli.PathFlag:
		return f.TakesFile
	case *cli.GenericFlag:
		return f.TakesFile
	case *altsrc.StringFlag:
		return f.StringFlag != nil && f.TakesFile
	case *altsrc.StringSliceFlag:
		return f.StringSliceFlag != nil && f.TakesFile
	case *altsrc.PathFlag:
		return f.PathFlag != nil && f.TakesFile
	case *altsrc.GenericFlag:
		return f.GenericFlag != nil && f.TakesFile
	}
	return false
}

// valueCases returns the arms of the scripts' case statement on the flag
// before the cursor: dirs and files in one arm each, each flag of words
// in its own, the flags whose values cannot be guessed in the last.
func valueCases(app *cli.App, shell string) string {
	var dirs, files, others []string
	var words []flagValue
	for _, v := range flagValues(app) {
		switch v.kind {
		case valueDir:
			dirs = append(dirs, v.names...)
		case valueFile:
			files = append(files, v.names...)
		case valueWords:
			words = append(words, v)
		default:
			others = append(others, v.names...)
		}
	}
	var b strings.Builder
	arm := func(names []string, body ...string) {
		if len(names) == 0 {
			return
		}
		if shell == "bash" {
			fmt.Fprintf(&b, "    %s)\n", strings.Join(names, "|"))
			for _, l := range body {
				fmt.Fprintf(&b, "      %s\n", l)
			}
			b.WriteString("      return 0 ;;\n")
		} else {
			fmt.Fprintf(&b, "    (%s)\n", strings.Join(names, "|"))
			for _, l := range body {
				fmt.Fprintf(&b, "      %s\n", l)
			}
			b.WriteString("      return ;;\n")
		}
	}
	if shell == "bash" {
		arm(dirs, "_FUNC_paths -d")
		arm(files, "_FUNC_paths -f")
		for _, v := range words {
			arm(v.names, "compopt +o nospace 2>/dev/null", `COMPREPLY=($(compgen -W "`+v.words+`" -- "$value"))`)
		}
		// Not the commands, nor files: -o default would offer them.
		arm(others, "compopt +o default +o bashdefault 2>/dev/null")
	} else {
		arm(dirs, "_files -/")
		arm(files, "_files")
		for _, v := range words {
			arm(v.names, "compadd -- "+v.words)
		}
		arm(others, "_message 'a value'")
	}
	return b.String()
}

// CompletionScript returns the completion script of program prog for
// shell (bash, zsh or fish).
func CompletionScript(app *cli.App, shell string) (string, error) {
	fill := strings.NewReplacer("_FUNC", "_"+strings.ReplaceAll(app.Name, "-", "_")+"_complete", "PROG", app.Name)
	switch shell {
	case "bash":
		return fill.Replace(strings.Replace(bashCompletion, "#BASHVALUES#", valueCases(app, shell), 1)), nil
	case "zsh":
		return fill.Replace(strings.Replace(zshCompletion, "#ZSHVALUES#", valueCases(app, shell), 1)), nil
	case "fish":
		return app.ToFishCompletion()
	}
	return "", fmt.Errorf("completion %q: want bash, zsh or fish", shell)
}

// CompletionCommand is "prog completion bash|zsh|fish": it prints the
// shell's completion script.
func CompletionCommand(prog string) *cli.Command {
	examples := strings.ReplaceAll("Examples:\n"+
		"   source <(PROG completion bash)                      # this bash session\n"+
		"   PROG completion bash > /etc/bash_completion.d/PROG  # every bash session\n"+
		"   PROG completion zsh > \"${fpath[1]}/_PROG\"\n"+
		"   PROG completion fish > ~/.config/fish/completions/PROG.fish", "PROG", prog)
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: "completion prints a script that makes the shell complete " + prog + "'s commands and\n" +
			"flags (the shell runs " + prog + " --generate-bash-completion at each <TAB>).\n" + examples,
		BashComplete: func(c *cli.Context) {
			fmt.Fprintln(c.App.Writer, "bash\nzsh\nfish")
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("completion: name one shell: bash, zsh or fish")
			}
			s, err := CompletionScript(c.App, c.Args().First())
			if err != nil {
				return err
			}
			_, err = io.WriteString(c.App.Writer, s)
			return err
		},
	}
}

// ManCommand is the hidden "PROG man": it prints a man page (section 8)
// made from the help texts, for packagers: PROG man > PROG.8
func ManCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print a man page (roff) made from the help texts",
		Hidden: true,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("man: unexpected argument %s", c.Args().First())
			}
			s, err := c.App.ToMan()
			if err != nil {
				return err
			}
			if v := c.App.Version; v != "" && !strings.ContainsAny(v, "\"\\\n") {
				// The footer names the version the page describes.
				th := ".TH " + c.App.Name + " 8\n"
				s = strings.Replace(s, th, ".TH "+c.App.Name+` 8 "" "`+c.App.Name+" "+v+"\"\n", 1)
			}
			_, err = io.WriteString(c.App.Writer, s)
			return err
		},
	}
}
