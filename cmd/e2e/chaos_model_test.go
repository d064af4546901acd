package e2e

// The chaos tests' model of the tree the writer makes, its history (one
// digest per state), and snapshots of real trees to compare with it.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cInode is a regular file of the model. Its data is never changed in
// place: a write makes a new slice, so clones of a model share it.
type cInode struct {
	data  []byte
	hash  [32]byte
	nlink int
}

func (ino *cInode) set(data []byte) {
	ino.data = data
	ino.hash = sha256.Sum256(data)
}

// cModel is the tree as the writer's ops left it: file paths (hard links
// share an inode) and directories. Names, types, sizes, contents and link
// counts are modelled; modes, owners and times are not.
type cModel struct {
	files map[string]*cInode
	dirs  map[string]bool
	// born orders file paths by when they appeared, for "unlink the
	// oldest"; born values are unique.
	born   map[string]int
	digest [32]byte
}

func newModel() *cModel {
	m := &cModel{files: map[string]*cInode{}, dirs: map[string]bool{}, born: map[string]int{}}
	m.digest = digestOf(m.entries())
	return m
}

// clone copies the model; hard links stay hard links in the copy.
func (m *cModel) clone() *cModel {
	c := &cModel{files: make(map[string]*cInode, len(m.files)), dirs: make(map[string]bool, len(m.dirs)),
		born: make(map[string]int, len(m.born)), digest: m.digest}
	inos := map[*cInode]*cInode{}
	for p, ino := range m.files {
		n, ok := inos[ino]
		if !ok {
			cp := *ino
			n = &cp
			inos[ino] = n
		}
		c.files[p] = n
	}
	for d := range m.dirs {
		c.dirs[d] = true
	}
	for p, b := range m.born {
		c.born[p] = b
	}
	return c
}

// pathHash is one entry of a tree: its path and the hash of what is
// compared of it.
type pathHash struct {
	path string
	h    [32]byte
}

// entryHash hashes what the chaos checks compare of one entry: its path,
// its type and, for a regular file, its size, link count and contents.
func entryHash(path string, kind byte, size int64, nlink int, contents [32]byte) [32]byte {
	var b bytes.Buffer
	b.WriteByte(kind)
	b.WriteString(path)
	b.WriteByte(0)
	if kind == 'f' {
		binary.Write(&b, binary.LittleEndian, size)
		binary.Write(&b, binary.LittleEndian, int64(nlink))
		b.Write(contents[:])
	}
	return sha256.Sum256(b.Bytes())
}

// entries lists the model's entries, sorted by path.
func (m *cModel) entries() []pathHash {
	out := make([]pathHash, 0, len(m.files)+len(m.dirs))
	for p, ino := range m.files {
		out = append(out, pathHash{p, entryHash(p, 'f', int64(len(ino.data)), ino.nlink, ino.hash)})
	}
	for d := range m.dirs {
		out = append(out, pathHash{d, entryHash(d, 'd', 0, 0, [32]byte{})})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}

// digestOf is the XOR of the entries' hashes: paths are unique within a
// tree, so it identifies the tree, and one entry can be taken out of it
// again (XOR) to compare the rest.
func digestOf(es []pathHash) [32]byte {
	var d [32]byte
	for _, e := range es {
		xorInto(&d, e.h)
	}
	return d
}

func xorInto(d *[32]byte, h [32]byte) {
	for i := range d {
		d[i] ^= h[i]
	}
}

// pathsOf lists the paths of ino in the model, sorted.
func (m *cModel) pathsOf(ino *cInode) []string {
	var ps []string
	for p, i := range m.files {
		if i == ino {
			ps = append(ps, p)
		}
	}
	sort.Strings(ps)
	return ps
}

// sortedFiles lists the file paths, oldest first.
func (m *cModel) sortedFiles() []string {
	ps := make([]string, 0, len(m.files))
	for p := range m.files {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return m.born[ps[i]] < m.born[ps[j]] })
	return ps
}

func (m *cModel) sortedDirs() []string {
	ds := make([]string, 0, len(m.dirs))
	for d := range m.dirs {
		ds = append(ds, d)
	}
	sort.Strings(ds)
	return ds
}

// genData is the contents written by the op with key key: seeded
// ChaCha8, so that any of them can be made again from (seed, key) to
// check a partly applied write. One key in three gives data that zstd
// compresses (a repeated block), the others incompressible data.
func genData(seed, key uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[0:], seed)
	binary.LittleEndian.PutUint64(s[8:], key)
	c := rand.NewChaCha8(s)
	b := make([]byte, n)
	if key%3 == 0 && n > 1024 {
		c.Read(b[:1024])
		for i := 1024; i < n; i += 1024 {
			copy(b[i:], b[:1024])
		}
		return b
	}
	c.Read(b)
	return b
}

// cPartial describes a write op that a frozen slave may hold partly
// applied: the kernel may split one write(2) into several FUSE writes,
// each an op of its own (it sends what it copied when the application's
// buffer faults). The written file then holds the first j bytes of the
// op's data, genData(key)[:n], at offset off, and its former contents
// elsewhere; every other entry is as in the op's state.
//
// The former contents are kept as oldLen bytes of hash oldHash when the
// write starts at their end (create, O_TRUNC rewrite, append), and as
// the former data itself for an overwrite, for the newest entries only
// (memory): an older overwrite is not recognised partly applied.
type cPartial struct {
	paths     []string // the written file's paths after the op
	rest      [32]byte // digest of the op's state without those paths
	off       int
	oldLen    int
	oldHash   [32]byte
	overwrite bool
	old       []byte // an overwrite's former contents (never written to)
	key       uint64
	n         int
}

// cEntry is one state of the history: the state after op k.
type cEntry struct {
	desc   string
	at     time.Duration // since the test started
	digest [32]byte
	// void: the op failed without effect; nobody may hold this state.
	void bool
	part *cPartial
	// paths is the state's entry list, to explain a mismatch; kept for
	// the newest entries only (memory).
	paths []pathHash
}

// cHistory is the writer's known history: entry k is the tree after the
// writer's first k ops (entry 0 the empty tree). Entries are appended
// before their op is issued, so that a slave never holds a state the
// history lacks yet.
type cHistory struct {
	mu      sync.Mutex
	seed    uint64
	start   time.Time
	entries []cEntry
}

// keepPaths is how many of the newest entries keep their entry lists
// and an overwrite's former contents.
const keepPaths = 3000

func newHistory(seed uint64, start time.Time) *cHistory {
	m := newModel()
	return &cHistory{seed: seed, start: start, entries: []cEntry{{desc: "empty tree", digest: m.digest, paths: m.entries()}}}
}

func (h *cHistory) add(e cEntry) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	e.at = time.Since(h.start)
	h.entries = append(h.entries, e)
	if n := len(h.entries) - keepPaths - 1; n >= 0 {
		h.entries[n].paths = nil
		if p := h.entries[n].part; p != nil {
			p.old = nil
		}
	}
	return len(h.entries) - 1
}

func (h *cHistory) setVoid(k int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entries[k].void = true
}

func (h *cHistory) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.entries)
}

func (h *cHistory) desc(k int) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if k < 0 || k >= len(h.entries) {
		return "-"
	}
	e := h.entries[k]
	return fmt.Sprintf("op %d at +%.2fs: %s", k, e.at.Seconds(), e.desc)
}

// cMatch says which state of the history a tree is.
type cMatch struct {
	k       int  // the entry matched
	partial bool // op k is partly applied: ops up to k-1 are complete
}

// through is the last op the tree holds completely.
func (m cMatch) through() int {
	if m.partial {
		return m.k - 1
	}
	return m.k
}

// match finds the newest state of the history that s is: the state
// after op k, or between the states before and after op k where op k is
// a write partly applied.
func (h *cHistory) match(s *treeSnap) (cMatch, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k := len(h.entries) - 1; k >= 0; k-- {
		e := &h.entries[k]
		if e.void {
			continue
		}
		if e.digest == s.digest {
			return cMatch{k: k}, true
		}
		if e.part != nil && partialMatch(h.seed, e.part, s) {
			return cMatch{k: k, partial: true}, true
		}
	}
	return cMatch{}, false
}

// partialMatch says whether s is the state of p's op with its write
// partly applied.
func partialMatch(seed uint64, p *cPartial, s *treeSnap) bool {
	rest := s.digest
	var x []byte
	for i, path := range p.paths {
		e, ok := s.entries[path]
		if !ok || e.kind != 'f' || e.nlink != len(p.paths) {
			return false
		}
		if i == 0 {
			x = e.data
		} else if !bytes.Equal(e.data, x) {
			return false
		}
		xorInto(&rest, e.h)
	}
	if rest != p.rest {
		return false
	}
	data := genData(seed, p.key, p.n)
	if !p.overwrite {
		// The former contents, then a prefix of the data.
		if len(x) < p.oldLen || len(x) > p.oldLen+p.n || sha256.Sum256(x[:p.oldLen]) != p.oldHash {
			return false
		}
		return bytes.Equal(x[p.oldLen:], data[:len(x)-p.oldLen])
	}
	if p.old == nil || len(x) < p.off {
		return false
	}
	// If the first j bytes of the data were written for some j, they
	// were for the longest prefix of the data x holds at off: where old
	// and data agree, either reads the same.
	j := 0
	for j < p.n && p.off+j < len(x) && x[p.off+j] == data[j] {
		j++
	}
	want := append([]byte(nil), p.old...)
	if end := p.off + j; end > len(want) {
		want = append(want, make([]byte, end-len(want))...)
	}
	copy(want[p.off:], data[:j])
	return bytes.Equal(x, want)
}

// explain describes how s differs from the entries of the history it is
// closest to, to show in a failure.
func (h *cHistory) explain(s *treeSnap) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	best, bestN := -1, 1<<30
	var bestDiff []string
	for k := len(h.entries) - 1; k >= 0; k-- {
		e := &h.entries[k]
		if e.paths == nil {
			break
		}
		if e.void {
			continue
		}
		diff := diffEntries(e.paths, s)
		if len(diff) < bestN {
			best, bestN, bestDiff = k, len(diff), diff
		}
	}
	if best < 0 {
		return "no entry of the history keeps its entry list"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "closest state: after op %d (%s, +%.2fs), %d entries differ:\n", best, h.entries[best].desc,
		h.entries[best].at.Seconds(), bestN)
	for i, d := range bestDiff {
		if i == 20 {
			fmt.Fprintf(&b, "  ... (%d more)\n", len(bestDiff)-20)
			break
		}
		fmt.Fprintf(&b, "  %s\n", d)
	}
	b.WriteString("ops around it:\n")
	for k := max(0, best-5); k < min(len(h.entries), best+6); k++ {
		e := &h.entries[k]
		v := ""
		if e.void {
			v = " (void: failed without effect)"
		}
		fmt.Fprintf(&b, "  op %d at +%.2fs: %s%s\n", k, e.at.Seconds(), e.desc, v)
	}
	return b.String()
}

func diffEntries(want []pathHash, s *treeSnap) []string {
	var out []string
	seen := map[string]bool{}
	for _, w := range want {
		seen[w.path] = true
		e, ok := s.entries[w.path]
		switch {
		case !ok:
			out = append(out, w.path+": missing on the replica")
		case e.h != w.h:
			out = append(out, fmt.Sprintf("%s: differs (replica: %s)", w.path, e))
		}
	}
	for p, e := range s.entries {
		if !seen[p] {
			out = append(out, fmt.Sprintf("%s: extra on the replica (%s)", p, e))
		}
	}
	slices.Sort(out)
	return out
}

// snapEntry is one entry of a real tree.
type snapEntry struct {
	kind  byte // 'f' regular file, 'd' directory, 'o' anything else
	size  int64
	nlink int
	ino   uint64
	data  []byte
	h     [32]byte
	mode  uint32
}

func (e *snapEntry) String() string {
	switch e.kind {
	case 'f':
		return fmt.Sprintf("file of %d bytes, %d links, sha256 %x", e.size, e.nlink, sha256.Sum256(e.data))
	case 'd':
		return "directory"
	}
	return fmt.Sprintf("mode %o", e.mode)
}

// treeSnap is a real tree, read entirely, hashed as the model is.
type treeSnap struct {
	entries map[string]*snapEntry
	digest  [32]byte
}

// snapTree reads the tree under root (its files' contents included).
func snapTree(root string) (*treeSnap, error) {
	s := &treeSnap{entries: map[string]*snapEntry{}}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		e := &snapEntry{nlink: int(st.Nlink), ino: st.Ino, mode: st.Mode, size: st.Size}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			e.kind = 'f'
			if e.data, err = os.ReadFile(p); err != nil {
				return err
			}
			e.size = int64(len(e.data))
			e.h = entryHash(rel, 'f', e.size, e.nlink, sha256.Sum256(e.data))
		case syscall.S_IFDIR:
			e.kind = 'd'
			e.h = entryHash(rel, 'd', 0, 0, [32]byte{})
		default:
			e.kind = 'o'
			e.h = sha256.Sum256(fmt.Appendf(nil, "o%s\x00%o", rel, st.Mode))
		}
		s.entries[rel] = e
		xorInto(&s.digest, e.h)
		return nil
	})
	return s, err
}

// model turns the snapshot into a model (hard links by inode number);
// paths keep their age from old, new ones come after next.
func (s *treeSnap) model(old *cModel, next *int) (*cModel, error) {
	m := newModel()
	inos := map[uint64]*cInode{}
	paths := make([]string, 0, len(s.entries))
	for p := range s.entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		e := s.entries[p]
		switch e.kind {
		case 'd':
			m.dirs[p] = true
		case 'f':
			ino, ok := inos[e.ino]
			if !ok {
				ino = &cInode{}
				ino.set(e.data)
				inos[e.ino] = ino
			}
			ino.nlink++
			m.files[p] = ino
			if b, ok := old.born[p]; ok {
				m.born[p] = b
			} else {
				*next++
				m.born[p] = *next
			}
		default:
			return nil, fmt.Errorf("%s: %s, which the writer never makes", p, e)
		}
	}
	m.digest = digestOf(m.entries())
	return m, nil
}
