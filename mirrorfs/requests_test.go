package mirrorfs

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// tarOfGoSrc writes a tar of $GOROOT/src/net (a few hundred small files)
// into dir and returns its path and the number of entries.
func tarOfGoSrc(t *testing.T, dir string) (string, int) {
	t.Helper()
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Skipf("go env GOROOT: %v", err)
	}
	src := filepath.Join(strings.TrimSpace(string(goroot)), "src", "net")
	if _, err := os.Stat(src); err != nil {
		t.Skipf("no Go source tree to tar: %v", err)
	}
	tarball := filepath.Join(dir, "net.tar")
	if out, err := exec.Command("tar", "-C", filepath.Dir(src), "-cf", tarball, "net").CombinedOutput(); err != nil {
		t.Fatalf("tar -c: %v\n%s", err, out)
	}
	out, err := exec.Command("tar", "-tf", tarball).Output()
	if err != nil {
		t.Fatalf("tar -t: %v", err)
	}
	return tarball, strings.Count(string(out), "\n")
}

// untar extracts tarball below dir with a separate process (the test
// process must not do I/O on a mount it serves while it may block).
func untar(t *testing.T, tarball, dir string) {
	t.Helper()
	if out, err := exec.Command("tar", "-C", dir, "-xf", tarball).CombinedOutput(); err != nil {
		t.Fatalf("tar -x into %s: %v\n%s", dir, err, out)
	}
}

// formatCounts renders per-entry request counts of bare and mirror, one
// opcode a line.
func formatCounts(entries int, bare, mirror map[string]uint64) string {
	keys := slices.Sorted(maps.Keys(bare))
	for k := range mirror {
		if _, ok := bare[k]; !ok {
			keys = append(keys, k)
		}
	}
	var b strings.Builder
	var tb, tm uint64
	fmt.Fprintf(&b, "%-12s %8s %8s\n", "op/entry", "bare", "mirror")
	for _, k := range keys {
		fmt.Fprintf(&b, "%-12s %8.2f %8.2f\n", k, float64(bare[k])/float64(entries), float64(mirror[k])/float64(entries))
		tb += bare[k]
		tm += mirror[k]
	}
	fmt.Fprintf(&b, "%-12s %8.2f %8.2f\n", "total", float64(tb)/float64(entries), float64(tm)/float64(entries))
	return b.String()
}

func total(m map[string]uint64) uint64 {
	var t uint64
	for _, n := range m {
		t += n
	}
	return t
}

// TestTarRequests extracts the same tar onto a bare go-fuse loopback
// mounted with BareLoopbackOptions and onto a mirror, counts the FUSE
// requests of each, and wants the mirror to need no more than the bare
// loopback (docs/design.md, Performance model). It logs the table.
func TestTarRequests(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	tarball, entries := tarOfGoSrc(t, dir)

	bareBack, bareMnt := filepath.Join(dir, "bareback"), filepath.Join(dir, "baremnt")
	for _, d := range []string{bareBack, bareMnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	srv, counter, err := MountBareLoopback(bareBack, bareMnt, false, false)
	if err != nil {
		t.Fatalf("MountBareLoopback: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount bare loopback: %v", err)
			unix.Unmount(bareMnt, unix.MNT_DETACH)
		}
	})
	before := counter.Counts()
	untar(t, tarball, bareMnt)
	bare := diffCounts(counter.Counts(), before)

	e := newEnv(t, wire.ModeAsync)
	before = e.srv.Requests()
	untar(t, tarball, e.mnt)
	mirror := diffCounts(e.srv.Requests(), before)

	t.Logf("FUSE requests per tar entry (%d entries, tar -xf):\n%s", entries, formatCounts(entries, bare, mirror))
	if total(mirror) > total(bare) {
		t.Errorf("the mirror needed %d requests, the bare loopback %d", total(mirror), total(bare))
	}
}

// diffCounts returns after - before, per opcode.
func diffCounts(after, before map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64)
	for k, n := range after {
		if d := n - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}
