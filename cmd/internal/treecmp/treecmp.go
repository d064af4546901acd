// Package treecmp compares two directory trees the way tdfs promises a
// replica matches the master's backing dir (DESIGN.md, fidelity): names,
// types, contents, sizes, modes, owners, mtimes (to the nanosecond, files,
// directories and symlinks alike), symlink targets, hard-link groups and
// extended attributes. Access and change times are not compared: reading a
// tree moves the first and no one can set the second.
//
// It is a test helper for the end-to-end tests and the demo.
package treecmp

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
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
	ea, err := scan(a)
	if err != nil {
		return "", err
	}
	eb, err := scan(b)
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
		if !o.IgnoreOwners && (x.st.Uid != y.st.Uid || x.st.Gid != y.st.Gid) {
			add("%s: owner %d:%d vs %d:%d", show(n), x.st.Uid, x.st.Gid, y.st.Uid, y.st.Gid)
		}
		if x.st.Mtim != y.st.Mtim {
			add("%s: mtime %d.%09d vs %d.%09d", show(n), x.st.Mtim.Sec, x.st.Mtim.Nsec, y.st.Mtim.Sec, y.st.Mtim.Nsec)
		}
		if x.st.Mode&unix.S_IFMT == unix.S_IFREG {
			if x.st.Size != y.st.Size {
				add("%s: size %d vs %d", show(n), x.st.Size, y.st.Size)
			} else if same, err := sameContents(filepath.Join(a, n), filepath.Join(b, n)); err != nil {
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

func scan(root string) (map[string]*entry, error) {
	m := make(map[string]*entry)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			rel = ""
		}
		e := &entry{}
		if err := unix.Lstat(p, &e.st); err != nil {
			return fmt.Errorf("lstat %s: %w", p, err)
		}
		if e.st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if e.target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		if e.xattrs, err = xattrs(p); err != nil {
			return err
		}
		m[rel] = e
		return nil
	})
	return m, err
}

func xattrs(p string) (map[string]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if err == unix.ENOTSUP {
			return nil, nil
		}
		return nil, fmt.Errorf("llistxattr %s: %w", p, err)
	}
	var m map[string]string
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("lgetxattr %s %s: %w", p, name, err)
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

func sameContents(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
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
