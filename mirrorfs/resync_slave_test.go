package mirrorfs_test

// A small reference slave for the resync tests: it applies the recorded
// ops and items in position order to a slave directory (ops through the
// real replayer, items with the code below, after wire/resync.go), and
// answers the pass's replies. It checks the protocol as it goes.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/replayer"
	"github.com/tdfs/tdfs/wire"
)

// refSlave applies the recorded events to a slave directory: ops through
// replayer, items as wire/resync.go says, answering on replies.
type refSlave struct {
	t       *testing.T
	root    string
	rp      *replayer.Replayer
	rec     *recorder
	replies chan wire.ResyncReply
	rebase  bool // skip ops until the first pass begins (the slave's tree is unknown)
	useReal bool // items through replayer.Resync instead

	mu       sync.Mutex // guards what the test reads while run goes on
	applied  int
	begun    bool
	ended    bool
	opErrs   []string // op failures while the pass ran (tolerated)
	lateErrs []string // op failures outside a rebasing pass (not tolerated)
	itemErrs []string // protocol violations
	counts   map[string]int

	// Pass state, used by run only.
	pass     uint64
	verify   bool
	rebasing bool
	full     bool                // compare every file's content
	names    map[uint64][]string // DirID: names carried so far
	lastOf   map[uint64]string   // DirID: last name carried (order check)
	files    map[uint64]*os.File // FileID: open until ResyncClose
	stale    map[uint64]bool     // FileIDs superseded by a later listing of their inode
	links    map[uint64]*os.File // LinkID: its first entry (O_PATH), followed wherever it goes
	dirIDs   map[uint64]string   // DirID: path
	done     map[uint64]bool     // DirID: Final seen
	fileID   map[uint64]bool     // FileIDs seen
}

func newRefSlave(t *testing.T, root string, rec *recorder, rebase bool) *refSlave {
	rp, err := replayer.New(root, replayer.Options{Chown: os.Geteuid() == 0})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rp.Close() })
	return &refSlave{
		t: t, root: root, rp: rp, rec: rec, rebase: rebase,
		replies: make(chan wire.ResyncReply, 1<<16),
		counts:  map[string]int{},
	}
}

// start applies events on a goroutine until the test ends.
func (s *refSlave) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.t.Cleanup(func() {
		cancel()
		<-done
		s.closeFiles()
		s.closeLinks()
	})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			ev, err := s.rec.next(ctx, i)
			if err != nil {
				return
			}
			if ev.item != nil {
				s.applyItem(ev.item)
				s.rec.release(ev.n)
			} else {
				s.applyOp(ev.op)
			}
			s.mu.Lock()
			s.applied = i + 1
			s.mu.Unlock()
		}
	}()
}

// caughtUp waits until every event recorded so far is applied.
func (s *refSlave) caughtUp() {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := s.rec.len()
		s.mu.Lock()
		a := s.applied
		s.mu.Unlock()
		if a >= n {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("slave applied %d of %d events", a, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (s *refSlave) count(what string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[what]
}

// check fails t for protocol violations and for ops that failed once the
// slave was in sync again.
func (s *refSlave) check(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.itemErrs {
		t.Errorf("slave: %s", e)
	}
	for _, e := range s.lateErrs {
		t.Errorf("slave, after the pass: %s", e)
	}
}

func (s *refSlave) itemErr(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.itemErrs = append(s.itemErrs, fmt.Sprintf(format, args...))
}

func (s *refSlave) applyOp(op wire.Op) {
	s.mu.Lock()
	skip := s.rebase && !s.begun
	tolerant := s.begun && !s.ended && s.rebasing
	s.mu.Unlock()
	if skip {
		return
	}
	err := s.rp.Apply(op)
	if err == nil {
		return
	}
	// A release of a handle the slave never had (opened on a file with no
	// name when the pass began) is fine at any time.
	if _, ok := op.(*wire.Release); ok && errors.Is(err, replayer.ErrUnknownHandle) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if tolerant {
		s.opErrs = append(s.opErrs, err.Error())
	} else {
		s.lateErrs = append(s.lateErrs, err.Error())
	}
}

// reply sends r to the pass through the codec, as the transport would.
func (s *refSlave) reply(r wire.ResyncReply) {
	cp, err := wire.ParseResyncReply(wire.AppendResyncReply(nil, r))
	if err != nil {
		s.itemErr("reply %T does not decode: %v", r, err)
		return
	}
	s.replies <- cp
}

func (s *refSlave) path(rel string) string { return filepath.Join(s.root, rel) }

func (s *refSlave) applyItem(it wire.ResyncItem) {
	s.mu.Lock()
	s.counts[fmt.Sprintf("%T", it)]++
	s.mu.Unlock()
	if s.useReal {
		if b, ok := it.(*wire.ResyncBegin); ok {
			s.mu.Lock()
			s.begun, s.ended, s.rebasing = true, false, b.Rebase
			s.mu.Unlock()
		}
		if err := s.rp.ApplyItem(it, func(r wire.ResyncReply) error { s.reply(r); return nil }); err != nil {
			s.itemErr("%v", err)
		}
		if _, ok := it.(*wire.ResyncEnd); ok {
			s.mu.Lock()
			s.ended = true
			s.mu.Unlock()
		}
		return
	}
	switch it := it.(type) {
	case *wire.ResyncBegin:
		s.mu.Lock()
		if s.begun && !s.ended {
			s.itemErrs = append(s.itemErrs, "ResyncBegin within a pass")
		}
		s.begun, s.ended = true, false
		s.mu.Unlock()
		s.pass, s.verify = it.Pass, it.Verify
		s.names, s.lastOf, s.files, s.stale = map[uint64][]string{}, map[uint64]string{}, map[uint64]*os.File{}, map[uint64]bool{}
		s.closeLinks()
		s.links, s.dirIDs, s.done, s.fileID = map[uint64]*os.File{}, map[uint64]string{}, map[uint64]bool{}, map[uint64]bool{}
		s.rebasing, s.full = it.Rebase, it.Full
	case *wire.ResyncHandles:
		s.applyHandles(it)
	case *wire.ResyncDir:
		s.applyDir(it)
	case *wire.ResyncData:
		s.applyData(it)
	case *wire.ResyncClose:
		s.applyClose(it)
	case *wire.ResyncEnd:
		if it.Pass != s.pass {
			s.itemErr("end of pass %d in pass %d", it.Pass, s.pass)
		}
		if len(s.files) != 0 {
			s.itemErr("end with %d files not closed", len(s.files))
		}
		s.closeFiles()
		s.closeLinks()
		s.mu.Lock()
		s.ended = true
		s.mu.Unlock()
	default:
		s.itemErr("unknown item %T", it)
	}
}

func (s *refSlave) closeLinks() {
	for id, f := range s.links {
		f.Close()
		delete(s.links, id)
	}
}

func (s *refSlave) closeFiles() {
	for id, f := range s.files {
		f.Close()
		delete(s.files, id)
	}
}

// applyHandles opens each path under its handle, making the file and its
// parents if missing. A handle already open is opened again (the pass
// rebinds the handles of files it has just listed).
func (s *refSlave) applyHandles(it *wire.ResyncHandles) {
	if s.verify {
		s.itemErr("ResyncHandles in a verify")
		return
	}
	for _, h := range it.Handles {
		p := s.path(h.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			continue // tolerated: the pass fixes the tree
		}
		if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
			if err == nil {
				os.RemoveAll(p)
			}
			if f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
				f.Close()
			}
		}
		if err := s.rp.Apply(&wire.Open{Path: h.Path, Handle: h.Handle, Mtime: wire.Time{Omit: true}}); err != nil {
			s.mu.Lock()
			s.opErrs = append(s.opErrs, "handles: "+err.Error())
			s.mu.Unlock()
		}
	}
}

// statT is what the slave compares of an entry.
func lstatT(p string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Lstat(p, &st)
	return st, err
}

func kindOf(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return wire.KindFile
	case unix.S_IFDIR:
		return wire.KindDir
	case unix.S_IFLNK:
		return wire.KindSymlink
	case unix.S_IFIFO:
		return wire.KindFifo
	case unix.S_IFSOCK:
		return wire.KindSocket
	}
	return 0
}

func wtime(ts unix.Timespec) wire.Time { return wire.Time{Sec: ts.Sec, Nsec: uint32(ts.Nsec)} }

func (s *refSlave) applyDir(d *wire.ResyncDir) {
	if d.Pass != s.pass {
		s.itemErr("dir of pass %d in pass %d", d.Pass, s.pass)
		return
	}
	if s.done[d.DirID] {
		s.itemErr("dir %d after its Final", d.DirID)
	}
	if p, ok := s.dirIDs[d.DirID]; ok && p != d.Path {
		s.itemErr("dir %d is %q, was %q", d.DirID, d.Path, p)
	}
	s.dirIDs[d.DirID] = d.Path
	if len(d.Entries) > wire.MaxResyncEntries {
		s.itemErr("dir %q: %d entries", d.Path, len(d.Entries))
	}
	for _, e := range d.Entries {
		if last, ok := s.lastOf[d.DirID]; ok && e.Name <= last {
			s.itemErr("dir %q: %q after %q", d.Path, e.Name, last)
		}
		s.lastOf[d.DirID] = e.Name
		s.names[d.DirID] = append(s.names[d.DirID], e.Name)
		if e.FileID != 0 {
			if s.fileID[e.FileID] {
				s.itemErr("FileID %d twice", e.FileID)
			}
			s.fileID[e.FileID] = true
		}
		if err := wire.CheckPath(path.Join(d.Path, e.Name), false); err != nil {
			s.itemErr("entry %q of %q: %v", e.Name, d.Path, err)
		}
	}
	if s.verify {
		s.verifyDir(d)
		return
	}
	dir := s.path(d.Path)
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		os.RemoveAll(dir)
		s.keepParentMtime(dir, func() { os.MkdirAll(dir, 0o700) })
	}
	var diffs []wire.Difference
	for _, e := range d.Entries {
		rel := path.Join(d.Path, e.Name)
		p := s.path(rel)
		st, err := lstatT(p)
		exists := err == nil
		if exists && kindOf(st.Mode) != e.Kind {
			os.RemoveAll(p)
			exists = false
			diffs = append(diffs, wire.Difference{Path: rel, What: "kind"})
		}
		if exists && e.Kind == wire.KindSymlink {
			if t, _ := os.Readlink(p); t != e.Target {
				os.Remove(p)
				exists = false
				diffs = append(diffs, wire.Difference{Path: rel, What: "symlink target"})
			}
		}
		// A later link of a file must be the first one's inode.
		if exists && e.Kind == wire.KindFile && e.LinkID != 0 && e.FileID == 0 {
			var fst unix.Stat_t
			first, ok := s.links[e.LinkID]
			if ok {
				err = unix.Fstat(int(first.Fd()), &fst)
			}
			if !ok || err != nil || fst.Ino != st.Ino || fst.Dev != st.Dev {
				os.Remove(p)
				exists = false
				diffs = append(diffs, wire.Difference{Path: rel, What: "hard link"})
			}
		}
		if !exists {
			diffs = append(diffs, wire.Difference{Path: rel, What: "missing"})
			if err := s.make(p, e); err != nil {
				s.itemErr("make %q: %v", rel, err)
				continue
			}
			st, _ = lstatT(p)
		}
		if e.Kind == wire.KindFile && e.LinkID != 0 && e.FileID != 0 {
			if f, err := os.OpenFile(p, unix.O_PATH|unix.O_NOFOLLOW, 0); err == nil {
				if old := s.links[e.LinkID]; old != nil {
					old.Close()
				}
				s.links[e.LinkID] = f
			}
		}
		s.setMeta(p, e.Kind, e.Attr, e.Xattrs, false)
		if e.Kind == wire.KindFile && e.FileID != 0 {
			if uint64(st.Size) != e.Attr.Size || wtime(st.Mtim) != e.Attr.Mtime || s.full || e.Compare {
				s.sendHashes(p, e.FileID, false)
			}
		}
		// The mtime last: the quick check above compared the slave's own.
		setTime(p, e.Attr.Mtime)
	}
	if d.Final {
		s.done[d.DirID] = true
		carried := s.names[d.DirID]
		ents, _ := os.ReadDir(dir)
		for _, de := range ents {
			if !slices.Contains(carried, de.Name()) {
				os.RemoveAll(filepath.Join(dir, de.Name()))
				diffs = append(diffs, wire.Difference{Path: path.Join(d.Path, de.Name()), What: "extra"})
			}
		}
		s.setMeta(dir, wire.KindDir, d.Attr, d.Xattrs, true)
		setTime(dir, d.Attr.Mtime)
		if len(diffs) > wire.MaxResyncDiffs {
			diffs = diffs[:wire.MaxResyncDiffs]
		}
		s.reply(&wire.ResyncDirDone{Pass: s.pass, DirID: d.DirID, Diffs: diffs})
	} else {
		s.reply(&wire.ResyncDirDone{Pass: s.pass, DirID: d.DirID, Part: true})
	}
}

// keepParentMtime runs fn, which changes p's parent, and puts the
// parent's mtime back.
func (s *refSlave) keepParentMtime(p string, fn func()) {
	st, err := lstatT(filepath.Dir(p))
	fn()
	if err == nil {
		setTime(filepath.Dir(p), wtime(st.Mtim))
	}
}

// make creates an entry (empty, owned and moded later).
func (s *refSlave) make(p string, e wire.Entry) error {
	switch e.Kind {
	case wire.KindFile:
		if e.LinkID != 0 && e.FileID == 0 {
			first, ok := s.links[e.LinkID]
			if !ok {
				return fmt.Errorf("LinkID %d before its first entry", e.LinkID)
			}
			// Wherever the first entry is now (ops may have renamed it).
			return unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", first.Fd()), unix.AT_FDCWD, p, unix.AT_SYMLINK_FOLLOW)
		}
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		return f.Close()
	case wire.KindDir:
		return os.Mkdir(p, 0o700)
	case wire.KindSymlink:
		return os.Symlink(e.Target, p)
	case wire.KindFifo:
		return unix.Mkfifo(p, 0o600)
	case wire.KindSocket:
		return unix.Mknod(p, unix.S_IFSOCK|0o600, 0)
	}
	return fmt.Errorf("kind %d", e.Kind)
}

// setMeta sets owner, mode, symlink target and xattrs.
func (s *refSlave) setMeta(p string, kind uint8, a wire.Attr, xs []wire.Xattr, isDir bool) {
	unix.Lchown(p, int(a.Uid), int(a.Gid))
	if kind != wire.KindSymlink {
		unix.Chmod(p, a.Mode)
	}
	have := listXattrs(p)
	for name := range have {
		if !slices.ContainsFunc(xs, func(x wire.Xattr) bool { return x.Name == name }) {
			unix.Lremovexattr(p, name)
		}
	}
	for _, x := range xs {
		if v, ok := have[x.Name]; !ok || v != string(x.Value) {
			if err := unix.Lsetxattr(p, x.Name, x.Value, 0); err != nil {
				s.itemErr("setxattr %q on %q: %v", x.Name, p, err)
			}
		}
	}
}

func setTime(p string, mt wire.Time) {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Sec: mt.Sec, Nsec: int64(mt.Nsec)}}
	unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func listXattrs(p string) map[string]string {
	out := map[string]string{}
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return out
	}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err == nil {
			out[name] = string(v[:m])
		}
	}
	return out
}

// hashFile returns the block hashes of the file open as f, of its first
// size bytes (the slave's own implementation, independent of mirrorfs's).
func hashFile(f *os.File, size int64) []wire.Hash {
	var hs []wire.Hash
	buf := make([]byte, wire.ResyncBlockSize)
	for off := int64(0); off < size; off += wire.ResyncBlockSize {
		n, _ := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		sum := sha256.Sum256(buf[:n])
		var h wire.Hash
		copy(h[:], sum[:])
		hs = append(hs, h)
	}
	return hs
}

func rootOf(hs []wire.Hash) wire.Hash {
	d := sha256.New()
	for _, h := range hs {
		d.Write(h[:])
	}
	var r wire.Hash
	copy(r[:], d.Sum(nil))
	return r
}

// sendHashes answers ResyncHashes for the file at p, keeping it open
// under id (repair) or sending its root (verify).
func (s *refSlave) sendHashes(p string, id uint64, verify bool) {
	flags := os.O_RDWR
	if verify {
		flags = os.O_RDONLY
	}
	f, err := os.OpenFile(p, flags|syscall.O_NOFOLLOW, 0)
	if err != nil {
		s.itemErr("open %q for hashing: %v", p, err)
		return
	}
	fi, _ := f.Stat()
	size := fi.Size()
	hs := hashFile(f, size)
	s.mu.Lock()
	s.counts["hashes"]++
	s.mu.Unlock()
	if verify {
		f.Close()
		s.reply(&wire.ResyncHashes{Pass: s.pass, FileID: id, Size: uint64(size), Root: rootOf(hs)})
		return
	}
	// A FileID still open on the same inode is superseded
	// (wire.ResyncClose).
	for old, of := range s.files {
		if ofi, err := of.Stat(); err == nil && os.SameFile(ofi, fi) {
			s.stale[old] = true
		}
	}
	s.files[id] = f
	for first := 0; ; first += wire.MaxResyncHashes {
		chunk := hs[first:min(len(hs), first+wire.MaxResyncHashes)]
		more := first+wire.MaxResyncHashes < len(hs)
		s.reply(&wire.ResyncHashes{Pass: s.pass, FileID: id, Size: uint64(size), First: uint64(first), Hashes: chunk, More: more})
		if !more {
			return
		}
	}
}

func (s *refSlave) applyData(d *wire.ResyncData) {
	f := s.files[d.FileID]
	if f == nil {
		s.itemErr("data for file %d, not open", d.FileID)
		return
	}
	if s.stale[d.FileID] {
		return
	}
	if len(d.Data) > 0 {
		if int64(len(d.Data)) != d.Len {
			s.itemErr("data of %d bytes, Len %d", len(d.Data), d.Len)
		}
		if _, err := f.WriteAt(d.Data, d.Off); err != nil {
			s.itemErr("write: %v", err)
		}
		return
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, d.Off, d.Len); err != nil {
		s.itemErr("punch: %v", err)
	}
}

func (s *refSlave) applyClose(c *wire.ResyncClose) {
	f := s.files[c.FileID]
	if f == nil {
		s.itemErr("close of file %d, not open", c.FileID)
		return
	}
	delete(s.files, c.FileID)
	defer f.Close()
	if s.stale[c.FileID] || c.Mtime.Omit {
		delete(s.stale, c.FileID)
		return // superseded, or gone from the master: only forget it
	}
	if err := f.Truncate(int64(c.Size)); err != nil {
		s.itemErr("truncate: %v", err)
	}
	{
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Sec: c.Mtime.Sec, Nsec: int64(c.Mtime.Nsec)}}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", f.Fd()), ts, 0); err != nil {
			s.itemErr("mtime: %v", err)
		}
	}
}

// verifyDir compares, changing nothing.
func (s *refSlave) verifyDir(d *wire.ResyncDir) {
	dir := s.path(d.Path)
	var diffs []wire.Difference
	for _, e := range d.Entries {
		rel := path.Join(d.Path, e.Name)
		p := s.path(rel)
		st, err := lstatT(p)
		if err != nil {
			diffs = append(diffs, wire.Difference{Path: rel, What: "missing"})
			continue
		}
		if kindOf(st.Mode) != e.Kind {
			diffs = append(diffs, wire.Difference{Path: rel, What: "kind"})
			continue
		}
		diffs = append(diffs, metaDiffs(rel, p, st, e.Attr, e.Xattrs, e.Kind)...)
		if e.Kind == wire.KindSymlink {
			if t, _ := os.Readlink(p); t != e.Target {
				diffs = append(diffs, wire.Difference{Path: rel, What: "symlink target"})
			}
		}
		if e.Kind == wire.KindFile && e.FileID != 0 {
			s.sendHashes(p, e.FileID, true)
		}
	}
	if d.Final {
		s.done[d.DirID] = true
		carried := s.names[d.DirID]
		ents, _ := os.ReadDir(dir)
		for _, de := range ents {
			if !slices.Contains(carried, de.Name()) {
				diffs = append(diffs, wire.Difference{Path: path.Join(d.Path, de.Name()), What: "extra"})
			}
		}
		if st, err := lstatT(dir); err == nil {
			diffs = append(diffs, metaDiffs(d.Path, dir, st, d.Attr, d.Xattrs, wire.KindDir)...)
		}
		s.reply(&wire.ResyncDirDone{Pass: s.pass, DirID: d.DirID, Diffs: diffs})
	} else {
		s.reply(&wire.ResyncDirDone{Pass: s.pass, DirID: d.DirID, Part: true})
	}
}

func metaDiffs(rel, p string, st unix.Stat_t, a wire.Attr, xs []wire.Xattr, kind uint8) []wire.Difference {
	var out []wire.Difference
	if kind != wire.KindSymlink && st.Mode&0o7777 != a.Mode {
		out = append(out, wire.Difference{Path: rel, What: fmt.Sprintf("mode %#o != %#o", st.Mode&0o7777, a.Mode)})
	}
	if st.Uid != a.Uid || st.Gid != a.Gid {
		out = append(out, wire.Difference{Path: rel, What: "owner"})
	}
	if wtime(st.Mtim) != a.Mtime {
		out = append(out, wire.Difference{Path: rel, What: "mtime"})
	}
	if kind == wire.KindFile && uint64(st.Size) != a.Size {
		out = append(out, wire.Difference{Path: rel, What: "size"})
	}
	have := listXattrs(p)
	want := map[string]string{}
	for _, x := range xs {
		want[x.Name] = string(x.Value)
	}
	for n, v := range want {
		if have[n] != v {
			out = append(out, wire.Difference{Path: rel, What: "xattr " + n})
		}
	}
	for n := range have {
		if _, ok := want[n]; !ok {
			out = append(out, wire.Difference{Path: rel, What: "xattr " + n})
		}
	}
	return out
}
