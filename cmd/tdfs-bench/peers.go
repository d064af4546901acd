package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tdfs/tdfs/internal/treecmp"
)

// Peers, for the untar workload only: rsync's first copy of the finished
// tree to an rsync daemon on loopback, and lsyncd (delay=0) driving rsync
// while tar runs.

// rsyncDaemon starts an rsync daemon serving module "dst" at dst.
func (b *bench) rsyncDaemon(work, dst string) (*proc, string, error) {
	addr, err := freePort()
	if err != nil {
		return nil, "", err
	}
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(work, "rsyncd.conf")
	text := fmt.Sprintf("use chroot = no\nuid = 0\ngid = 0\npid file = %s/rsyncd.pid\n[dst]\npath = %s\nread only = no\n", work, dst)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, "", err
	}
	p, err := startProc("rsync-daemon", filepath.Join(work, "rsyncd.log"), "rsync",
		"--daemon", "--no-detach", "--address", "127.0.0.1", "--port", port, "--config", conf)
	if err != nil {
		return nil, "", err
	}
	err = waitFor(10*time.Second, func() (bool, error) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		p.stop(5 * time.Second)
		return nil, "", fmt.Errorf("rsync daemon: %w", err)
	}
	return p, "rsync://" + addr + "/dst/", nil
}

var rsyncSentRE = regexp.MustCompile(`Total bytes sent: ([\d,]+)`)

// benchRsync times rsync -a of the extracted tree to an empty daemon
// module.
func (b *bench) benchRsync(ctx context.Context, round int) (result, error) {
	r := result{Config: "rsync", Workload: "untar", Round: round}
	work := filepath.Join(b.root, fmt.Sprintf("rsync.r%d", round))
	src, dst := filepath.Join(work, "src"), filepath.Join(work, "dst")
	for _, d := range []string{src, dst} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return r, err
		}
	}
	defer os.RemoveAll(work)
	if _, err := run(ctx, src, "tar", "-xf", b.sz.tarball); err != nil {
		return r, err
	}
	d, url, err := b.rsyncDaemon(work, dst)
	if err != nil {
		return r, err
	}
	defer d.stop(10 * time.Second)
	start := time.Now()
	out, err := run(ctx, src, "rsync", "-aHX", "--stats", "./", url)
	if err != nil {
		return r, err
	}
	r.ReplSec = time.Since(start).Seconds()
	if m := rsyncSentRE.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(strings.ReplaceAll(m[1], ",", ""), 10, 64)
		r.WireBytes = float64(n)
	}
	// rsync sometimes leaves the top directory's mtime a fraction of a
	// second off (it sets it before the last files land in it): not what
	// this comparison is about, so it is copied over before comparing.
	if st, err := os.Stat(filepath.Join(src, "src")); err == nil {
		os.Chtimes(filepath.Join(dst, "src"), st.ModTime(), st.ModTime())
	}
	if diff, err := treecmp.Diff(filepath.Join(src, "src"), filepath.Join(dst, "src"), treecmp.Options{MaxDiffs: 3}); err != nil || diff != "" {
		r.Verify = fmt.Sprintf("differs: %v %s", err, diff)
	}
	return r, nil
}

var lsyncdStartedRE = regexp.MustCompile(`Startup of .* finished`)

// benchLsyncd extracts the tarball into a directory lsyncd watches
// (delay=0, default.rsync to the daemon) and times until the copy is
// identical.
func (b *bench) benchLsyncd(ctx context.Context, round int) (result, error) {
	r := result{Config: "lsyncd", Workload: "untar", Round: round, WireBytes: -1}
	work := filepath.Join(b.root, fmt.Sprintf("lsyncd.r%d", round))
	src, dst := filepath.Join(work, "src"), filepath.Join(work, "dst")
	for _, d := range []string{src, dst} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return r, err
		}
	}
	defer os.RemoveAll(work)
	d, url, err := b.rsyncDaemon(work, dst)
	if err != nil {
		return r, err
	}
	defer d.stop(10 * time.Second)
	conf := filepath.Join(work, "lsyncd.lua")
	text := fmt.Sprintf(`settings { nodaemon = true, insist = true, maxProcesses = 1 }
sync { default.rsync, source = %q, target = %q, delay = 0,
       rsync = { archive = true, hard_links = true, xattrs = true } }
`, src, url)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return r, err
	}
	l, err := startProc("lsyncd", filepath.Join(work, "lsyncd.log"), "lsyncd", "-log", "all", conf)
	if err != nil {
		return r, err
	}
	defer l.stop(10 * time.Second)
	if _, err := l.waitLog(lsyncdStartedRE, 30*time.Second); err != nil {
		return r, err
	}
	start := time.Now()
	if _, err := run(ctx, src, "tar", "-xf", b.sz.tarball); err != nil {
		return r, err
	}
	r.MasterSec = time.Since(start).Seconds()
	// The extracted tree (tar's top directory), not the module's root,
	// whose mtime rsync does not carry.
	var last string
	err = waitFor(120*time.Second, func() (bool, error) {
		diff, err := treecmp.Diff(filepath.Join(src, "src"), filepath.Join(dst, "src"), treecmp.Options{MaxDiffs: 3})
		last = diff
		return err == nil && diff == "", nil
	})
	if err != nil {
		return r, fmt.Errorf("the copy was never identical: %s", firstLine(last))
	}
	r.ReplSec = time.Since(start).Seconds()
	return r, nil
}

// havePeers reports whether rsync and lsyncd can run, installing them
// from Debian's packages if they are missing.
func havePeers(ctx context.Context) string {
	missing := []string{}
	for _, p := range []string{"rsync", "lsyncd"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	if _, err := exec.LookPath("apt-get"); err == nil {
		fmt.Fprintf(os.Stderr, "tdfs-bench: installing %s (apt-get)\n", strings.Join(missing, " "))
		cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(cctx, "apt-get", append([]string{"install", "-y", "-q"}, missing...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Sprintf("%s not installed (apt-get: %v: %s)", strings.Join(missing, ", "), err, tail(out))
		}
		return ""
	}
	return strings.Join(missing, ", ") + " not installed"
}
