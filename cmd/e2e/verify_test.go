package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// verify runs `tdfs-master verify` against m and returns its stdout and
// exit code.
func verify(t *testing.T, m *master, extra ...string) (string, int) {
	t.Helper()
	args := append([]string{"verify", "-m", m.dir, "--journal", m.journal, "--timeout", "120s"}, extra...)
	cmd := exec.Command(bin("tdfs-master"), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("tdfs-master %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("tdfs-master %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return stdout.String(), code
}

// TestVerifyRepair: `tdfs-master verify` finds differences injected into
// a slave's replica (contents with size and mtime kept, a mode, an extra
// file) and exits 3; --repair fixes them, and verify then finds the
// replica identical.
func TestVerifyRepair(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s})
	m.waitLine(`resync pass done`+ofSlave(s.addr), 60*time.Second) // a new replica is compared once
	seedTree(t, m.mnt)
	syncMount(t, m.mnt)
	converge(t, m, []*slave{s}, 60*time.Second)
	if out, code := verify(t, m); code != 0 || !strings.Contains(out, "identical") {
		t.Fatalf("verify of an identical replica: exit %d\n%s", code, out)
	}

	// Inject differences behind the slave's back.
	p := filepath.Join(s.dir, "dir3", "f")
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("injected"), 4000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(p, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(s.dir, "dir4", "f"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "dir6", "injected"), []byte("not on the master"), 0o644); err != nil {
		t.Fatal(err)
	}

	out, code := verify(t, m)
	if code != 3 {
		t.Errorf("verify of a spoilt replica: exit %d, want 3 (differs)", code)
	}
	for _, want := range []string{"dir3/f", "dir4/f", "dir6/injected", "DIFFERS"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify does not report %q:\n%s", want, out)
		}
	}
	if out, code := verify(t, m, "--repair"); code != 0 || !strings.Contains(out, "repaired") {
		t.Errorf("verify --repair: exit %d\n%s", code, out)
	}
	converge(t, m, []*slave{s}, 60*time.Second)
	if out, code := verify(t, m); code != 0 || !strings.Contains(out, "identical") {
		t.Errorf("verify after the repair: exit %d\n%s", code, out)
	}

	// A slave that is not connected cannot be verified: exit 2.
	mark := m.mark()
	s.stop(syscall.SIGTERM, 30*time.Second)
	m.waitLineFrom(mark, `slave state: connecting`+ofSlave(s.addr), 30*time.Second)
	if out, code := verify(t, m); code != 2 || !strings.Contains(out, "not verified") {
		t.Errorf("verify with the slave stopped: exit %d, want 2 (not verified)\n%s", code, out)
	}
	m.stop(syscall.SIGTERM, 60*time.Second)
}
