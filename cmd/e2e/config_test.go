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

// runFail runs a binary that must refuse to start: non-zero exit, one line
// on stderr, containing want.
func runFail(t *testing.T, name string, want string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin(name), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s %v did not exit on a misconfiguration", name, args)
	}
	out := strings.TrimSpace(stderr.String())
	if err == nil {
		t.Fatalf("%s %v exited 0, want an error mentioning %q", name, args, want)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("%s %v: %v, want exit status 1", name, args, err)
	}
	if strings.Count(out, "\n") != 0 || !strings.Contains(out, want) {
		t.Errorf("%s %v: stderr %q, want one line containing %q", name, args, out, want)
	}
}

func TestMisconfiguration(t *testing.T) {
	k := newPKI(t, "s1")
	base := t.TempDir()
	dir, mnt := filepath.Join(base, "dir"), filepath.Join(base, "mnt")
	for _, d := range []string{dir, mnt, filepath.Join(dir, "inner")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	good := k.flags("master")
	master := func(extra ...string) []string { return append(extra, good...) }
	cases := []struct {
		name, bin, want string
		args            []string
	}{
		{"master no -m", "tdfs-master", "-m is required", master("--mount", mnt, "-c", "127.0.0.1:1")},
		{"master -m not a dir", "tdfs-master", "not a directory", master("-m", file, "--mount", mnt, "-c", "127.0.0.1:1")},
		{"master -m missing", "tdfs-master", "no such directory", master("-m", base+"/nope", "--mount", mnt, "-c", "127.0.0.1:1")},
		{"master mount missing", "tdfs-master", "no such directory", master("-m", dir, "--mount", base+"/nope", "-c", "127.0.0.1:1")},
		{"master mount inside -m", "tdfs-master", "inside the backing dir", master("-m", dir, "--mount", dir+"/inner", "-c", "127.0.0.1:1")},
		{"master state inside -m", "tdfs-master", "/st lies inside", master("-m", dir, "--mount", mnt, "-c", "127.0.0.1:1", "--state", dir+"/st")},
		{"master no slaves", "tdfs-master", "no slave given", master("-m", dir, "--mount", mnt)},
		{"master bad sync", "tdfs-master", "--sync \"often\"", master("-m", dir, "--mount", mnt, "-c", "127.0.0.1:1", "--sync", "often")},
		{"master bad -z", "tdfs-master", "-z \"x\"", master("-m", dir, "--mount", mnt, "-c", "127.0.0.1:1", "-z", "x")},
		{"master -z 99", "tdfs-master", "-z \"99\"", master("-m", dir, "--mount", mnt, "-c", "127.0.0.1:1", "-z", "99")},
		{"master with a slave cert", "tdfs-master", "is not a master (clientAuth) certificate", []string{"-m", dir, "--mount", mnt,
			"-c", "127.0.0.1:1", "--cert", filepath.Join(k.dir, "s1.crt"), "--key", filepath.Join(k.dir, "s1.key"),
			"--ca", filepath.Join(k.dir, "ca.crt")}},
		{"slave with a master cert", "tdfs-slave", "is not a slave (serverAuth) certificate", append([]string{"-m", dir,
			"--state", base + "/st"}, good...)},
		{"master missing cert", "tdfs-master", "no such file", []string{"-m", dir, "--mount", mnt, "-c", "127.0.0.1:1",
			"--cert", base + "/nope.crt", "--key", filepath.Join(k.dir, "master.key"), "--ca", filepath.Join(k.dir, "ca.crt")}},
		{"master no --ca", "tdfs-master", "--ca is required", []string{"-m", dir, "--mount", mnt, "-c", "127.0.0.1:1",
			"--cert", filepath.Join(k.dir, "master.crt"), "--key", filepath.Join(k.dir, "master.key")}},
		{"slave -m not a dir", "tdfs-slave", "not a directory", append([]string{"-m", file, "--state", base + "/st"}, k.flags("s1")...)},
		{"slave state inside -m", "tdfs-slave", "/st lies inside", append([]string{"-m", dir, "--state", dir + "/st"}, k.flags("s1")...)},
		{"slave missing key", "tdfs-slave", "no such file", []string{"-m", dir, "--state", base + "/st",
			"--cert", filepath.Join(k.dir, "s1.crt"), "--key", base + "/nope.key", "--ca", filepath.Join(k.dir, "ca.crt")}},
		{"unknown flag", "tdfs-slave", "flag provided but not defined", []string{"--bogus"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runFail(t, c.bin, c.want, c.args...) })
	}
	if mounted(mnt) {
		t.Fatal("a refused master left a mount behind")
	}
}

// TestWrongCA: a master whose certificate comes from another CA is refused
// by the slave, with an error a user can search for, and nothing replicates.
func TestWrongCA(t *testing.T) {
	k := newPKI(t, "s1")
	other := newPKI(t)
	s := startSlave(t, k, "s1")
	base := t.TempDir()
	dir, mnt := filepath.Join(base, "backing"), filepath.Join(base, "mnt")
	os.Mkdir(dir, 0o755)
	os.Mkdir(mnt, 0o755)
	args := []string{"-m", dir, "--mount", mnt, "-c", s.addr,
		"--cert", filepath.Join(other.dir, "master.crt"), "--key", filepath.Join(other.dir, "master.key"),
		"--ca", filepath.Join(k.dir, "ca.crt"),
		// The slave will never take this master: do not wait long at exit.
		"--drain-timeout", "2s", "--state", filepath.Join(base, "state")}
	m := start(t, "tdfs-master", args...)
	t.Cleanup(func() {
		if mounted(mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	m.waitLine(`msg=mounted`, 30*time.Second)
	m.waitLine(`unknown certificate authority|bad certificate`, 30*time.Second)
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "f")); !os.IsNotExist(err) {
		t.Fatalf("a master with a foreign certificate replicated a file: %v", err)
	}
	(&master{proc: m, dir: dir, mnt: mnt}).stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}

// TestSlaveStartsLater: the master starts with its slave absent, keeps
// retrying, and the slave converges once it is up.
func TestSlaveStartsLater(t *testing.T) {
	k := newPKI(t, "s1")
	addr := freeUDPAddr(t)
	m := startMaster(t, k, []*slave{{addr: addr}}, "--sync", "async")
	m.waitLine(`connect|dial`, 30*time.Second) // it tried and failed: nobody listens yet
	workloadSmall(t, m.mnt)
	s := startSlaveAt(t, k, "s1", addr)
	converge(t, m, []*slave{s}, 60*time.Second)
	m.stop(syscall.SIGTERM, 60*time.Second)
	s.stop(syscall.SIGTERM, 30*time.Second)
}

func workloadSmall(t *testing.T, mnt string) {
	t.Helper()
	for i := range 10 {
		d := filepath.Join(mnt, "dir"+string(rune('0'+i)))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "f"), make([]byte, i*10000), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDirInUse: a second daemon on a directory already served is refused
// with one clear line: two op streams must never interleave in one tree.
func TestDirInUse(t *testing.T) {
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	state := filepath.Join(t.TempDir(), "other-state")
	cmd := exec.Command(bin("tdfs-slave"), append([]string{"-m", s.dir, "--listen", "127.0.0.1:0", "--state", state},
		k.flags("s1")...)...)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is in use by another tdfs process") ||
		strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Fatalf("a second slave on %s: %v\n%s", s.dir, err, out)
	}
	s.stop(syscall.SIGTERM, 30*time.Second)
}
