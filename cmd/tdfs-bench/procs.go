package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/cmd/internal/daemon"
)

// proc is a daemon the bench started: its log goes to a file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(name, logFile string, bin string, args ...string) (*proc, error) {
	return startDaemon(daemonOpts{}, name, logFile, bin, args...)
}

// daemonOpts say where a daemon the bench starts runs: on which CPUs
// (taskset -c; "" for any) and whether it writes a CPU profile (to
// profile, "" for none).
type daemonOpts struct {
	cpus, profile string
}

func startDaemon(o daemonOpts, name, logFile string, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	if o.cpus != "" {
		args = append([]string{"-c", o.cpus, bin}, args...)
		bin = "taskset"
	}
	cmd := exec.Command(bin, args...)
	if o.profile != "" {
		cmd.Env = append(os.Environ(), daemon.CPUProfileEnv+"="+o.profile)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitLog waits until the log has a line matching re and returns its
// submatches.
func (p *proc) waitLog(re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	var m []string
	err := waitFor(timeout, func() (bool, error) {
		b, _ := os.ReadFile(p.log)
		if m = re.FindStringSubmatch(string(b)); m != nil {
			return true, nil
		}
		if p.exited() {
			return false, fmt.Errorf("%s exited: %v\n%s", p.name, p.err, tail(b))
		}
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: waiting for %q: %w", p.name, re, err)
	}
	return m, nil
}

// stop sends SIGTERM, then SIGKILL after timeout.
func (p *proc) stop(timeout time.Duration) error {
	if p.exited() {
		return p.err
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %v: killed", p.name, timeout)
	}
}

func tail(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// waitFor polls cond every few milliseconds until it holds, fails, or
// timeout passes.
func waitFor(timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for delay := time.Millisecond; ; delay = min(2*delay, 20*time.Millisecond) {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", timeout)
		}
		time.Sleep(delay)
	}
}

// usage is what /proc says about a process: CPU seconds so far and peak
// resident memory since the last resetPeak.
type usage struct {
	cpu     float64
	peakRSS int64
	faults  float64 // page faults, minor and major: fresh memory touched
}

// resetPeak resets the process's peak RSS (VmHWM), so the next readUsage
// reports the peak of what follows.
func resetPeak(pid int) {
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

func readUsage(pid int) usage {
	var u usage
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name (which may hold spaces).
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 13 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				u.cpu = (ut + st) / 100 // USER_HZ is 100 on Linux
				minflt, _ := strconv.ParseFloat(f[7], 64)
				majflt, _ := strconv.ParseFloat(f[9], 64)
				u.faults = minflt + majflt
			}
		}
	}
	if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				u.peakRSS = kb << 10
			}
		}
		f.Close()
	}
	return u
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// scrape sums the samples of metric (any labels) at a Prometheus endpoint,
// and returns them by label set too.
func scrape(addr, metric string) (float64, map[string]float64, error) {
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	sum, by := 0.0, map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric) {
			continue
		}
		rest := line[len(metric):]
		labels := ""
		if strings.HasPrefix(rest, "{") {
			j := strings.IndexByte(rest, '}')
			if j < 0 {
				continue
			}
			labels, rest = rest[1:j], rest[j+1:]
		} else if !strings.HasPrefix(rest, " ") {
			continue // a longer metric name
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			continue
		}
		sum += v
		by[labels] += v
	}
	return sum, by, sc.Err()
}

// slaveSeq reads the slave's applied seq from its /seq endpoint.
func slaveSeq(addr string) (uint64, error) {
	resp, err := httpClient.Get("http://" + addr + "/seq")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var s struct {
		Applied uint64 `json:"applied_seq"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return 0, err
	}
	return s.Applied, nil
}

// run runs a command to its end, its output kept for errors.
func run(ctx context.Context, dir string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(out))
	}
	return string(out), nil
}

// unmountIfMounted lazily unmounts mnt if a test left it mounted.
func unmountIfMounted(mnt string) {
	b, _ := os.ReadFile("/proc/mounts")
	abs, _ := filepath.Abs(mnt)
	if strings.Contains(string(b), " "+abs+" ") {
		unix.Unmount(abs, unix.MNT_DETACH)
	}
}
