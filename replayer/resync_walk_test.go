package replayer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// passMaster plays the master's side of a resync pass in tests: it walks
// a reference tree top-down, builds each ResyncDir item when it sends it
// (so the item describes the reference as of that moment, as a master's
// positioned item does), answers the slave's ResyncHashes with ResyncData
// for the blocks that differ and a ResyncClose, and collects what the
// slave reports.
type passMaster struct {
	t      *testing.T
	ref    string
	r      *Replayer
	pass   uint64
	verify bool
	chunk  int // entries per ResyncDir item
	// between, if set, runs after each ResyncDir item (live ops).
	between func(dirPath string, item int)

	nextID  uint64
	files   map[uint64]string    // FileID -> path in ref
	links   map[[2]uint64]uint64 // (dev, ino) -> LinkID
	pending []wire.ResyncItem    // queued by replies, sent after the item in hand

	hashes     map[uint64][]wire.Hash // FileID -> the slave's block hashes so far
	hashSize   map[uint64]uint64
	roots      map[uint64]wire.Hash // FileID -> the slave's root (the last reply)
	dirsDone   map[uint64]bool
	diffs      []wire.Difference
	replies    int                 // ResyncHashes replies received
	blocksSent map[string][]uint64 // path -> blocks sent as ResyncData (data or hole)
}

func newPassMaster(t *testing.T, ref string, r *Replayer, verify bool, chunk int) *passMaster {
	return &passMaster{
		t: t, ref: ref, r: r, pass: 7, verify: verify, chunk: chunk,
		files: make(map[uint64]string), links: make(map[[2]uint64]uint64),
		hashes: make(map[uint64][]wire.Hash), hashSize: make(map[uint64]uint64),
		roots: make(map[uint64]wire.Hash), dirsDone: make(map[uint64]bool),
		blocksSent: make(map[string][]uint64),
	}
}

func (m *passMaster) id() uint64 {
	m.nextID++
	return m.nextID
}

// send hands the slave one item, then everything its replies called for.
func (m *passMaster) send(it wire.ResyncItem) {
	m.t.Helper()
	queue := []wire.ResyncItem{it}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		if err := m.r.ApplyItem(it, m.onReply); err != nil {
			m.t.Fatalf("slave: %v", err)
		}
		queue = append(queue, m.pending...)
		m.pending = nil
	}
}

// run sends a whole pass: Begin, a walk of the reference, End.
func (m *passMaster) run(rebase bool) {
	m.t.Helper()
	m.send(&wire.ResyncBegin{Pass: m.pass, Rebase: rebase, Verify: m.verify})
	queue := []string{""}
	for len(queue) > 0 {
		dirPath := queue[0]
		queue = queue[1:]
		queue = append(queue, m.sendDir(dirPath)...)
	}
	m.send(&wire.ResyncEnd{Pass: m.pass})
}

// sendDir sends the items of one directory and returns its
// subdirectories.
func (m *passMaster) sendDir(dirPath string) []string {
	m.t.Helper()
	dirID := m.id()
	var subdirs []string
	last := ""
	for item := 0; ; item++ {
		names := m.list(dirPath)
		i := sort.SearchStrings(names, last)
		if i < len(names) && names[i] == last {
			i++
		}
		names = names[i:]
		final := len(names) <= m.chunk
		if !final {
			names = names[:m.chunk]
		}
		it := &wire.ResyncDir{Pass: m.pass, DirID: dirID, Path: dirPath, Final: final}
		for _, n := range names {
			e := m.entry(joinPath(dirPath, n))
			if e.Kind == wire.KindDir {
				subdirs = append(subdirs, joinPath(dirPath, n))
			}
			it.Entries = append(it.Entries, e)
			last = n
		}
		if final {
			var st unix.Stat_t
			if err := unix.Lstat(m.abs(dirPath), &st); err != nil {
				m.t.Fatal(err)
			}
			it.Attr = attrOf(st)
			it.Xattrs = m.xattrs(dirPath)
		}
		m.send(it)
		if final {
			if !m.dirsDone[dirID] {
				m.t.Fatalf("no ResyncDirDone for %q", dirPath)
			}
			return subdirs
		}
		if m.between != nil {
			m.between(dirPath, item)
		}
	}
}

func (m *passMaster) abs(p string) string { return filepath.Join(m.ref, filepath.FromSlash(p)) }

// list returns a directory's names in byte order.
func (m *passMaster) list(dirPath string) []string {
	m.t.Helper()
	des, err := os.ReadDir(m.abs(dirPath))
	if err != nil {
		m.t.Fatal(err)
	}
	names := make([]string, len(des))
	for i, de := range des {
		names[i] = de.Name()
	}
	slices.Sort(names)
	return names
}

func attrOf(st unix.Stat_t) wire.Attr {
	return wire.Attr{Mode: st.Mode & 0o7777, Uid: st.Uid, Gid: st.Gid, Mtime: wireTime(st.Mtim)}
}

func (m *passMaster) entry(p string) wire.Entry {
	m.t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(m.abs(p), &st); err != nil {
		m.t.Fatal(err)
	}
	_, name := splitPath(p)
	e := wire.Entry{Name: name, Attr: attrOf(st), Xattrs: m.xattrs(p)}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Kind = wire.KindFile
		e.Attr.Size = uint64(st.Size)
		if st.Nlink > 1 {
			key := [2]uint64{st.Dev, st.Ino}
			if id, ok := m.links[key]; ok {
				e.LinkID = id
				return e
			}
			e.LinkID = m.id()
			m.links[key] = e.LinkID
		}
		e.FileID = m.id()
		m.files[e.FileID] = p
	case unix.S_IFDIR:
		e.Kind = wire.KindDir
	case unix.S_IFLNK:
		e.Kind = wire.KindSymlink
		target, err := os.Readlink(m.abs(p))
		if err != nil {
			m.t.Fatal(err)
		}
		e.Target = target
	case unix.S_IFIFO:
		e.Kind = wire.KindFifo
	case unix.S_IFSOCK:
		e.Kind = wire.KindSocket
	default:
		m.t.Fatalf("%s: no entry kind for %s", p, typeName(st.Mode))
	}
	return e
}

func (m *passMaster) xattrs(p string) []wire.Xattr {
	m.t.Helper()
	x, err := xattrs(m.abs(p))
	if err != nil {
		m.t.Fatal(err)
	}
	var out []wire.Xattr
	for name, v := range x {
		out = append(out, wire.Xattr{Name: name, Value: []byte(v)})
	}
	slices.SortFunc(out, func(a, b wire.Xattr) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (m *passMaster) onReply(rep wire.ResyncReply) error {
	switch x := rep.(type) {
	case *wire.ResyncHashes:
		m.replies++
		if x.Pass != m.pass {
			return errors.New("reply of another pass")
		}
		if got := uint64(len(m.hashes[x.FileID])); !m.verify && x.First != got {
			m.t.Errorf("file %d: hashes from %d, want %d", x.FileID, x.First, got)
		}
		m.hashes[x.FileID] = append(m.hashes[x.FileID], x.Hashes...)
		m.hashSize[x.FileID] = x.Size
		if x.More {
			return nil
		}
		m.roots[x.FileID] = x.Root
		if !m.verify {
			m.sendContents(x.FileID)
		}
	case *wire.ResyncDirDone:
		m.dirsDone[x.DirID] = true
		m.diffs = append(m.diffs, x.Diffs...)
	default:
		m.t.Errorf("unexpected reply %T", rep)
	}
	return nil
}

// masterHashes hashes a reference file the way the slave does.
func (m *passMaster) masterHashes(p string) (hashes []wire.Hash, size int64) {
	m.t.Helper()
	fd, err := unix.Open(m.abs(p), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		m.t.Fatal(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		m.t.Fatal(err)
	}
	if err := FileHashes(fd, st.Size, func(i uint64, h wire.Hash) error {
		hashes = append(hashes, h)
		return nil
	}); err != nil {
		m.t.Fatal(err)
	}
	return hashes, st.Size
}

// sendContents queues ResyncData for every block of file id whose hash
// differs from the slave's (a hole or zeros as a hole), and its
// ResyncClose.
func (m *passMaster) sendContents(id uint64) {
	m.t.Helper()
	p, ok := m.files[id]
	if !ok {
		m.t.Fatalf("hashes for unknown file id %d", id)
	}
	slave := m.hashes[id]
	if wire.RootHash(slave) != m.roots[id] {
		m.t.Errorf("%s: root hash is not the hash of the block hashes", p)
	}
	want, size := m.masterHashes(p)
	f, err := os.Open(m.abs(p))
	if err != nil {
		m.t.Fatal(err)
	}
	defer f.Close()
	for i, h := range want {
		if i < len(slave) && slave[i] == h {
			continue
		}
		off := int64(i) * wire.ResyncBlockSize
		n := min(wire.ResyncBlockSize, size-off)
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, off); err != nil {
			m.t.Fatal(err)
		}
		d := &wire.ResyncData{Pass: m.pass, FileID: id, Off: off, Len: n}
		if !bytes.Equal(buf, make([]byte, n)) {
			d.Data = buf
		}
		m.pending = append(m.pending, d)
		m.blocksSent[p] = append(m.blocksSent[p], uint64(i))
	}
	var st unix.Stat_t
	if err := unix.Lstat(m.abs(p), &st); err != nil {
		m.t.Fatal(err)
	}
	m.pending = append(m.pending, &wire.ResyncClose{Pass: m.pass, FileID: id, Size: uint64(st.Size), Mtime: wireTime(st.Mtim)})
}

// rootMismatches lists the files whose root hash differs between the
// reference and the slave's replies (Verify).
func (m *passMaster) rootMismatches() []string {
	m.t.Helper()
	var out []string
	for id, root := range m.roots {
		want, _ := m.masterHashes(m.files[id])
		if wire.RootHash(want) != root {
			out = append(out, m.files[id])
		}
	}
	slices.Sort(out)
	return out
}
