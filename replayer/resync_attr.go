package replayer

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Attributes and xattrs of the entries a resync pass describes: compared
// in every pass, set in a repair pass.

// sameTime reports whether a file time equals the master's.
func sameTime(ts unix.Timespec, t wire.Time) bool {
	return ts.Sec == t.Sec && ts.Nsec == int64(t.Nsec)
}

func showTime(ts unix.Timespec) string { return fmt.Sprintf("%d.%09d", ts.Sec, ts.Nsec) }

func showWireTime(t wire.Time) string { return fmt.Sprintf("%d.%09d", t.Sec, t.Nsec) }

// attrJob is one entry's (or directory's) attributes to compare and set.
type attrJob struct {
	path       string      // for the differences
	t          target      // owner, mode, times
	x          xnode       // xattrs
	st         unix.Stat_t // what the slave has now
	fresh      bool        // just made: report failures only, not differences
	hasMode    bool        // false for symlinks, which have no mode on Linux
	quietMtime bool        // the pass itself moved the mtime (a directory it changed)
	want       wire.Attr
	xattrs     []wire.Xattr
}

// fixAttrs compares, and unless verify sets, the owner (when the slave
// applies owners), mode, xattrs and mtime, in the only order that leaves
// all of them as wanted: chown clears setuid/setgid and file
// capabilities, so it goes first and only when the owner differs; the
// mtime goes last.
func (r *Replayer) fixAttrs(j *attrJob, verify bool, dg *diffs) error {
	report := func(format string, args ...any) {
		if !j.fresh {
			dg.add(j.path, format, args...)
		}
	}
	chowned, err := r.fixOwner(j, verify, report)
	if err != nil {
		return err
	}
	if err := fixMode(j, verify, chowned, report); err != nil {
		return err
	}
	if err := syncXattrs(j.x, j.xattrs, verify, func(fail bool, format string, args ...any) {
		if fail {
			dg.add(j.path, format, args...)
		} else {
			report(format, args...)
		}
	}); err != nil {
		return err
	}
	return fixMtime(j, verify, report)
}

// fixOwner compares the owner, when the slave applies owners, and unless
// verify sets it. It reports whether it changed it.
func (r *Replayer) fixOwner(j *attrJob, verify bool, report func(format string, args ...any)) (bool, error) {
	if !r.chown || (j.st.Uid == j.want.Uid && j.st.Gid == j.want.Gid) {
		return false, nil
	}
	report("owner %d:%d (master %d:%d)", j.st.Uid, j.st.Gid, j.want.Uid, j.want.Gid)
	if verify {
		return false, nil
	}
	u, g := owner(j.want.Uid, j.want.Gid)
	if err := r.setOwner(j.t, u, g); err != nil {
		return false, err
	}
	return true, nil
}

// fixMode compares the mode and unless verify sets it, also when a chown
// may have cleared its set-id bits.
func fixMode(j *attrJob, verify, chowned bool, report func(format string, args ...any)) error {
	if !j.hasMode {
		return nil
	}
	have, want := j.st.Mode&0o7777, j.want.Mode&0o7777
	if have != want {
		report("mode %#o (master %#o)", have, want)
	}
	if (have != want || chowned) && !verify {
		return setMode(j.t, j.want.Mode)
	}
	return nil
}

// fixMtime compares the mtime and unless verify sets it: the last change.
func fixMtime(j *attrJob, verify bool, report func(format string, args ...any)) error {
	if j.want.Mtime.Omit || sameTime(j.st.Mtim, j.want.Mtime) {
		return nil
	}
	if !j.quietMtime {
		report("mtime %s (master %s)", showTime(j.st.Mtim), showWireTime(j.want.Mtime))
	}
	if verify {
		return nil
	}
	return setMtime(j.t, j.want.Mtime)
}

// xnode names an object for xattr calls: a readable fd (f* calls), or a
// path whose final component is not followed (l* calls).
type xnode struct {
	fd   int
	path string
}

// entryXnode names name in d through /proc/self/fd: the magic link is an
// intermediate component, the final name is not followed, and this works
// for every file type (fsetxattr refuses the O_PATH fds symlinks, fifos
// and sockets would need; see apply_xattr.go).
func entryXnode(d dir, name string) xnode {
	return xnode{fd: -1, path: fmt.Sprintf("/proc/self/fd/%d/%s", d.fd, name)}
}

func (x xnode) list(b []byte) (int, error) {
	if x.path != "" {
		return unix.Llistxattr(x.path, b)
	}
	return unix.Flistxattr(x.fd, b)
}

func (x xnode) get(name string, b []byte) (int, error) {
	if x.path != "" {
		return unix.Lgetxattr(x.path, name, b)
	}
	return unix.Fgetxattr(x.fd, name, b)
}

func (x xnode) set(name string, v []byte) error {
	if x.path != "" {
		return unix.Lsetxattr(x.path, name, v, 0)
	}
	return unix.Fsetxattr(x.fd, name, v, 0)
}

func (x xnode) remove(name string) error {
	if x.path != "" {
		return unix.Lremovexattr(x.path, name)
	}
	return unix.Fremovexattr(x.fd, name)
}

// readXattrs returns the object's xattrs by name. A filesystem without
// xattrs has none.
func readXattrs(x xnode) (map[string][]byte, error) {
	buf := make([]byte, 64<<10) // XATTR_LIST_MAX
	n, err := x.list(buf)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list xattrs: %w", err)
	}
	m := make(map[string][]byte)
	for _, name := range bytes.Split(buf[:n], []byte{0}) {
		if len(name) == 0 {
			continue
		}
		// Ask the size first: values are up to XATTR_SIZE_MAX, most are
		// tiny. A value that grows in between fails with ERANGE.
		sz, err := x.get(string(name), nil)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get xattr %q: %w", name, err)
		}
		v := make([]byte, sz)
		if sz > 0 {
			if sz, err = x.get(string(name), v); err != nil {
				return nil, fmt.Errorf("get xattr %q: %w", name, err)
			}
		}
		m[string(name)] = v[:sz]
	}
	return m, nil
}

// brokenErr reports whether err means the slave cannot write at all: a
// resync fails on it rather than reporting and going on.
func brokenErr(err error) bool {
	for _, e := range []unix.Errno{unix.EIO, unix.ENOSPC, unix.EDQUOT, unix.EROFS} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// syncXattrs compares the object's xattrs with want (unless verify,
// removing those the master lacks and setting those that differ), and
// reports each difference, and each change the process may not make
// (security.* and trusted.* need privileges, some filesystems refuse some
// namespaces), through report, with fail set for the latter. Only an
// error that means the slave is broken fails it.
func syncXattrs(x xnode, want []wire.Xattr, verify bool, report func(fail bool, format string, args ...any)) error {
	have, err := readXattrs(x)
	if err != nil {
		if brokenErr(err) {
			return err
		}
		report(true, "xattrs not compared: %v", err)
		return nil
	}
	if err := removeExtraXattrs(x, have, want, verify, report); err != nil {
		return err
	}
	return setXattrs(x, have, want, verify, report)
}

// removeExtraXattrs reports, and unless verify removes, the xattrs the
// object has and the master lacks, in name order.
func removeExtraXattrs(x xnode, have map[string][]byte, want []wire.Xattr, verify bool, report func(fail bool, format string, args ...any)) error {
	wanted := make(map[string]struct{}, len(want))
	for _, w := range want {
		wanted[w.Name] = struct{}{}
	}
	extra := make([]string, 0, len(have))
	for name := range have {
		if _, ok := wanted[name]; !ok {
			extra = append(extra, name)
		}
	}
	slices.Sort(extra)
	for _, name := range extra {
		report(false, "xattr %s", name)
		if verify {
			continue
		}
		if err := x.remove(name); err != nil && !errors.Is(err, unix.ENODATA) {
			if brokenErr(err) {
				return fmt.Errorf("remove xattr %q: %w", name, err)
			}
			report(true, "xattr %s not removed: %v", name, err)
		}
	}
	return nil
}

// setXattrs reports, and unless verify sets, the master's xattrs the
// object lacks or holds with another value.
func setXattrs(x xnode, have map[string][]byte, want []wire.Xattr, verify bool, report func(fail bool, format string, args ...any)) error {
	for _, w := range want {
		if v, ok := have[w.Name]; ok && bytes.Equal(v, w.Value) {
			continue
		}
		report(false, "xattr %s", w.Name)
		if verify {
			continue
		}
		if err := x.set(w.Name, w.Value); err != nil {
			if brokenErr(err) {
				return fmt.Errorf("set xattr %q: %w", w.Name, err)
			}
			report(true, "xattr %s not set: %v", w.Name, err)
		}
	}
	return nil
}
