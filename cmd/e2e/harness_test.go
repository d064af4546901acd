// Package e2e runs the built tdfs binaries end to end: real certificates
// from tdfs-certs, real slaves on 127.0.0.1, a real FUSE mount served by
// tdfs-master, and whole-tree comparisons of each slave with the backing dir.
package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tdfs/tdfs/cmd/internal/treecmp"
)

var binDir string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if st, err := os.Stat("/dev/fuse"); err != nil || st.Mode()&os.ModeCharDevice == 0 || os.Geteuid() != 0 {
		msg := "e2e: SKIPPING ALL: needs root and /dev/fuse"
		if os.Getenv("TDFS_REQUIRE_FUSE") == "1" {
			fmt.Fprintln(os.Stderr, msg+", but TDFS_REQUIRE_FUSE=1")
			return 1
		}
		fmt.Fprintln(os.Stderr, msg)
		return 0
	}
	dir, err := os.MkdirTemp("", "tdfs-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	args := []string{"build", "-o", dir + "/"}
	if os.Getenv("TDFS_E2E_RACE") != "0" {
		// The daemons run under the race detector unless told otherwise.
		args = append(args, "-race")
	}
	args = append(args, "github.com/tdfs/tdfs/cmd/tdfs-master", "github.com/tdfs/tdfs/cmd/tdfs-slave",
		"github.com/tdfs/tdfs/cmd/tdfs-certs")
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the binaries:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

func bin(name string) string { return filepath.Join(binDir, name) }

// proc is a running tdfs binary whose stderr is kept and watched.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's result, after done

	mu    sync.Mutex
	lines []string
	cond  *sync.Cond
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, name, exec.Command(bin(name), args...))
}

// startCmd starts cmd (made by the caller, for its environment) as proc name.
func startCmd(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	args := cmd.Args[1:]
	p := &proc{t: t, name: name, cmd: cmd, done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	if p.cmd.Env == nil {
		p.cmd.Env = os.Environ()
	}
	p.cmd.Env = append(p.cmd.Env, "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true")
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.cond.Broadcast()
			p.mu.Unlock()
		}
		p.err = p.cmd.Wait()
		close(p.done)
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s %s stderr:\n%s", name, strings.Join(args, " "), p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitLine waits until a stderr line matches re and returns its submatches.
func (p *proc) waitLine(re string, timeout time.Duration) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 0; ; {
		for ; i < len(p.lines); i++ {
			if m := rx.FindStringSubmatch(p.lines[i]); m != nil {
				return m
			}
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited (%v) before logging %q:\n%s", p.name, p.err, re, strings.Join(p.lines, "\n"))
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not log %q within %v:\n%s", p.name, re, timeout, strings.Join(p.lines, "\n"))
		}
		p.cond.Wait()
	}
}

// stop signals the process and waits for a clean exit.
func (p *proc) stop(sig syscall.Signal, timeout time.Duration) {
	p.t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %v of %v:\n%s", p.name, timeout, sig, p.output())
	}
	if p.err != nil {
		p.t.Fatalf("%s exited with %v after %v:\n%s", p.name, p.err, sig, p.output())
	}
}

// pki holds certificates made with the tdfs-certs binary.
type pki struct{ dir string }

func newPKI(t *testing.T, slaves ...string) *pki {
	t.Helper()
	k := &pki{dir: filepath.Join(t.TempDir(), "pki")}
	runOK(t, bin("tdfs-certs"), "ca", "--dir", k.dir)
	runOK(t, bin("tdfs-certs"), "master", "--dir", k.dir, "master")
	for _, s := range slaves {
		runOK(t, bin("tdfs-certs"), "slave", "--dir", k.dir, s, "127.0.0.1", "localhost")
	}
	return k
}

func (k *pki) flags(name string) []string {
	return []string{"--cert", filepath.Join(k.dir, name+".crt"), "--key", filepath.Join(k.dir, name+".key"),
		"--ca", filepath.Join(k.dir, "ca.crt")}
}

func runOK(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// slave is a running tdfs-slave.
type slave struct {
	*proc
	dir, addr string
}

func startSlave(t *testing.T, k *pki, name string, extra ...string) *slave {
	t.Helper()
	return startSlaveAt(t, k, name, "127.0.0.1:0", extra...)
}

func startSlaveAt(t *testing.T, k *pki, name, listen string, extra ...string) *slave {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "replica")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return startSlaveDir(t, k, name, listen, dir, extra...)
}

// startSlaveIn starts a slave on an existing replica dir, with its state
// dir beside it.
func startSlaveIn(t *testing.T, k *pki, name, dir string) *slave {
	t.Helper()
	return startSlaveDir(t, k, name, "127.0.0.1:0", dir)
}

func startSlaveDir(t *testing.T, k *pki, name, listen, dir string, extra ...string) *slave {
	t.Helper()
	base := filepath.Dir(dir)
	args := append([]string{"-m", dir, "--listen", listen, "--state", filepath.Join(base, "state")},
		k.flags(name)...)
	p := start(t, "tdfs-slave", append(args, extra...)...)
	m := p.waitLine(`msg=listening .*addr=(\S+)`, 30*time.Second)
	return &slave{proc: p, dir: dir, addr: m[1]}
}

// master is a running tdfs-master with its mount.
type master struct {
	*proc
	dir, mnt string
	args     []string
}

func startMaster(t *testing.T, k *pki, slaves []*slave, extra ...string) *master {
	t.Helper()
	base := t.TempDir()
	dir, mnt := filepath.Join(base, "backing"), filepath.Join(base, "mnt")
	for _, d := range []string{dir, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"-m", dir, "--mount", mnt, "--state", filepath.Join(base, "state")}
	for _, s := range slaves {
		args = append(args, "-c", s.addr)
	}
	args = append(append(args, k.flags("master")...), extra...)
	p := start(t, "tdfs-master", args...)
	t.Cleanup(func() {
		// Never leave a mount behind, whatever happened to the master.
		if mounted(mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	p.waitLine(`msg=mounted`, 30*time.Second)
	return &master{proc: p, dir: dir, mnt: mnt, args: args}
}

// restart starts the master again on the same dirs, state and slaves.
func (m *master) restart(t *testing.T) *master {
	t.Helper()
	p := start(t, "tdfs-master", m.args...)
	p.waitLine(`msg=mounted`, 30*time.Second)
	return &master{proc: p, dir: m.dir, mnt: m.mnt, args: m.args}
}

// freeUDPAddr returns a 127.0.0.1 UDP address nobody listens on (yet), for
// a slave that must start after the master that dials it.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

func mounted(mnt string) bool {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == mnt {
			return true
		}
	}
	return false
}

// converge waits until every slave's tree equals the backing dir.
func converge(t *testing.T, m *master, slaves []*slave, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, s := range slaves {
		for {
			d, err := treecmp.Diff(m.dir, s.dir, treecmp.Options{})
			if err == nil && d == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("slave %s did not converge within %v:\n%v%s", s.addr, timeout, err, d)
			}
			time.Sleep(50 * time.Millisecond) // polling a condition, bounded by the deadline
		}
	}
}
