package daemon

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func completionApp(out *strings.Builder) *cli.App {
	return &cli.App{
		Name:                 "tdfs-test",
		Writer:               out,
		ExitErrHandler:       func(*cli.Context, error) {},
		EnableBashCompletion: true,
		Flags:                WithConfigFile(LogFlags()),
		Action:               func(*cli.Context) error { return nil },
		Commands:             []*cli.Command{CompletionCommand("tdfs-test"), ManCommand()},
	}
}

func TestCompletionCandidates(t *testing.T) {
	// What the scripts ask at each <TAB>: the app's commands, its flags
	// (asked with "-", see the scripts), a command's arguments.
	for _, c := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"completion"}},
		{[]string{"-"}, []string{"--config", "--log-level", "--log-format"}},
		{[]string{"completion"}, []string{"bash", "zsh", "fish"}},
	} {
		var out strings.Builder
		args := append(append([]string{"tdfs-test"}, c.args...), "--generate-bash-completion")
		// urfave/cli's completion reads the word before the request from
		// os.Args, not from the arguments given to Run.
		saved := os.Args
		os.Args = args
		err := completionApp(&out).Run(args)
		os.Args = saved
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Fields(out.String())
		for _, w := range c.want {
			if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+w+" ") {
				t.Errorf("%v: candidates %v lack %s", c.args, got, w)
			}
		}
		if strings.Contains(out.String(), "man") {
			t.Errorf("%v: the hidden man command is offered: %v", c.args, got)
		}
	}
}

func TestCompletionScripts(t *testing.T) {
	var out strings.Builder
	app := completionApp(&out)
	for shell, want := range map[string]string{
		"bash": "complete -o bashdefault -o default -o nospace -F _tdfs_test_complete tdfs-test\n",
		"zsh":  "compdef _tdfs_test_complete tdfs-test\n",
		"fish": "complete -c tdfs-test",
	} {
		out.Reset()
		if err := app.Run([]string{"tdfs-test", "completion", shell}); err != nil {
			t.Fatalf("completion %s: %v", shell, err)
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("completion %s lacks %q:\n%s", shell, want, out.String())
		}
	}
	if err := app.Run([]string{"tdfs-test", "completion", "csh"}); err == nil || err.Error() != `completion "csh": want bash, zsh or fish` {
		t.Errorf("completion csh: %v", err)
	}
	if err := app.Run([]string{"tdfs-test", "completion"}); err == nil {
		t.Error("completion without a shell succeeded")
	}
	out.Reset()
	if err := app.Run([]string{"tdfs-test", "man"}); err != nil || !strings.Contains(out.String(), ".TH tdfs-test 8") {
		t.Errorf("man: %v\n%s", err, out.String())
	}
}

// TestBashCompletionScript runs the bash script with a stand-in for the
// program (a shell function answering as urfave/cli would), with and
// without the bash-completion package's helpers.
func TestBashCompletionScript(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("SKIP: bash is not installed")
	}
	script, err := CompletionScript(&cli.App{Name: "tdfs-test"}, "bash")
	if err != nil {
		t.Fatal(err)
	}
	const driver = `
tdfs-test() { # stands in for the binary: records what it was asked, answers
  echo "$*" > "$ASKED"
  if [[ "${@: -2:1}" == "-" ]]; then printf '%s\n' --config --log-level --log-format; else echo completion; fi
}
ASKED=$(mktemp); trap 'rm -f "$ASKED"' EXIT
for line in "tdfs-test --log-l" "tdfs-test --" "tdfs-test c"; do
  read -ra COMP_WORDS <<<"$line"; COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  _tdfs_test_complete
  echo "$line => ${COMPREPLY[*]} (asked: $(cat "$ASKED"))"
done
`
	out, err := exec.Command("bash", "-c", script+driver).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	want := "tdfs-test --log-l => --log-level (asked: - --generate-bash-completion)\n" +
		"tdfs-test -- => --config --log-level --log-format (asked: - --generate-bash-completion)\n" +
		"tdfs-test c => completion (asked: --generate-bash-completion)\n"
	if string(out) != want {
		t.Errorf("bash completion:\n%s\nwant\n%s", out, want)
	}
}
