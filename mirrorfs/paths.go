package mirrorfs

import (
	"fmt"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"

	"github.com/tdfs/tdfs/wire"
)

// maxDepth bounds the walk up the tree in relPath. A path of MaxPathLen
// bytes has at most MaxPathLen/2 components; anything deeper cannot be
// mirrored anyway.
const maxDepth = wire.MaxPathLen/2 + 1

// relPath returns the path of in relative to the root, slash-separated,
// "" for the root itself. ok is false when in is not in the tree any more
// (unlinked while open): go-fuse's Inode.Path would return a fake
// ".go-fuse.<rand>/deleted" path for it, which must never reach a slave.
func relPath(in *fs.Inode) (p string, ok bool) {
	var segs []string
	for !in.IsRoot() {
		if len(segs) >= maxDepth {
			return "", false
		}
		name, parent := in.Parent()
		if parent == nil {
			return "", false
		}
		segs = append(segs, name)
		in = parent
	}
	for i, j := 0, len(segs)-1; i < j; i, j = i+1, j-1 {
		segs[i], segs[j] = segs[j], segs[i]
	}
	return strings.Join(segs, "/"), true
}

// childPath joins a directory's relative path and a name.
func childPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// checkPath refuses paths the wire cannot carry before the op is applied,
// so the master never holds what no slave can get: ENAMETOOLONG beyond
// MaxPathLen, EINVAL for anything else the codec would reject.
func checkPath(rel string) error {
	if len(rel) > wire.MaxPathLen {
		return fmt.Errorf("path of %d bytes exceeds the wire limit %d: %w", len(rel), wire.MaxPathLen, syscall.ENAMETOOLONG)
	}
	if err := wire.CheckPath(rel, true); err != nil {
		return fmt.Errorf("path %q: %v: %w", rel, err, syscall.EINVAL)
	}
	return nil
}

// fstat returns the attributes of an open descriptor.
func fstat(fd int) (syscall.Stat_t, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return st, fmt.Errorf("fstat fd %d: %w", fd, err)
	}
	return st, nil
}

// wireTime converts a kernel timestamp.
func wireTime(ts syscall.Timespec) wire.Time {
	return wire.Time{Sec: ts.Sec, Nsec: uint32(ts.Nsec)}
}

// omitTime stands in for a time that could not be read back after an op
// that did succeed: the op is still emitted (never dropped) and the slave
// leaves that time alone.
var omitTime = wire.Time{Omit: true}

// mtimeOf reads back the mtime of the backing path rel after an op. A
// failed stat is logged and yields omitTime: the op itself succeeded and
// must still be emitted.
func (m *mirror) mtimeOf(rel string) wire.Time {
	st, err := m.lstat(rel)
	if err != nil {
		m.log.Warn("mirrorfs: cannot read back mtime after op", "err", err)
		return omitTime
	}
	return wireTime(st.Mtim)
}

// fdMtime is mtimeOf for an open descriptor.
func (m *mirror) fdMtime(fd int) wire.Time {
	st, err := fstat(fd)
	if err != nil {
		m.log.Warn("mirrorfs: cannot read back mtime after op", "err", err)
		return omitTime
	}
	return wireTime(st.Mtim)
}
