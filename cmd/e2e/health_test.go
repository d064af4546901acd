package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runCode runs a binary and returns its exit code and stdout (stderr
// appended after a line "--- stderr").
func runCode(t *testing.T, name string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin(name), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return code, stdout.String() + "--- stderr\n" + stderr.String()
}

// waitCode runs a binary until it exits with code, and returns its output.
func waitCode(t *testing.T, what string, code int, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, out := runCode(t, name, args...)
		if got == code {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s %s still exits %d (want %d) after %v:\n%s", what, name, strings.Join(args, " "), got, code, timeout, out)
		}
		time.Sleep(100 * time.Millisecond) // polling a condition, bounded by the deadline
	}
}

// httpGet returns the status code and body of url.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestHealth: status --check and /healthz say all is well while the slave
// streams, name the problem once it stops (exit 1, 503), and status
// --check says no daemon answers (exit 2) once the master stops. /status
// serves status --json; --watch --count 2 prints two snapshots, and a
// watch ends with exit 0 on SIGINT; --config finds each daemon from its
// config file; the slave, dialed as -c HOST:PORT, is named by its
// certificate, in status and in verify.
func TestHealth(t *testing.T) {
	t.Parallel()
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1", "--metrics-addr", "127.0.0.1:0")
	surl := s.waitLine(`msg=metrics .*url=(\S+)/metrics`, 30*time.Second)[1]
	m := startMaster(t, k, []*slave{s}, "--metrics-addr", "127.0.0.1:0")
	murl := strings.TrimSuffix(m.waitLine(`msg=metrics .*url=(\S+)`, 30*time.Second)[1], "/metrics")
	mflags := []string{"-m", m.dir, "--journal", m.journal}
	sflags := []string{"-m", s.dir, "--state", slaveState(s)}

	out := waitCode(t, "a streaming slave", 0, 30*time.Second, "tdfs-master", append([]string{"status", "--check"}, mflags...)...)
	if !strings.HasPrefix(out, "ok\n") {
		t.Errorf("status --check of a healthy master:\n%s", out)
	}
	if st := statusOf(t, m); st.Slaves[0].Name != "s1" || st.Slaves[0].Addr != s.addr {
		t.Errorf("the slave dialed at %s, its certificate s1: named %q at %q", s.addr, st.Slaves[0].Name, st.Slaves[0].Addr)
	}
	if code, body := httpGet(t, murl+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("master /healthz: %d %q", code, body)
	}
	_, body := httpGet(t, murl+"/status")
	var st statusAnswer
	if err := json.Unmarshal([]byte(body), &st); err != nil || len(st.Slaves) != 1 || st.Slaves[0].Name != "s1" || st.Epoch == "" {
		t.Errorf("master /status: %v\n%s", err, body)
	}
	out = waitCode(t, "a slave with its master", 0, 30*time.Second, "tdfs-slave", append([]string{"status", "--check"}, sflags...)...)
	if !strings.HasPrefix(out, "ok\n") {
		t.Errorf("tdfs-slave status --check:\n%s", out)
	}
	if code, body := httpGet(t, surl+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("slave /healthz: %d %q", code, body)
	}
	var ss struct {
		Master string `json:"master"`
		Dir    string `json:"dir"`
	}
	if _, body := httpGet(t, surl+"/status"); json.Unmarshal([]byte(body), &ss) != nil || ss.Dir != s.dir || ss.Master == "" {
		t.Errorf("slave /status: %s", body)
	}
	if out, code := verify(t, m); code != 0 || !strings.Contains(out, "s1 ("+s.addr+"): identical") {
		t.Errorf("verify names the slave s1: exit %d\n%s", code, out)
	}

	// --config finds each daemon from its own config file.
	mconf := filepath.Join(t.TempDir(), "master.yaml")
	sconf := filepath.Join(t.TempDir(), "slave.yaml")
	writeText(t, mconf, "dir: "+m.dir+"\nmount: "+m.mnt+"\njournal: "+m.journal+"\n")
	writeText(t, sconf, "dir: "+s.dir+"\nstate: "+slaveState(s)+"\n")
	if code, out := runCode(t, "tdfs-master", "status", "--check", "--config", mconf); code != 0 {
		t.Errorf("tdfs-master status --config: exit %d\n%s", code, out)
	}
	if code, out := runCode(t, "tdfs-slave", "status", "--check", "--config", sconf); code != 0 {
		t.Errorf("tdfs-slave status --config: exit %d\n%s", code, out)
	}

	// --watch --count 2: two snapshots, a blank line apart (not a terminal).
	code, out := runCode(t, "tdfs-master", append([]string{"status", "--watch", "--interval", "100ms", "--count", "2"}, mflags...)...)
	if code != 0 || strings.Count(out, "Every 100ms: tdfs-master status") != 2 || strings.Count(out, "SLAVE ") != 2 ||
		!strings.Contains(out, "\n\nEvery") || strings.Contains(out, "\033") {
		t.Errorf("status --watch --count 2: exit %d\n%s", code, out)
	}
	// SIGINT ends a watch, with exit 0.
	watch := exec.Command(bin("tdfs-slave"), append([]string{"status", "--watch"}, sflags...)...)
	pipe, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watch.Process.Kill() })
	if l, err := bufio.NewReader(pipe).ReadString('\n'); err != nil || !strings.HasPrefix(l, "Every 2s: tdfs-slave status") {
		t.Fatalf("tdfs-slave status --watch: %q %v", l, err)
	}
	go io.Copy(io.Discard, pipe)
	watch.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- watch.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("tdfs-slave status --watch after SIGINT: %v, want exit 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tdfs-slave status --watch did not end on SIGINT")
	}

	// The slave stops: the master reports it, the slave answers no more.
	s.stop(syscall.SIGTERM, 30*time.Second)
	out = waitCode(t, "a stopped slave", 1, 30*time.Second, "tdfs-master", append([]string{"status", "--check"}, mflags...)...)
	if !strings.Contains(out, "s1 ("+s.addr+"): not streaming: ") {
		t.Errorf("status --check with the slave stopped:\n%s", out)
	}
	if code, body := httpGet(t, murl+"/healthz"); code != 503 || !strings.Contains(body, "s1 ("+s.addr+"): not streaming") {
		t.Errorf("master /healthz with the slave stopped: %d %q", code, body)
	}
	if code, out := runCode(t, "tdfs-slave", append([]string{"status", "--check"}, sflags...)...); code != 2 {
		t.Errorf("tdfs-slave status --check with the slave stopped: exit %d\n%s", code, out)
	}

	m.stop(syscall.SIGTERM, 60*time.Second)
	if code, out := runCode(t, "tdfs-master", append([]string{"status", "--check"}, mflags...)...); code != 2 ||
		!strings.Contains(out, "no master answers") {
		t.Errorf("status --check with the master stopped: exit %d\n%s", code, out)
	}
}

func writeText(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}
