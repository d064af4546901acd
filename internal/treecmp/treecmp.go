// Package treecmp compares two directory trees the way tdfs promises a
// replica matches the master's backing dir: names, types, contents, sizes,
// modes, owners, device numbers, mtimes (to the nanosecond, files,
// directories and symlinks alike), symlink targets, hard-link groups and
// extended attributes. Access and change times are not compared: reading a
// tree moves the first and no one can set the second.
//
// It walks each tree from directory descriptors (*at calls), so paths of
// any length compare, whatever the length of the roots' own paths.
//
// It is the one definition of "identical" the tests share: the packages'
// tests, the end-to-end tests and the bench (which checks each run's
// replica).
package treecmp

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Options tune a comparison.
type Options struct {
	// IgnoreOwners skips uid/gid (a slave not running as root).
	IgnoreOwners bool
	// MaxDiffs stops after this many differences (0: 50).
	MaxDiffs int
	// Exclude names paths (relative, slash-separated) left out of the
	// comparison in both trees, with everything beneath them: entries a
	// slave leaves out of its replica by its policy.
	Exclude []string
}

type entry struct {
	st     unix.Stat_t
	target string
	xattrs map[string]string
}

// Diff returns a description of every difference between trees a and b, one
// per line, or "" if they match.
func Diff(a, b string, o Options) (string, error) {
	if o.MaxDiffs == 0 {
		o.MaxDiffs = 50
	}
	ea, err := scan(a, o.Exclude)
	if err != nil {
		return "", err
	}
	eb, err := scan(b, o.Exclude)
	if err != nil {
		return "", err
	}
	var diffs []string
	add := func(format string, args ...any) {
		diffs = append(diffs, fmt.Sprintf(format, args...))
	}
	names := make([]string, 0, len(ea)+len(eb))
	for n := range ea {
		names = append(names, n)
	}
	for n := range eb {
		if _, ok := ea[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	linksA, linksB := linkGroups(ea), linkGroups(eb)
	for _, n := range names {
		if len(diffs) >= o.MaxDiffs {
			add("... (stopped after %d differences)", o.MaxDiffs)
			break
		}
		x, okx := ea[n]
		y, oky := eb[n]
		switch {
		case !okx:
			add("%s: only in %s", show(n), b)
			continue
		case !oky:
			add("%s: only in %s", show(n), a)
			continue
		}
		if x.st.Mode&unix.S_IFMT != y.st.Mode&unix.S_IFMT {
			add("%s: type %s vs %s", show(n), typeName(x.st.Mode), typeName(y.st.Mode))
			continue
		}
		if x.st.Mode != y.st.Mode {
			add("%s: mode %o vs %o", show(n), x.st.Mode, y.st.Mode)
		}
		if typ := x.st.Mode & unix.S_IFMT; (typ == unix.S_IFCHR || typ == unix.S_IFBLK) && x.st.Rdev != y.st.Rdev {
			add("%s: device %#x vs %#x", show(n), x.st.Rdev, y.st.Rdev)
		}
		if !o.IgnoreOwners && (x.st.Uid != y.st.Uid || x.st.Gid != y.st.Gid) {
			add("%s: owner %d:%d vs %d:%d", show(n), x.st.Uid, x.st.Gid, y.st.Uid, y.st.Gid)
		}
		if x.st.Mtim != y.st.Mtim {
			add("%s: mtime %d.%09d vs %d.%09d", show(n), x.st.Mtim.Sec, x.st.Mtim.Nsec, y.st.Mtim.Sec, y.st.Mtim.Nsec)
		}
		if x.st.Mode&unix.S_IFMT == unix.S_IFREG {
			if x.st.Size != y.st.Size {
				add("%s: size %d vs %d", show(n), x.st.Size, y.st.Size)
			} else if same, err := sameContents(a, b, n); err != nil {
				return "", err
			} else if !same {
				add("%s: contents differ", show(n))
			}
		}
		if x.target != y.target {
			add("%s: symlink target %q vs %q", show(n), x.target, y.target)
		}
		if !mapsEqual(x.xattrs, y.xattrs) {
			add("%s: xattrs %v vs %v", show(n), x.xattrs, y.xattrs)
		}
		if la, lb := linksA[n], linksB[n]; !slices.Equal(la, lb) {
			add("%s: hard links %v vs %v", show(n), la, lb)
		}
	}
	return strings.Join(diffs, "\n"), nil
}

func show(n string) string {
	if n == "" {
		return "(root)"
	}
	return n
}

func scan(root string, exclude []string) (map[string]*entry, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", root, err)
	}
	defer unix.Close(fd)
	m := make(map[string]*entry)
	e := &entry{}
	if err := unix.Fstat(fd, &e.st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", root, err)
	}
	if e.xattrs, err = xattrs(fmt.Sprintf("/proc/self/fd/%d", fd)); err != nil {
		return nil, fmt.Errorf("%s: %w", root, err)
	}
	m[""] = e
	return m, scanDir(fd, "", root, m, exclude)
}

// scanDir adds the entries beneath the directory open as fd, at rel in
// the tree rooted at root.
func scanDir(fd int, rel, root string, m map[string]*entry, exclude []string) error {
	names, err := readNames(fd)
	if err != nil {
		return fmt.Errorf("list %s/%s: %w", root, rel, err)
	}
	for _, name := range names {
		p := name
		if rel != "" {
			p = rel + "/" + name
		}
		if slices.Contains(exclude, p) {
			continue
		}
		e := &entry{}
		if err := unix.Fstatat(fd, name, &e.st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("lstat %s/%s: %w", root, p, err)
		}
		if e.st.Mode&unix.S_IFMT == unix.S_IFLNK {
			buf := make([]byte, 8192)
			n, err := unix.Readlinkat(fd, name, buf)
			if err != nil {
				return fmt.Errorf("readlink %s/%s: %w", root, p, err)
			}
			e.target = string(buf[:n])
		}
		// The l*xattr calls through /proc/self/fd resolve the directory
		// by its descriptor and do not follow the final name.
		if e.xattrs, err = xattrs(fmt.Sprintf("/proc/self/fd/%d/%s", fd, name)); err != nil {
			return fmt.Errorf("%s/%s: %w", root, p, err)
		}
		m[p] = e
		if e.st.Mode&unix.S_IFMT == unix.S_IFDIR {
			cfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("open %s/%s: %w", root, p, err)
			}
			err = scanDir(cfd, p, root, m, exclude)
			unix.Close(cfd)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// readNames lists the directory open as fd, without "." and "..".
func readNames(fd int) ([]string, error) {
	dup, err := unix.Dup(fd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	return f.Readdirnames(-1)
}

// openRel opens the file at rel beneath root one component at a time, so
// that no path argument grows with the depth.
func openRel(root, rel string) (*os.File, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(rel, "/")
	for i, name := range parts {
		flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if i < len(parts)-1 {
			flags |= unix.O_DIRECTORY
		}
		next, err := unix.Openat(fd, name, flags, 0)
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("open %s/%s: %w", root, rel, err)
		}
		fd = next
	}
	return os.NewFile(uintptr(fd), filepath.Join(root, rel)), nil
}

func xattrs(p string) (map[string]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if err == unix.ENOTSUP {
			return nil, nil
		}
		return nil, fmt.Errorf("llistxattr: %w", err)
	}
	var m map[string]string
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("lgetxattr %s: %w", name, err)
		}
		if m == nil {
			m = make(map[string]string)
		}
		m[name] = string(v[:vn])
	}
	return m, nil
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// linkGroups maps every path of a non-directory with several links to the
// sorted list of all its paths in the tree.
func linkGroups(m map[string]*entry) map[string][]string {
	byIno := make(map[uint64][]string)
	for n, e := range m {
		if e.st.Mode&unix.S_IFMT != unix.S_IFDIR && e.st.Nlink > 1 {
			byIno[e.st.Ino] = append(byIno[e.st.Ino], n)
		}
	}
	g := make(map[string][]string)
	for _, paths := range byIno {
		sort.Strings(paths)
		for _, p := range paths {
			g[p] = paths
		}
	}
	return g
}

func sameContents(a, b, rel string) (bool, error) {
	fa, err := openRel(a, rel)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := openRel(b, rel)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 256<<10), make([]byte, 256<<10)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == io.EOF || eb == io.ErrUnexpectedEOF, nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil {
			return false, eb
		}
	}
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "chardev"
	case unix.S_IFBLK:
		return "blockdev"
	}
	return fmt.Sprintf("type(%o)", mode&unix.S_IFMT)
}
