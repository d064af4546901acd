package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestInstall runs make install into a temporary DESTDIR with PREFIX=/usr,
// as make deb stages the package, and checks what lands where: the
// binaries stamped with the version packaging/version.sh gives, the units
// pointing at them, completion and man pages the binaries made, the docs
// and the example configs; a second install keeps an edited config.
func TestInstall(t *testing.T) {
	for _, tool := range []string{"make", "git", "sed", "install"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIP: %s is not installed", tool)
		}
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dest, bin := t.TempDir(), t.TempDir()
	install := func() string {
		t.Helper()
		cmd := exec.Command("make", "--no-print-directory", "-C", root, "install", "DESTDIR="+dest, "PREFIX=/usr", "BIN="+bin)
		// Not the flags of a make that runs this test (make e2e).
		cmd.Env = append(os.Environ(), "MAKEFLAGS=", "MFLAGS=", "MAKELEVEL=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
		return string(out)
	}
	install()

	info, err := exec.Command("sh", filepath.Join(root, "packaging/version.sh")).Output()
	if err != nil {
		t.Fatalf("packaging/version.sh: %v", err)
	}
	f := strings.Fields(string(info))
	if len(f) != 3 {
		t.Fatalf("packaging/version.sh printed %q, want VERSION COMMIT DATE", info)
	}
	for _, p := range []string{"tdfs-master", "tdfs-slave", "tdfs-certs"} {
		out, err := exec.Command(filepath.Join(dest, "usr/bin", p), "--version").Output()
		want := p + " " + f[0] + " (" + runtime.Version() + ", commit " + f[1] + ", built " + f[2] + ")\n"
		if err != nil || string(out) != want {
			t.Errorf("%s --version: %q, %v; want %q", p, out, err, want)
		}
		for file, has := range map[string]string{
			"usr/share/bash-completion/completions/" + p: "complete -o bashdefault -o default -o nospace -F _",
			"usr/share/zsh/site-functions/_" + p:         "#compdef " + p + "\n",
			"usr/share/man/man8/" + p + ".8":             ".TH " + p + " 8",
		} {
			if b, err := os.ReadFile(filepath.Join(dest, file)); err != nil || !bytes.Contains(b, []byte(has)) {
				t.Errorf("%s: %v; want it to contain %q", file, err, has)
			}
		}
	}
	for _, u := range []string{"tdfs-master", "tdfs-slave"} {
		b, err := os.ReadFile(filepath.Join(dest, "lib/systemd/system", u+".service"))
		if err != nil || !bytes.Contains(b, []byte("\nExecStart=/usr/bin/"+u+" --config /etc/tdfs/")) {
			t.Errorf("%s.service: %v; ExecStart does not run /usr/bin/%s:\n%s", u, err, u, b)
		}
	}
	for _, file := range []string{"usr/share/doc/tdfs/README.md", "usr/share/doc/tdfs/LICENSE",
		"usr/share/doc/tdfs/CHANGELOG.md", "usr/share/doc/tdfs/examples/master.yaml",
		"usr/share/doc/tdfs/examples/slave.yaml"} {
		if _, err := os.Stat(filepath.Join(dest, file)); err != nil {
			t.Error(err)
		}
	}
	conf := filepath.Join(dest, "etc/tdfs/master.yaml")
	if st, err := os.Stat(conf); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("etc/tdfs/master.yaml: %v (want a file of mode 0600)", err)
	}
	if st, err := os.Stat(filepath.Dir(conf)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("etc/tdfs: %v (want a directory of mode 0700)", err)
	}

	// An administrator's config survives the next install.
	if err := os.WriteFile(conf, []byte("dir: /srv/mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := install(); !strings.Contains(out, "master.yaml exists: kept") {
		t.Errorf("second make install did not say it kept master.yaml:\n%s", out)
	}
	if b, err := os.ReadFile(conf); err != nil || string(b) != "dir: /srv/mine\n" {
		t.Errorf("etc/tdfs/master.yaml after a second install: %q, %v", b, err)
	}
}
