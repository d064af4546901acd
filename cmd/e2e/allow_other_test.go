package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const nobody = 65534

// asNobody runs a shell command as uid/gid 65534 and returns its combined
// output and whether it succeeded.
func asNobody(t *testing.T, script string) (string, bool) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err == nil
}

// openUp makes every directory from dir up to / traversable by others, so
// another user can reach a mount point under t.TempDir().
func openUp(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, st.Mode().Perm()|0o005); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAllowOther: with --allow-other another user (a web server) can use the
// mount, and the kernel checks permissions (default_permissions), so the
// mount grants no more than the backing dir; without it, other users are
// kept out entirely.
func TestAllowOther(t *testing.T) {
	k := newPKI(t, "s1")
	for _, allow := range []bool{true, false} {
		s := startSlave(t, k, "s1")
		var flags []string
		if allow {
			flags = []string{"--allow-other"}
		}
		m := startMaster(t, k, []*slave{s}, flags...)
		openUp(t, m.mnt)
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(os.WriteFile(filepath.Join(m.mnt, "public"), []byte("for everyone"), 0o644))
		must(os.WriteFile(filepath.Join(m.mnt, "secret"), []byte("root only"), 0o600))
		must(os.Mkdir(filepath.Join(m.mnt, "drop"), 0o777))
		must(os.Chmod(filepath.Join(m.mnt, "drop"), 0o777))
		mnt := m.mnt
		if allow {
			if out, ok := asNobody(t, "cat "+mnt+"/public"); !ok || out != "for everyone" {
				t.Errorf("nobody cannot read a 0644 file: %q", out)
			}
			if out, ok := asNobody(t, "cat "+mnt+"/secret"); ok || !strings.Contains(out, "Permission denied") {
				t.Errorf("nobody read a 0600 root file: ok=%v %q", ok, out)
			}
			if out, ok := asNobody(t, "echo x > "+mnt+"/new"); ok || !strings.Contains(out, "Permission denied") {
				t.Errorf("nobody created a file in a root-owned 0755 dir: ok=%v %q", ok, out)
			}
			if out, ok := asNobody(t, "echo mine > "+mnt+"/drop/mine"); !ok {
				t.Errorf("nobody cannot create a file in a 0777 dir: %q", out)
			}
			st, err := os.Stat(filepath.Join(m.dir, "drop/mine"))
			if err != nil {
				t.Fatal(err)
			}
			if uid := st.Sys().(*syscall.Stat_t).Uid; uid != nobody {
				t.Errorf("file created by nobody is owned by %d in the backing dir", uid)
			}
		} else {
			if out, ok := asNobody(t, "ls "+mnt); ok || !strings.Contains(out, "Permission denied") {
				t.Errorf("without --allow-other nobody could list the mount: ok=%v %q", ok, out)
			}
		}
		syncMount(t, m.mnt)
		converge(t, m, []*slave{s}, 60*time.Second)
		m.stop(syscall.SIGTERM, 60*time.Second)
		s.stop(syscall.SIGTERM, 30*time.Second)
	}
}
