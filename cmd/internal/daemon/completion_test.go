package daemon

import (
	"fmt"
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

// valuesApp has a flag of every kind of value the scripts complete.
func valuesApp() *cli.App {
	return &cli.App{
		Name: "tdfs-test",
		Flags: WithConfigFile(append([]cli.Flag{
			&cli.StringFlag{Name: "dir", Aliases: []string{"m"}},
			&cli.StringFlag{Name: "cert"},
			&cli.StringFlag{Name: "bundle", TakesFile: true},
			&cli.StringFlag{Name: "sync"},
			&cli.StringSliceFlag{Name: "connect", Aliases: []string{"c"}},
			&cli.BoolFlag{Name: "allow-other"},
		}, LogFlags()...)),
		Commands: []*cli.Command{{Name: "verify", Flags: []cli.Flag{
			&cli.StringFlag{Name: "journal", Aliases: []string{"state"}},
			&cli.StringFlag{Name: "dir", Aliases: []string{"m"}},
		}}},
	}
}

func TestFlagValues(t *testing.T) {
	var got []string
	for _, v := range flagValues(valuesApp()) {
		got = append(got, fmt.Sprint(v.names, v.kind, v.words))
	}
	want := []string{
		fmt.Sprint([]string{"--config"}, valueFile, ""),
		fmt.Sprint([]string{"--dir", "-m"}, valueDir, ""),
		fmt.Sprint([]string{"--cert"}, valueFile, ""),
		fmt.Sprint([]string{"--bundle"}, valueFile, ""), // TakesFile, through WithConfigFile's wrapper
		fmt.Sprint([]string{"--sync"}, valueWords, "async fsync sync"),
		fmt.Sprint([]string{"--connect", "-c"}, valueOther, ""),
		fmt.Sprint([]string{"--log-level"}, valueWords, "debug info warn error"),
		fmt.Sprint([]string{"--log-format"}, valueWords, "text json"),
		fmt.Sprint([]string{"--journal", "--state"}, valueDir, ""), // a command's flag; its --dir is the app's
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("flagValues:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestBashCompletionValues runs the bash script on flags that take values,
// in a directory holding a directory and a file: directories, files and
// words are completed by the script, without asking the program. It runs
// with bash alone and, where it is installed, with the bash-completion
// package's helpers, which the script then uses.
func TestBashCompletionValues(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("SKIP: bash is not installed")
	}
	script, err := CompletionScript(valuesApp(), "bash")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(dir+"/sub dir", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/server.crt", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Each line is COMP_WORDS, split at blanks; bash itself also splits
	// --flag=value at "=" ("--sync = a"), which bash-completion joins again.
	const driver = `
tdfs-test() { echo asked; }
for line in "tdfs-test --dir s" "tdfs-test -m s" "tdfs-test verify --state s" "tdfs-test --cert se" \
    "tdfs-test --bundle s" "tdfs-test --config " "tdfs-test --sync f" "tdfs-test --sync=a" "tdfs-test --sync = a" \
    "tdfs-test --sync =" "tdfs-test --log-level w" "tdfs-test --connect h" "tdfs-test --allow-other a"; do
  read -ra COMP_WORDS <<<"$line"
  [[ "$line" == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMP_LINE=$line COMP_POINT=${#line}
  COMPREPLY=()
  _tdfs_test_complete
  printf '%s =>' "$line"
  if ((${#COMPREPLY[@]})); then
    printf '%s\n' "${COMPREPLY[@]}" | LC_ALL=C sort | while IFS= read -r w; do printf ' [%s]' "$w"; done
  fi
  echo
done
`
	want := "tdfs-test --dir s => [sub dir]\n" +
		"tdfs-test -m s => [sub dir]\n" +
		"tdfs-test verify --state s => [sub dir]\n" +
		"tdfs-test --cert se => [server.crt]\n" +
		"tdfs-test --bundle s => [server.crt] [sub dir]\n" +
		"tdfs-test --config  => [server.crt] [sub dir]\n" +
		"tdfs-test --sync f => [fsync]\n" +
		"tdfs-test --sync=a => [async]\n" +
		"tdfs-test --sync = a => [async]\n" +
		"tdfs-test --sync = => [async] [fsync] [sync]\n" +
		"tdfs-test --log-level w => [warn]\n" +
		"tdfs-test --connect h =>\n" +
		"tdfs-test --allow-other a => [asked]\n"
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	for _, mode := range []string{"bash", "bash-completion"} {
		t.Run(mode, func(t *testing.T) {
			prelude := ""
			if mode == "bash-completion" {
				if _, err := os.Stat(bashCompletion); err != nil {
					t.Skip("SKIP: the bash-completion package is not installed")
				}
				prelude = "source " + bashCompletion + "\n"
			}
			cmd := exec.Command("bash", "-c", prelude+script+driver)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			if string(out) != want {
				t.Errorf("bash completion of values:\n%s\nwant\n%s", out, want)
			}
		})
	}
}

// TestZshCompletionScript checks the zsh script's syntax, where zsh is
// installed.
func TestZshCompletionScript(t *testing.T) {
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Skip("SKIP: zsh is not installed")
	}
	script, err := CompletionScript(valuesApp(), "zsh")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("zsh", "-n", "-c", script).CombinedOutput(); err != nil {
		t.Errorf("zsh -n: %v\n%s\n%s", err, out, script)
	}
}

func TestManVersion(t *testing.T) {
	var out strings.Builder
	app := completionApp(&out)
	app.Version = "0.5.0 (go1.26.8, commit 68aa327)"
	if err := app.Run([]string{"tdfs-test", "man"}); err != nil {
		t.Fatal(err)
	}
	if want := "\n.TH tdfs-test 8 \"\" \"tdfs-test 0.5.0 (go1.26.8, commit 68aa327)\"\n"; !strings.Contains(out.String(), want) {
		t.Errorf("man page lacks %q:\n%s", want, out.String())
	}
}
