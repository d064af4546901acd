package e2e

// The chaos tests' writer: one goroutine that writes through the master's
// mount, keeps the model of what it did and appends each state to the
// history; it pauses while the master is down.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// fuseSuperMagic is statfs's f_type of a FUSE mount.
const fuseSuperMagic = 0x65735546

// Bounds of the writer's tree.
const (
	cMaxFiles    = 45      // file paths; beyond, the oldest is unlinked
	cMaxPaths    = 60      // hard links included
	cMaxDirs     = 6       // besides the root
	cMaxFileSize = 1 << 20 // appends and overwrites stay below
	cMaxCreate   = 300 << 10
)

// cOp is one op of the writer: one system call on the tree through the
// mount (two for a create with contents, or an open and a write), or a
// sync.
type cOp struct {
	kind        string // create, rewrite, append, overwrite, truncate, rename, link, unlink, mkdir, fsync, fdatasync, syncdir
	path, path2 string
	off         int64 // overwrite; truncate: the new size
	n           int   // bytes written
	key         uint64
}

func (o cOp) String() string {
	switch o.kind {
	case "create", "rewrite", "append":
		return fmt.Sprintf("%s %s %d B", o.kind, o.path, o.n)
	case "overwrite":
		return fmt.Sprintf("overwrite %s %d B at %d", o.path, o.n, o.off)
	case "truncate":
		return fmt.Sprintf("truncate %s to %d", o.path, o.off)
	case "rename", "link":
		return fmt.Sprintf("%s %s -> %s", o.kind, o.path, o.path2)
	case "syncdir":
		return "fsync of the mount's root"
	}
	return o.kind + " " + o.path
}

func (o cOp) isSync() bool { return o.kind == "fsync" || o.kind == "fdatasync" || o.kind == "syncdir" }

// apply returns the model after op o, and for a write that a slave may
// hold partly applied, what that partial state may be.
func (o cOp) apply(seed uint64, m *cModel, born *int) (*cModel, *cPartial) {
	n := m.clone()
	var written *cInode
	var oldLen int
	var oldHash [32]byte
	var old []byte
	switch o.kind {
	case "create", "rewrite":
		ino := n.files[o.path]
		if ino == nil {
			ino = &cInode{nlink: 1}
			n.files[o.path] = ino
			*born++
			n.born[o.path] = *born
		}
		ino.set(genData(seed, o.key, o.n))
		written, oldHash = ino, sumOf(nil)
	case "append":
		ino := n.files[o.path]
		oldLen, oldHash = len(ino.data), ino.hash
		ino.set(append(append([]byte(nil), ino.data...), genData(seed, o.key, o.n)...))
		written = ino
	case "overwrite":
		ino := n.files[o.path]
		old, written = ino.data, ino
		d := append([]byte(nil), ino.data...)
		if end := int(o.off) + o.n; end > len(d) {
			d = append(d, make([]byte, end-len(d))...)
		}
		copy(d[o.off:], genData(seed, o.key, o.n))
		ino.set(d)
	case "truncate":
		ino := n.files[o.path]
		d := append([]byte(nil), ino.data...)
		if int(o.off) <= len(d) {
			d = d[:o.off]
		} else {
			d = append(d, make([]byte, int(o.off)-len(d))...)
		}
		ino.set(d)
	case "rename":
		ino := n.files[o.path]
		if prev, ok := n.files[o.path2]; ok {
			prev.nlink--
		}
		n.files[o.path2] = ino
		n.born[o.path2] = n.born[o.path]
		delete(n.files, o.path)
		delete(n.born, o.path)
	case "link":
		ino := n.files[o.path]
		ino.nlink++
		n.files[o.path2] = ino
		*born++
		n.born[o.path2] = *born
	case "unlink":
		n.files[o.path].nlink--
		delete(n.files, o.path)
		delete(n.born, o.path)
	case "mkdir":
		n.dirs[o.path] = true
	}
	es := n.entries()
	n.digest = digestOf(es)
	if written == nil {
		return n, nil
	}
	p := &cPartial{paths: n.pathsOf(written), rest: n.digest, off: oldLen, oldLen: oldLen, oldHash: oldHash, key: o.key, n: o.n}
	if o.kind == "overwrite" {
		p.off, p.overwrite, p.old = int(o.off), true, old
	}
	for _, e := range es {
		if i := sort.SearchStrings(p.paths, e.path); i < len(p.paths) && p.paths[i] == e.path {
			xorInto(&p.rest, e.h)
		}
	}
	return n, p
}

func sumOf(b []byte) [32]byte {
	var i cInode
	i.set(b)
	return i.hash
}

// exec carries op o out through the mount's root directory fd root. Paths
// are resolved from that fd, never from the mount point's name: once a
// killed master's mount is detached, the name leads to the directory
// underneath, and nothing may be written there.
func (o cOp) exec(seed uint64, root int) error {
	const flags = unix.O_CLOEXEC | unix.O_NOFOLLOW
	write := func(fd int, b []byte, off int64) error {
		var n int
		var err error
		if off < 0 {
			n, err = unix.Write(fd, b)
		} else {
			n, err = unix.Pwrite(fd, b, off)
		}
		if err == nil && n != len(b) {
			err = fmt.Errorf("short write: %d of %d bytes", n, len(b))
		}
		return err
	}
	withFile := func(path string, mode int, f func(fd int) error) error {
		fd, err := unix.Openat(root, path, mode|flags, 0o644)
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		err = f(fd)
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		return err
	}
	switch o.kind {
	case "create", "rewrite":
		// A create makes a new name (O_EXCL); a rewrite, as a shell's
		// redirection does, truncates the file if it exists (the kernel
		// then sends an open with O_TRUNC, not a create).
		mode := unix.O_CREAT | unix.O_EXCL | unix.O_WRONLY
		if o.kind == "rewrite" {
			mode = unix.O_CREAT | unix.O_TRUNC | unix.O_WRONLY
		}
		return withFile(o.path, mode, func(fd int) error {
			if o.n == 0 {
				return nil
			}
			return write(fd, genData(seed, o.key, o.n), 0)
		})
	case "append":
		return withFile(o.path, unix.O_WRONLY|unix.O_APPEND, func(fd int) error {
			return write(fd, genData(seed, o.key, o.n), -1)
		})
	case "overwrite":
		return withFile(o.path, unix.O_WRONLY, func(fd int) error {
			return write(fd, genData(seed, o.key, o.n), o.off)
		})
	case "truncate":
		return withFile(o.path, unix.O_WRONLY, func(fd int) error { return unix.Ftruncate(fd, o.off) })
	case "fsync":
		return withFile(o.path, unix.O_WRONLY, unix.Fsync)
	case "fdatasync":
		return withFile(o.path, unix.O_WRONLY, unix.Fdatasync)
	case "syncdir":
		return unix.Fsync(root)
	case "rename":
		return unix.Renameat(root, o.path, root, o.path2)
	case "link":
		return unix.Linkat(root, o.path, root, o.path2, 0)
	case "unlink":
		return unix.Unlinkat(root, o.path, 0)
	case "mkdir":
		return unix.Mkdirat(root, o.path, 0o755)
	}
	return fmt.Errorf("unknown op %q", o.kind)
}

// cPending is the op that was in flight when the master went down: it
// may or may not have reached the backing dir, or only partly.
type cPending struct {
	k         int
	op        cOp
	pre, post *cModel
	err       error
}

// cWriter writes through the mount from its own goroutine.
type cWriter struct {
	seed    uint64
	rnd     *rand.Rand
	hist    *cHistory
	backing string
	// creates: the reported workload only (create file i with 0-300 KiB,
	// then unlink file i-40, in directory m).
	creates bool
	// pace is the longest pause between two ops (0: none).
	pace time.Duration

	mu       sync.Mutex
	cond     *sync.Cond
	up       bool // the mount may be used
	gen      int  // mounts so far
	mnt      string
	idle     bool // not using the mount, waiting for it
	stopReq  bool
	problems []string // unexpected errors, for the test to report

	done chan struct{}

	// The writer goroutine's own, and the test's while it is idle.
	model   *cModel
	born    int
	names   int
	keys    uint64
	pending *cPending
	// retry is a file an op was writing when the master went down: its
	// contents are uncertain to the application, which writes it again
	// entirely (O_TRUNC) as its next op.
	retry string
	kinds map[string]int

	ops       atomic.Int64 // ops that succeeded
	failed    atomic.Int64 // ops cut short by the master going down
	lastFsync atomic.Int64 // history index of the last sync that returned
}

func newWriter(seed uint64, hist *cHistory, backing string, creates bool, pace time.Duration) *cWriter {
	w := &cWriter{seed: seed, rnd: rand.New(rand.NewPCG(seed, 0x77726974)), hist: hist, backing: backing,
		creates: creates, pace: pace, model: newModel(), kinds: map[string]int{}, done: make(chan struct{})}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// setUp lets the writer use the mount at mnt (a new master's).
func (w *cWriter) setUp(mnt string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.up, w.mnt = true, mnt
	w.gen++
	w.cond.Broadcast()
}

// setDown tells the writer the mount is going away: an op that fails from
// now on may have been cut short.
func (w *cWriter) setDown() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.up = false
	w.cond.Broadcast()
}

// waitIdle waits until the writer no longer uses the mount (after
// setDown). It is false if the writer is still in an op after timeout.
func (w *cWriter) waitIdle(timeout time.Duration) bool {
	timer := time.AfterFunc(timeout, func() {
		w.mu.Lock()
		w.cond.Broadcast()
		w.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	w.mu.Lock()
	defer w.mu.Unlock()
	for !w.idle {
		if time.Now().After(deadline) {
			return false
		}
		w.cond.Wait()
	}
	return true
}

// stop ends the writer; false if it is still in an op after timeout.
func (w *cWriter) stop(timeout time.Duration) bool {
	w.mu.Lock()
	w.stopReq = true
	w.cond.Broadcast()
	w.mu.Unlock()
	select {
	case <-w.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

func (w *cWriter) problem(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.problems) < 20 {
		w.problems = append(w.problems, fmt.Sprintf("+%.2fs ", time.Since(w.hist.start).Seconds())+fmt.Sprintf(format, args...))
	}
}

func (w *cWriter) takeProblems() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.problems
	w.problems = nil
	return p
}

// current says whether the mount of generation gen is still to be used.
func (w *cWriter) current(gen int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.up && w.gen == gen && !w.stopReq
}

func (w *cWriter) run() {
	defer close(w.done)
	for {
		w.mu.Lock()
		w.idle = true
		w.cond.Broadcast()
		for !w.stopReq && !w.up {
			w.cond.Wait()
		}
		if w.stopReq {
			w.mu.Unlock()
			return
		}
		w.idle = false
		gen, mnt := w.gen, w.mnt
		w.mu.Unlock()
		w.session(gen, mnt)
	}
}

// session writes through the mount of generation gen until it goes away.
func (w *cWriter) session(gen int, mnt string) {
	root, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if w.current(gen) {
			w.problem("opening the mount %s: %v", mnt, err)
			w.setDown()
		}
		return
	}
	defer unix.Close(root)
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(root, &sfs); err != nil || sfs.Type != fuseSuperMagic {
		if w.current(gen) {
			w.problem("%s is not the master's FUSE mount (statfs type %x, %v)", mnt, sfs.Type, err)
			w.setDown()
		}
		return
	}
	for w.current(gen) {
		if w.pace > 0 {
			// Pacing keeps the history and the journal small over a long
			// run; nothing waits on it.
			time.Sleep(time.Duration(w.rnd.Int64N(int64(w.pace))))
		}
		w.step(root, gen)
	}
}

// step picks an op, records the state it leads to, and carries it out.
func (w *cWriter) step(root, gen int) {
	op := w.pick()
	pre := w.model
	post, part := op.apply(w.seed, pre, &w.born)
	k := w.hist.add(cEntry{desc: op.String(), digest: post.digest, part: part, paths: post.entries()})
	err := op.exec(w.seed, root)
	if err == nil {
		w.model = post
		w.ops.Add(1)
		w.kinds[op.kind]++
		if op.isSync() {
			w.lastFsync.Store(int64(k))
		}
		return
	}
	if !w.current(gen) {
		// The master is going down: the op may have happened, partly
		// or not at all. The test resolves it against the backing dir
		// before the next master starts.
		w.pending = &cPending{k: k, op: op, pre: pre, post: post, err: err}
		w.model = post
		w.failed.Add(1)
		return
	}
	w.problem("op %d (%s) failed with the master up: %v", k, op, err)
	w.pending = &cPending{k: k, op: op, pre: pre, post: post, err: err}
	w.model = post
	if msg, err := w.resolve("a failed op"); err != nil {
		w.problem("%v", err)
	} else {
		w.problem("%s", msg)
	}
	// Bounded back-off before trying again, so that a broken mount does
	// not fill the history with failures.
	time.Sleep(200 * time.Millisecond)
}

// resolve reads the backing dir (nobody writes it: the writer is idle
// or the caller) and makes it the model: the op in flight when the master
// went down either happened, did not, or happened partly, and the backing
// dir must be one of those. Anything else is an error (the master's
// backing dir is not what its clients did). why says what happened.
func (w *cWriter) resolve(why string) (string, error) {
	s, err := snapTree(w.backing)
	if err != nil {
		return "", fmt.Errorf("reading the backing dir after %s: %w", why, err)
	}
	obs, err := s.model(w.model, &w.born)
	if err != nil {
		return "", fmt.Errorf("the backing dir after %s: %w", why, err)
	}
	p := w.pending
	w.pending = nil
	defer func() { w.model = obs }()
	if p != nil && (p.op.kind == "create" || p.op.kind == "rewrite" || p.op.kind == "append" || p.op.kind == "overwrite") {
		w.retry = p.op.path
	}
	if p == nil {
		if obs.digest != w.model.digest {
			w.hist.add(cEntry{desc: "observed in the backing dir after " + why, digest: obs.digest, paths: obs.entries()})
			return "", fmt.Errorf("after %s with no op in flight, the backing dir differs from the model:\n%s",
				why, strings.Join(diffEntries(w.model.entries(), s), "\n"))
		}
		return "no op in flight: the backing dir is as the model says", nil
	}
	h := w.hist
	h.mu.Lock()
	part := h.entries[p.k].part
	h.mu.Unlock()
	switch {
	case obs.digest == p.post.digest:
		return fmt.Sprintf("op %d (%s), cut short by %s (%v): done", p.k, p.op, why, p.err), nil
	case obs.digest == p.pre.digest:
		h.setVoid(p.k)
		return fmt.Sprintf("op %d (%s), cut short by %s (%v): not done", p.k, p.op, why, p.err), nil
	case part != nil && partialMatch(w.seed, part, s):
		h.add(cEntry{desc: fmt.Sprintf("op %d (%s) partly done before %s", p.k, p.op, why), digest: obs.digest, paths: obs.entries()})
		return fmt.Sprintf("op %d (%s), cut short by %s (%v): partly done", p.k, p.op, why, p.err), nil
	}
	h.add(cEntry{desc: "observed in the backing dir after " + why, digest: obs.digest, paths: obs.entries()})
	return "", fmt.Errorf("op %d (%s) was cut short by %s (%v), and the backing dir is neither the state before it, nor after it, nor between: against the state after it:\n%s",
		p.k, p.op, why, p.err, strings.Join(diffEntries(p.post.entries(), s), "\n"))
}

// pick chooses the next op from the model, with the writer's seeded
// random source.
func (w *cWriter) pick() cOp {
	w.keys++
	key := w.keys
	if w.retry != "" {
		p := w.retry
		w.retry = ""
		if _, ok := w.model.files[p]; ok || w.creates {
			return cOp{kind: "rewrite", path: p, n: w.rnd.IntN(cMaxCreate + 1), key: key}
		}
	}
	if w.creates {
		return w.pickCreates(key)
	}
	m, r := w.model, w.rnd
	files := m.sortedFiles()
	dirs := m.sortedDirs()
	w.names++
	newName := func(prefix string) string {
		name := fmt.Sprintf("%s%05d", prefix, w.names)
		if d := r.IntN(len(dirs) + 1); d < len(dirs) {
			return dirs[d] + "/" + name
		}
		return name
	}
	size := func(max int) int {
		switch r.IntN(3) {
		case 0:
			return r.IntN(4 << 10)
		case 1:
			return r.IntN(64 << 10)
		}
		return min(max, 64<<10+r.IntN(max-64<<10+1))
	}
	anyFile := func() string { return files[r.IntN(len(files))] }
	roll := r.IntN(100)
	switch {
	case len(dirs) == 0 || (roll < 3 && len(dirs) < cMaxDirs):
		return cOp{kind: "mkdir", path: fmt.Sprintf("d%d", w.names)}
	case len(files) < 8 || roll < 30:
		return cOp{kind: "create", path: newName("f"), n: size(cMaxCreate), key: key}
	case len(files) > cMaxFiles || roll < 40:
		p := files[0] // the oldest, as the reported workload unlinks file i-40
		if len(files) <= cMaxFiles {
			p = anyFile()
		}
		return cOp{kind: "unlink", path: p}
	case roll < 50:
		p := anyFile()
		n := size(200 << 10)
		if len(m.files[p].data)+n > cMaxFileSize {
			return cOp{kind: "truncate", path: p, off: int64(r.IntN(len(m.files[p].data) + 1))}
		}
		return cOp{kind: "append", path: p, n: n, key: key}
	case roll < 53:
		return cOp{kind: "rewrite", path: anyFile(), n: size(cMaxCreate), key: key}
	case roll < 60:
		p := anyFile()
		l := len(m.files[p].data)
		if l == 0 {
			return cOp{kind: "append", path: p, n: size(cMaxCreate), key: key}
		}
		off := r.IntN(l)
		// Half are large: 64 KiB or more travel on data streams.
		n := 1 + r.IntN(4<<10)
		if r.IntN(2) == 0 {
			n = 64<<10 + r.IntN(128<<10)
		}
		n = min(n, cMaxFileSize-off)
		return cOp{kind: "overwrite", path: p, off: int64(off), n: n, key: key}
	case roll < 68:
		p := anyFile()
		// Half onto an existing file (another inode: rename between
		// two links of one file is a no-op), half to a new name.
		if r.IntN(2) == 0 {
			var others []string
			for _, q := range files {
				if m.files[q] != m.files[p] {
					others = append(others, q)
				}
			}
			if len(others) > 0 {
				return cOp{kind: "rename", path: p, path2: others[r.IntN(len(others))]}
			}
		}
		return cOp{kind: "rename", path: p, path2: newName("r")}
	case roll < 73 && len(files) < cMaxPaths:
		return cOp{kind: "link", path: anyFile(), path2: newName("l")}
	case roll < 80:
		p := anyFile()
		l := len(m.files[p].data)
		if r.IntN(2) == 0 || l+64<<10 > cMaxFileSize {
			return cOp{kind: "truncate", path: p, off: int64(r.IntN(l + 1))}
		}
		return cOp{kind: "truncate", path: p, off: int64(l + r.IntN(64<<10))}
	case roll < 90:
		switch r.IntN(3) {
		case 0:
			return cOp{kind: "fsync", path: anyFile()}
		case 1:
			return cOp{kind: "fdatasync", path: anyFile()}
		}
		return cOp{kind: "syncdir"}
	}
	return cOp{kind: "create", path: newName("f"), n: size(cMaxCreate), key: key}
}

// pickCreates is the reported workload: create m/i with 0-300 KiB, then
// unlink m/(i-40). Files are created as a shell's redirection does
// (O_CREAT|O_TRUNC); one whose create the master's death cut short is
// written again (pick).
func (w *cWriter) pickCreates(key uint64) cOp {
	if !w.model.dirs["m"] {
		return cOp{kind: "mkdir", path: "m"}
	}
	// names counts creates; an unlink follows each create once 40 exist.
	if old := fmt.Sprintf("m/%06d", w.names-40); w.names > 40 && w.model.files[old] != nil {
		return cOp{kind: "unlink", path: old}
	}
	w.names++
	return cOp{kind: "rewrite", path: fmt.Sprintf("m/%06d", w.names), n: w.rnd.IntN(cMaxCreate + 1), key: key}
}

// kindsString lists the ops done by kind.
func (w *cWriter) kindsString() string {
	ks := make([]string, 0, len(w.kinds))
	for k := range w.kinds {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b bytes.Buffer
	for i, k := range ks {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, w.kinds[k])
	}
	return b.String()
}
