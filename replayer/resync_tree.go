package replayer

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Tree surgery for tolerant mode and resync passes: making a path a
// directory, forcing a file open, removing a subtree. Every step stays
// beneath the root the same way ops do (openat2 with RESOLVE_BENEATH and
// no symlinks or mount crossings, *at calls that never follow the final
// name), and never descends into another filesystem.

// maxRemoveDepth bounds the recursion of removeAll. Trees the master made
// are at most wire.MaxPathLen/2 deep; a deeper one was made by hand.
const maxRemoveDepth = wire.MaxPathLen

// splitPath splits a clean relative path into its parent ("" for the
// root) and final name.
func splitPath(p string) (parent, name string) {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return "", p
}

// joinPath joins a directory path ("" for the root) and a name.
func joinPath(dirPath, name string) string {
	if dirPath == "" {
		return name
	}
	return dirPath + "/" + name
}

// openBeneath opens directory rel (one or more components) beneath the
// directory fd dirfd as an O_PATH fd, with the same confinement as lookup.
func openBeneath(dirfd int, rel string) (int, error) {
	for range maxResolveTries {
		how := resolveHow
		fd, err := unix.Openat2(dirfd, rel, &how)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		return fd, err
	}
	return -1, unix.EAGAIN
}

// ensureDir returns an O_PATH fd on directory rel beneath the root, first
// making each of its components a directory: a missing one is created
// (mode 0700: the resync sets its attributes when it describes it), and a
// non-directory or symlink in the way is removed, never followed. The
// caller closes the dir.
func (r *Replayer) ensureDir(rel string) (dir, error) {
	if err := wire.CheckPath(rel, true); err != nil {
		return dir{}, fmt.Errorf("%w: %w", wire.ErrRefused, err)
	}
	cur := dir{fd: r.rootFd}
	if rel == "" {
		return cur, nil
	}
	for name := range strings.SplitSeq(rel, "/") {
		next, err := r.stepDir(cur, name)
		cur.close()
		if err != nil {
			return dir{}, fmt.Errorf("make %q a directory: %w", rel, err)
		}
		cur = next
	}
	return cur, nil
}

// stepDir opens directory name in d, making it one first if needed.
func (r *Replayer) stepDir(d dir, name string) (dir, error) {
	// At most: remove what is in the way, create, open.
	for range 3 {
		fd, err := openBeneath(d.fd, name)
		switch {
		case err == nil:
			return dir{fd: fd, owned: true}, nil
		case errors.Is(err, unix.ENOENT):
			if err := unix.Mkdirat(d.fd, name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
				return dir{}, fmt.Errorf("mkdir %q: %w", name, err)
			}
		case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
			// A file or a symlink where the master has a directory:
			// unlinking a name never follows it.
			if err := unix.Unlinkat(d.fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
				return dir{}, fmt.Errorf("remove %q in the way of a directory: %w", name, err)
			}
		case errors.Is(err, unix.EXDEV):
			return dir{}, fmt.Errorf("%w: %q crosses a mount: %w", wire.ErrRefused, name, err)
		default:
			return dir{}, fmt.Errorf("open %q: %w", name, err)
		}
	}
	return dir{}, fmt.Errorf("open %q: still not a directory", name)
}

// forceOpen opens regular file p for writing (truncated with trunc),
// creating it (mode 0600) and its parent directories if missing, and
// replacing whatever else has its name or a parent's. It serves tolerant
// Opens and Creates and ResyncHandles, where the master has a regular file
// at p and the handle must exist for the writes that follow.
func (r *Replayer) forceOpen(p string, trunc bool) (int, error) {
	if err := wire.CheckPath(p, false); err != nil {
		return -1, fmt.Errorf("%w: %w", wire.ErrRefused, err)
	}
	parent, name := splitPath(p)
	d, err := r.ensureDir(parent)
	if err != nil {
		return -1, err
	}
	defer d.close()
	st, err := lstatAt(d, name)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG:
		flags := unix.O_WRONLY
		if trunc {
			flags |= unix.O_TRUNC
		}
		return openRegular(d, name, flags)
	case err == nil:
		if err := r.removeAll(d.fd, name, 0); err != nil {
			return -1, fmt.Errorf("remove %s %q in the way of a file: %w", typeName(st.Mode), p, err)
		}
	case !errors.Is(err, unix.ENOENT):
		return -1, err
	}
	fd, err := unix.Openat(d.fd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, fmt.Errorf("create %q: %w", p, err)
	}
	return fd, nil
}

// removeAll removes name in the directory fd dirfd and, if it is a
// directory, everything beneath it. It never follows a symlink (unlinkat
// removes the link; a directory is opened O_NOFOLLOW) and refuses to
// empty another filesystem mounted beneath the root.
func (r *Replayer) removeAll(dirfd int, name string, depth int) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) { // Linux's unlink(2) of a directory
		return fmt.Errorf("unlink %q: %w", name, err)
	}
	if depth >= maxRemoveDepth {
		return fmt.Errorf("remove %q: more than %d directories deep", name, maxRemoveDepth)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %q: %w", name, refuseSymlink(err))
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat %q: %w", name, err)
	}
	if st.Dev != r.rootDev {
		return fmt.Errorf("%w: %q is another filesystem mounted beneath the root", wire.ErrRefused, name)
	}
	names, err := readNames(fd)
	if err != nil {
		return fmt.Errorf("list %q: %w", name, err)
	}
	for _, n := range names {
		if err := r.removeAll(fd, n, depth+1); err != nil {
			return fmt.Errorf("in %q: %w", name, err)
		}
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("rmdir %q: %w", name, err)
	}
	return nil
}

// readNames lists the directory open (readable, at offset 0) as fd,
// without "." and "..". It holds every name in memory: the caller needs
// them all.
func readNames(fd int) ([]string, error) {
	buf := make([]byte, 64<<10)
	var names []string
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

// openReadable opens the directory d (an O_PATH fd) again for reading:
// getdents(2) and fgetxattr(2) refuse O_PATH fds.
func openReadable(d dir) (int, error) {
	fd, err := openNoatime(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("open directory for reading: %w", err)
	}
	return fd, nil
}

// openNoatime opens name in dirfd with flags and, where the process may
// (the file's owner, or CAP_FOWNER), O_NOATIME: a Verify pass reads the
// tree and must not change even its access times.
func openNoatime(dirfd int, name string, flags int) (int, error) {
	fd, err := unix.Openat(dirfd, name, flags|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = unix.Openat(dirfd, name, flags, 0)
	}
	return fd, err
}
