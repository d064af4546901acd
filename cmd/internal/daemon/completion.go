package daemon

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// Shell completion rides on urfave/cli's own: with App.EnableBashCompletion
// set, "PROG ... --generate-bash-completion" prints the commands or flags
// that may come next, and the scripts below ask for them at each <TAB>.
// The bash and zsh scripts are urfave/cli v2's autocomplete/bash_autocomplete
// and zsh_autocomplete with the program name filled in, the function named
// after it (so the scripts of the three tdfs commands can be loaded side by
// side), and "-" asked for in place of a partial flag: urfave/cli reads a
// word "--" as the end of the flags and would run the command instead.

const bashCompletion = `# bash completion for PROG; load with: source <(PROG completion bash)
_FUNC() {
  if [[ "${COMP_WORDS[0]}" != "source" ]]; then
    local cur prev opts words cword requestComp
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
complete -o bashdefault -o default -o nospace -F _FUNC PROG
`

const zshCompletion = `#compdef PROG
# zsh completion for PROG; load with: source <(PROG completion zsh)
# (or save it as _PROG in a directory of $fpath)
_FUNC() {
  local -a opts
  local cur
  cur=${words[-1]}
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
compdef _FUNC PROG
`

// CompletionScript returns the completion script of program prog for
// shell (bash, zsh or fish).
func CompletionScript(app *cli.App, shell string) (string, error) {
	fill := strings.NewReplacer("_FUNC", "_"+strings.ReplaceAll(app.Name, "-", "_")+"_complete", "PROG", app.Name)
	switch shell {
	case "bash":
		return fill.Replace(bashCompletion), nil
	case "zsh":
		return fill.Replace(zshCompletion), nil
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
			_, err = io.WriteString(c.App.Writer, s)
			return err
		},
	}
}
