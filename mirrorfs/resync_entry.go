package mirrorfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Reading the backing dir: directory entries (stat, symlink target,
// xattrs) under the namespace lock, directories opened without following
// symlinks, and the readdir-only pre-count.

// entryRead is a directory entry read under the lock, before it is
// committed to an item.
type entryRead struct {
	e   wire.Entry
	st  unix.Stat_t
	key fileKey
}

// entryAttr is what an entry carries of st.
func entryAttr(st *unix.Stat_t) wire.Attr {
	a := wire.Attr{Mode: st.Mode & 0o7777, Uid: st.Uid, Gid: st.Gid, Mtime: wire.Time{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)}}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		a.Size = uint64(st.Size)
	}
	return a
}

// readEntry reads one entry of the directory open as dirfd (path dir).
// skip is true for what is not replicated: devices, paths the wire cannot
// carry, and names gone since the listing began.
func (p *pass) readEntry(dirfd int, dir, name string) (r entryRead, skip bool, err error) {
	path := childPath(dir, name)
	if err := checkPath(path); err != nil {
		p.warnOnce("path:"+path, "mirrorfs: resync: path cannot be replicated, skipped", "err", err)
		return r, true, nil
	}
	if err := unix.Fstatat(dirfd, name, &r.st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return r, true, nil
		}
		return r, false, fmt.Errorf("mirrorfs: resync: stat %q: %w", path, err)
	}
	r.key = fileKey{dev: r.st.Dev, ino: r.st.Ino}
	r.e = wire.Entry{Name: name, Attr: entryAttr(&r.st)}
	switch r.st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		r.e.Kind = wire.KindFile
	case unix.S_IFDIR:
		r.e.Kind = wire.KindDir
	case unix.S_IFLNK:
		r.e.Kind = wire.KindSymlink
		buf := make([]byte, wire.MaxPathLen+1)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return r, false, fmt.Errorf("mirrorfs: resync: readlink %q: %w", path, err)
		}
		if n > wire.MaxPathLen {
			p.warnOnce("target:"+path, "mirrorfs: resync: symlink target too long to replicate, skipped", "path", path)
			return r, true, nil
		}
		r.e.Target = string(buf[:n])
	case unix.S_IFIFO:
		r.e.Kind = wire.KindFifo
	case unix.S_IFSOCK:
		r.e.Kind = wire.KindSocket
	case unix.S_IFCHR:
		// Sent whatever the policy: a slave that does not hold devices
		// leaves them out and reports them.
		r.e.Kind, r.e.Rdev = wire.KindCharDev, r.st.Rdev
	case unix.S_IFBLK:
		r.e.Kind, r.e.Rdev = wire.KindBlkDev, r.st.Rdev
	default:
		p.warnOnce("type:"+path, "mirrorfs: resync: unknown file type, skipped", "path", path, "mode", r.st.Mode)
		return r, true, nil
	}
	// The l*xattr calls through /proc/self/fd resolve the directory by
	// its descriptor and do not follow the final name; there is no
	// *xattrat(2) before Linux 6.13.
	proc := "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
	r.e.Xattrs, err = p.xattrs(path, func(b []byte) (int, error) { return unix.Llistxattr(proc, b) },
		func(n string, b []byte) (int, error) { return unix.Lgetxattr(proc, n, b) })
	if err != nil {
		return r, false, err
	}
	return r, false, nil
}

// xattrs reads extended attributes through list and get, sorted by name,
// within the wire's bounds (what exceeds them is logged and left out).
func (p *pass) xattrs(path string, list func([]byte) (int, error), get func(string, []byte) (int, error)) ([]wire.Xattr, error) {
	names, err := xattrNames(path, list)
	if err != nil {
		return nil, err
	}
	var xs []wire.Xattr
	var total int64
	val := make([]byte, wire.MaxXattrValueLen)
	for _, name := range names {
		if len(xs) == wire.MaxResyncXattrs || len(name) > wire.MaxXattrNameLen {
			p.warnOnce("xattrs:"+path, "mirrorfs: resync: xattrs beyond the wire's bounds are not replicated", "path", path)
			continue
		}
		n, err := get(name, val)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if errors.Is(err, unix.ERANGE) || errors.Is(err, unix.E2BIG) {
			p.warnOnce("xattrs:"+path, "mirrorfs: resync: xattr value too large to replicate", "path", path, "name", name)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("mirrorfs: resync: get xattr %q of %q: %w", name, path, err)
		}
		if total+sizeString(name)+sizeVarint+int64(n) > maxEntryXattrs {
			p.warnOnce("xattrs:"+path, "mirrorfs: resync: xattrs beyond the wire's bounds are not replicated", "path", path)
			continue
		}
		total += sizeString(name) + sizeVarint + int64(n)
		xs = append(xs, wire.Xattr{Name: name, Value: slices.Clone(val[:n])})
	}
	return xs, nil
}

// xattrNames lists the names of path's extended attributes through list,
// sorted (none where the filesystem has none: ENOTSUP).
func xattrNames(path string, list func([]byte) (int, error)) ([]string, error) {
	var buf []byte
	for size := 1024; ; size *= 4 {
		buf = make([]byte, size)
		n, err := list(buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<24 {
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("mirrorfs: resync: list xattrs of %q: %w", path, err)
		}
		buf = buf[:n]
		break
	}
	var names []string
	for _, n := range strings.Split(string(buf), "\x00") {
		if n != "" {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, nil
}

// openDir opens the backing directory at rel for reading, refusing
// symlinks anywhere in the path (a directory renamed away and replaced by
// a symlink must not make the walk list what it points to). A path too
// long for one call (up to wire.MaxPathLen bytes) is opened in pieces
// (openLong).
func (p *pass) openDir(rel string) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	var err error
	for try := 0; try < 8; try++ {
		var fd int
		fd, err = noatime(int(how.Flags), func(flags int) (int, error) {
			h := *how
			h.Flags = uint64(flags)
			return openLong(p.rootFd, rel, &h)
		})
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			break
		}
	}
	return -1, fmt.Errorf("mirrorfs: resync: open directory %q: %w", rel, err)
}

// isGone reports whether an error of openDir means the directory is not
// there (any more) as a directory.
func isGone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV)
}

// readNames returns the names in the directory open as fd, unsorted.
func readNames(fd int) ([]string, error) {
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return nil, err
	}
	var names []string
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// precount counts the entries of the tree with readdir alone (no stat, no
// lock), for wire.PassProgress.TotalEntries.
func (p *pass) precount(ctx context.Context) {
	var total uint64
	stack := []string{""}
	for len(stack) > 0 {
		if ctx.Err() != nil {
			return
		}
		dir := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		fd, err := p.openDir(dir)
		if err != nil {
			continue
		}
		f := os.NewFile(uintptr(fd), dir)
		for {
			ents, err := f.ReadDir(1024)
			for _, e := range ents {
				total++
				if e.Type().IsDir() {
					stack = append(stack, childPath(dir, e.Name()))
				}
			}
			if err != nil || len(ents) == 0 {
				break
			}
		}
		f.Close()
	}
	p.total.Store(total)
}
