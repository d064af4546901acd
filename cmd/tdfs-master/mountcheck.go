package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// refuseLiveMount refuses a mount point that is already a live FUSE mount
// (clearDeadMount has removed a dead one): mounting on top of it would
// hide the other one, and writes through it would land in this master's
// backing dir, reaching none of the other master's slaves.
func refuseLiveMount(mnt string) error {
	fstype, source, ok := topMount(mnt)
	if !ok || !strings.HasPrefix(fstype, "fuse") {
		return nil
	}
	who := fmt.Sprintf("a %s mount of %s", fstype, source)
	if pids := mastersOf(mnt); len(pids) > 0 {
		who += ", served by tdfs-master pid " + strings.Join(pids, ", ")
	}
	return fmt.Errorf("--mount %s is already mounted (%s): stop that master or unmount it first, or choose another mount point", mnt, who)
}

// topMount returns the filesystem type and source of the last mount made
// at mnt (the one visible there), from /proc/self/mountinfo.
func topMount(mnt string) (fstype, source string, ok bool) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		f := strings.Fields(sc.Text())
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+2 >= len(f) {
			continue
		}
		if filepath.Clean(unescapeMountinfo(f[4])) == filepath.Clean(mnt) {
			fstype, source, ok = f[sep+1], unescapeMountinfo(f[sep+2]), true
		}
	}
	return fstype, source, ok
}

// unescapeMountinfo undoes the octal escapes (\040 for a space...) of a
// mountinfo field.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mastersOf lists the pids of tdfs-master processes whose command line
// names mnt (best effort: processes of other users may be hidden).
func mastersOf(mnt string) []string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []string
	self := strconv.Itoa(os.Getpid())
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == self {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "tdfs-master" {
			continue
		}
		for _, a := range args[1:] {
			if a == mnt || strings.HasSuffix(a, "="+mnt) {
				pids = append(pids, e.Name())
				break
			}
		}
	}
	return pids
}
