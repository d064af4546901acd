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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tdfs/tdfs/internal/treecmp"
	"github.com/tdfs/tdfs/internal/udprelay"
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
		// The binaries only ever talk to each other here: a protocol
		// error between them is a bug on one side, even if they recover.
		if l := p.linesFrom(0, `protocol error|out of order`); len(l) > 0 {
			t.Errorf("%s logged a protocol error:\n%s", name, strings.Join(l, "\n"))
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
	return p.waitLineFrom(0, re, timeout)
}

// mark is the number of stderr lines so far: waitLineFrom(mark, ...) and
// linesFrom(mark, ...) look only at what was logged after it.
func (p *proc) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// waitLineFrom waits until a stderr line numbered from or later matches re
// and returns its submatches.
func (p *proc) waitLineFrom(from int, re string, timeout time.Duration) []string {
	p.t.Helper()
	_, m := p.waitMatch(from, re, timeout)
	return m
}

// waitText is waitLineFrom returning the whole line.
func (p *proc) waitText(from int, re string, timeout time.Duration) string {
	p.t.Helper()
	l, _ := p.waitMatch(from, re, timeout)
	return l
}

func (p *proc) waitMatch(from int, re string, timeout time.Duration) (string, []string) {
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
	for i := from; ; {
		for ; i < len(p.lines); i++ {
			if m := rx.FindStringSubmatch(p.lines[i]); m != nil {
				return p.lines[i], m
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

// linesFrom returns the stderr lines numbered from or later that match re.
func (p *proc) linesFrom(from int, re string) []string {
	rx := regexp.MustCompile(re)
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, l := range p.lines[min(from, len(p.lines)):] {
		if rx.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// kill ends the process with SIGKILL and waits for it.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
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
	journal  string // its --journal dir
	args     []string
}

func startMaster(t *testing.T, k *pki, slaves []*slave, extra ...string) *master {
	t.Helper()
	var targets []string
	for _, s := range slaves {
		targets = append(targets, s.addr)
	}
	return startMasterTo(t, k, targets, extra...)
}

// startMasterTo starts a master on new dirs that replicates to targets
// (-c values: [NAME@]HOST:PORT).
func startMasterTo(t *testing.T, k *pki, targets []string, extra ...string) *master {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "backing")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return startMasterOn(t, k, dir, filepath.Join(base, "state"), targets, extra...)
}

// startMasterOn starts a master on the existing backing dir with journal
// dir journal (created if need be) and a new mount point.
func startMasterOn(t *testing.T, k *pki, dir, journal string, targets []string, extra ...string) *master {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"-m", dir, "--mount", mnt, "--state", journal}
	for _, target := range targets {
		args = append(args, "-c", target)
	}
	args = append(append(args, k.flags("master")...), extra...)
	m := &master{dir: dir, mnt: mnt, journal: journal, args: args}
	t.Cleanup(func() {
		// Never leave a mount behind, whatever happened to the master.
		if mounted(mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	return m.restart(t)
}

// restart starts the master again on the same dirs, state and slaves.
func (m *master) restart(t *testing.T) *master {
	t.Helper()
	p := start(t, "tdfs-master", m.args...)
	p.waitLine(`msg=mounted`, 30*time.Second)
	return &master{proc: p, dir: m.dir, mnt: m.mnt, journal: m.journal, args: m.args}
}

// crash kills the master with SIGKILL and clears the dead mount it leaves.
func (m *master) crash() {
	m.kill()
	// The mount of a killed master stays behind, dead: clear it.
	syscall.Unmount(m.mnt, syscall.MNT_DETACH)
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
		convergeWith(t, m, s, treecmp.Options{}, time.Until(deadline))
	}
}

// convergeWith is converge for one slave, with treecmp options.
func convergeWith(t *testing.T, m *master, s *slave, o treecmp.Options, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() error {
		d, err := treecmp.Diff(m.dir, s.dir, o)
		if err == nil && d != "" {
			err = fmt.Errorf("\n%s", d)
		}
		if err != nil {
			return fmt.Errorf("slave %s did not converge: %w", s.addr, err)
		}
		return nil
	})
}

// eventually polls cond until it returns nil, and fails t with the last
// error it returned once timeout has passed.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, bounded by the deadline
	}
}

// relayed puts a userspace UDP relay (internal/udprelay: delay, loss,
// partitions) in front of the slave listening on addr. It returns the
// relay and the -c value that reaches the slave through it: the slave's
// certificate name, so that TLS still checks it, at the relay's address.
func relayed(t *testing.T, name, addr string) (*udprelay.Relay, string) {
	t.Helper()
	r, err := udprelay.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, name + "@" + r.Addr()
}

// ofSlave matches the rest of a master's log line about the slave the
// master dials at addr (its "slave" attribute).
func ofSlave(addr string) string { return `.*\bslave=` + regexp.QuoteMeta(addr) + `(\s|$)` }

// intAttr returns the integer attribute key of a log line.
func intAttr(t *testing.T, line, key string) uint64 {
	t.Helper()
	m := regexp.MustCompile(`\b` + regexp.QuoteMeta(key) + `=(\d+)\b`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no %s=N in log line %q", key, line)
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil {
		t.Fatalf("%s in %q: %v", key, line, err)
	}
	return n
}

// treeSize is the sum of the sizes of the regular files under dir.
func treeSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// slaveState is the state dir the harness gives a slave: beside its
// replica.
func slaveState(s *slave) string { return filepath.Join(filepath.Dir(s.dir), "state") }

// noResync fails the test if the master logged, from line mark on, that
// the slave at addr needs or got a resync pass.
func noResync(t *testing.T, m *master, mark int, addr string) {
	t.Helper()
	if l := m.linesFrom(mark, `(needs a resync|needs resync|resync pass starting)`+ofSlave(addr)); len(l) > 0 {
		t.Errorf("the master resynchronised slave %s where the journal should have covered the gap:\n%s",
			addr, strings.Join(l, "\n"))
	}
}
