package e2e

// Randomized workloads with oracles, seeded (CONFORMANCE_SEED) so that a
// failure can be replayed:
//
//   - TestConformanceFsx, after fsx: random writes, truncates, fallocate
//     modes, copy_file_range and mmap writes on a few files, done the same
//     way in a reference dir and through the mount; every result and every
//     read is checked against an in-memory model and the reference.
//   - TestConformanceStress, after fsstress: goroutines doing random
//     namespace and data ops in one shared directory of the mount. Being
//     concurrent, it has no errno-by-errno reference: its oracles are that
//     no errno outside the namespace's own (ENOENT, EEXIST, ...) ever
//     appears, that the mount shows what the backing dir holds, and that
//     the slave converges to a strictly equal tree.
//
// Bounds: CONFORMANCE_FSX_OPS (default 3000) and CONFORMANCE_STRESS_OPS
// (default 3000, shared by the goroutines), and CONFORMANCE_TIME (default
// 20s) for each test's workload.

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// confSeed returns the seed of a randomized test: CONFORMANCE_SEED, or a
// new one, logged either way.
func confSeed(t *testing.T) uint64 {
	t.Helper()
	if s := os.Getenv("CONFORMANCE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("CONFORMANCE_SEED=%q: %v", s, err)
		}
		t.Logf("CONFORMANCE_SEED=%d (from the environment)", v)
		return v
	}
	v := uint64(time.Now().UnixNano())
	t.Logf("CONFORMANCE_SEED=%d (replay with this in the environment)", v)
	return v
}

// confEnvInt returns the integer environment variable name, or def.
func confEnvInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		t.Fatalf("%s=%q: not a count", name, s)
	}
	return v
}

// confTimeLimit is how long each randomized workload may run.
func confTimeLimit(t *testing.T) time.Duration {
	t.Helper()
	s := os.Getenv("CONFORMANCE_TIME")
	if s == "" {
		return 20 * time.Second
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("CONFORMANCE_TIME=%q: %v", s, err)
	}
	return d
}

// fsx bounds: file sizes stay below fsxMaxSize, single transfers below
// fsxMaxLen, so that ops overlap often.
const (
	fsxFiles   = 3
	fsxMaxSize = 1 << 20
	fsxMaxLen  = 64 << 10
)

// fsxFile is one file of the fsx test: its descriptor in each tree and
// its modelled contents.
type fsxFile struct {
	ref, mnt int
	model    []byte
}

// fsxModes are the fallocate modes fsx tries.
var fsxModes = []struct {
	name string
	mode uint32
}{
	{"alloc", 0},
	{"keep-size", unix.FALLOC_FL_KEEP_SIZE},
	{"punch-hole", unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE},
	{"zero-range", unix.FALLOC_FL_ZERO_RANGE},
	{"zero-range-keep-size", unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE},
}

func TestConformanceFsx(t *testing.T) {
	t.Parallel() // its own daemons and dirs
	seed := confSeed(t)
	nops := confEnvInt(t, "CONFORMANCE_FSX_OPS", 3000)
	limit := confTimeLimit(t)
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s})
	refDir := t.TempDir()
	mntDir := filepath.Join(m.mnt, "fsx")
	if err := os.Mkdir(mntDir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := make([]*fsxFile, fsxFiles)
	for i := range files {
		f := &fsxFile{}
		var err1, err2 error
		name := fmt.Sprintf("file%d", i)
		f.ref, err1 = unix.Open(filepath.Join(refDir, name), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		f.mnt, err2 = unix.Open(filepath.Join(mntDir, name), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		files[i] = f
	}
	closeAll := func() {
		for _, f := range files {
			if f != nil && f.ref >= 0 {
				unix.Close(f.ref)
				unix.Close(f.mnt)
				f.ref, f.mnt = -1, -1
			}
		}
	}
	t.Cleanup(closeAll)
	rng := rand.New(rand.NewPCG(seed, 0x667378))
	unsupported := map[string]bool{}
	var history []string // the last ops, for a failure's message
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("fsx (CONFORMANCE_SEED=%d), op %d: %s\nlast ops:\n%s", seed, len(history)-1,
			fmt.Sprintf(format, args...), strings.Join(lastN(history, 15), "\n"))
	}
	// same checks that an op gave the same result in both trees.
	same := func(what string, rn int, rerr error, mn int, merr error) {
		t.Helper()
		if confErrno(rerr) != confErrno(merr) || (rerr == nil && rn != mn) {
			fail("%s: reference gave %d, %s; the mount gave %d, %s", what, rn, confErrno(rerr), mn, confErrno(merr))
		}
	}
	check := func(f *fsxFile, i int, off, n int) {
		t.Helper()
		want := f.model[min(off, len(f.model)):min(off+n, len(f.model))]
		for _, side := range []struct {
			name string
			fd   int
		}{{"reference", f.ref}, {"mount", f.mnt}} {
			buf := make([]byte, n)
			got, err := unix.Pread(side.fd, buf, int64(off))
			if err != nil {
				fail("read of file%d [%d,+%d) on the %s: %v", i, off, n, side.name, err)
			}
			if !bytes.Equal(buf[:got], want) {
				fail("read of file%d [%d,+%d) on the %s: %d bytes differ from the model's %d (first difference at %d)",
					i, off, n, side.name, got, len(want), firstDiff(buf[:got], want)+off)
			}
		}
	}
	checkAll := func() {
		t.Helper()
		for i, f := range files {
			var rs, ms unix.Stat_t
			if err := errors.Join(unix.Fstat(f.ref, &rs), unix.Fstat(f.mnt, &ms)); err != nil {
				fail("fstat file%d: %v", i, err)
			}
			if rs.Size != int64(len(f.model)) || ms.Size != int64(len(f.model)) {
				fail("size of file%d: model %d, reference %d, mount %d", i, len(f.model), rs.Size, ms.Size)
			}
			check(f, i, 0, len(f.model)+1)
		}
	}
	start := time.Now()
	counts := map[string]int{}
	for op := 0; op < nops && time.Since(start) < limit; op++ {
		i := rng.IntN(fsxFiles)
		f := files[i]
		size := len(f.model)
		r := rng.IntN(100)
		var desc string
		switch {
		case r < 30: // write
			off := rng.IntN(fsxMaxSize - fsxMaxLen)
			data := make([]byte, 1+rng.IntN(fsxMaxLen))
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			desc = fmt.Sprintf("pwrite file%d [%d,+%d)", i, off, len(data))
			history = append(history, desc)
			rn, rerr := unix.Pwrite(f.ref, data, int64(off))
			mn, merr := unix.Pwrite(f.mnt, data, int64(off))
			same(desc, rn, rerr, mn, merr)
			if rerr == nil {
				f.model = fsxPut(f.model, off, data[:rn])
			}
		case r < 50: // read
			off, n := rng.IntN(size+1), 1+rng.IntN(fsxMaxLen)
			desc = fmt.Sprintf("pread file%d [%d,+%d)", i, off, n)
			history = append(history, desc)
			check(f, i, off, n)
		case r < 60: // truncate up or down
			n := rng.IntN(fsxMaxSize)
			if rng.IntN(2) == 0 {
				n = rng.IntN(size + 1)
			}
			desc = fmt.Sprintf("ftruncate file%d %d", i, n)
			history = append(history, desc)
			rerr, merr := unix.Ftruncate(f.ref, int64(n)), unix.Ftruncate(f.mnt, int64(n))
			same(desc, 0, rerr, 0, merr)
			if rerr == nil {
				f.model = fsxResize(f.model, n)
			}
		case r < 78: // fallocate
			md := fsxModes[rng.IntN(len(fsxModes))]
			if unsupported[md.name] {
				continue
			}
			off, n := rng.IntN(fsxMaxSize-fsxMaxLen), 1+rng.IntN(fsxMaxLen)
			if rng.IntN(2) == 0 && size > 0 {
				off = rng.IntN(size)
			}
			desc = fmt.Sprintf("fallocate file%d %s [%d,+%d)", i, md.name, off, n)
			history = append(history, desc)
			rerr := unix.Fallocate(f.ref, md.mode, int64(off), int64(n))
			merr := unix.Fallocate(f.mnt, md.mode, int64(off), int64(n))
			if rerr == unix.EOPNOTSUPP {
				t.Logf("the reference does not support fallocate %s: not tried again", md.name)
				unsupported[md.name] = true
			}
			same(desc, 0, rerr, 0, merr)
			if rerr == nil {
				f.model = fsxFallocate(f.model, md.mode, off, n)
			}
		case r < 88: // copy_file_range from another file
			j := (i + 1 + rng.IntN(fsxFiles-1)) % fsxFiles
			src := files[j]
			soff, doff, n := rng.IntN(len(src.model)+1), rng.IntN(fsxMaxSize-fsxMaxLen), 1+rng.IntN(fsxMaxLen)
			desc = fmt.Sprintf("copy_file_range file%d [%d,+%d) to file%d at %d", j, soff, n, i, doff)
			history = append(history, desc)
			rs, rd, ms, md := int64(soff), int64(doff), int64(soff), int64(doff)
			rn, rerr := unix.CopyFileRange(src.ref, &rs, f.ref, &rd, n, 0)
			mn, merr := unix.CopyFileRange(src.mnt, &ms, f.mnt, &md, n, 0)
			same(desc, rn, rerr, mn, merr)
			if rerr == nil {
				if want := min(n, len(src.model)-soff); rn != want {
					fail("%s: copied %d bytes, want %d", desc, rn, want)
				}
				f.model = fsxPut(f.model, doff, src.model[soff:soff+rn])
			}
		case r < 93: // a write through a shared mapping
			if size == 0 {
				continue
			}
			off := rng.IntN(size)
			data := make([]byte, 1+rng.IntN(min(size-off, 16<<10)))
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			desc = fmt.Sprintf("mmap write file%d [%d,+%d)", i, off, len(data))
			history = append(history, desc)
			for _, side := range []struct {
				name string
				fd   int
			}{{"reference", f.ref}, {"mount", f.mnt}} {
				if err := fsxMmapWrite(side.fd, size, off, data); err != nil {
					fail("%s on the %s: %v", desc, side.name, err)
				}
			}
			f.model = fsxPut(f.model, off, data)
		case r < 95:
			desc = fmt.Sprintf("fsync file%d", i)
			history = append(history, desc)
			rerr, merr := unix.Fsync(f.ref), unix.Fsync(f.mnt)
			same(desc, 0, rerr, 0, merr)
		default:
			desc = "check all"
			history = append(history, desc)
			checkAll()
		}
		counts[strings.Fields(desc)[0]]++
		if len(history)%100 == 0 {
			checkAll()
		}
	}
	checkAll()
	t.Logf("fsx: %d ops in %v: %v", len(history), time.Since(start).Round(time.Millisecond), counts)
	closeAll()
	confSettle(t, m, []*slave{s})
}

// fsxPut writes data at off into model, extending it with zeros.
func fsxPut(model []byte, off int, data []byte) []byte {
	if len(data) == 0 {
		return model // nothing written extends nothing
	}
	if end := off + len(data); end > len(model) {
		model = fsxResize(model, end)
	}
	copy(model[off:], data)
	return model
}

// fsxResize truncates or extends model (with zeros) to n bytes.
func fsxResize(model []byte, n int) []byte {
	if n <= len(model) {
		return model[:n]
	}
	return append(model, make([]byte, n-len(model))...)
}

// fsxFallocate applies a fallocate of mode over [off, off+n) to model.
func fsxFallocate(model []byte, mode uint32, off, n int) []byte {
	keep := mode&unix.FALLOC_FL_KEEP_SIZE != 0
	end := off + n
	if !keep && end > len(model) {
		model = fsxResize(model, end)
	}
	if mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) != 0 {
		for j := off; j < min(end, len(model)); j++ {
			model[j] = 0
		}
	}
	return model
}

// fsxMmapWrite writes data at off through a shared mapping of the first
// size bytes of fd, and msyncs it.
func fsxMmapWrite(fd, size, off int, data []byte) error {
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	copy(mem[off:], data)
	err = unix.Msync(mem, unix.MS_SYNC)
	if uerr := unix.Munmap(mem); err == nil {
		err = uerr
	}
	return err
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// stressAllowed are the errnos the stress workload's ops may meet: those
// of a namespace that other goroutines change underfoot. Anything else
// (EIO, ENOTCONN, EFAULT, ESTALE, ENOSYS, EACCES for root but as
// stressAlso says...) is a bug.
var stressAllowed = map[string]bool{
	"0": true, "ENOENT": true, "EEXIST": true, "ENOTDIR": true, "EISDIR": true, "ENOTEMPTY": true,
	"EINVAL": true, "ELOOP": true, "ENXIO": true, "ENODATA": true, "EBUSY": true,
}

// stressAlso are further errnos some ops may meet as root: EPERM for a
// hard link to a directory and for user.* xattrs on anything but files and
// directories; EACCES for O_CREAT of an existing entry, neither a regular
// file nor a fifo, in a sticky directory writable by others, owned by
// neither the caller nor the directory's owner (the VFS refuses that
// whatever fs.protected_* say: may_create_in_sticky).
var stressAlso = map[string]string{"link": "EPERM", "setxattr": "EPERM", "removexattr": "EPERM", "create": "EACCES"}

func TestConformanceStress(t *testing.T) {
	t.Parallel() // its own daemons and dirs
	seed := confSeed(t)
	const workers = 4
	nops := confEnvInt(t, "CONFORMANCE_STRESS_OPS", 3000)
	limit := confTimeLimit(t)
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	m := startMaster(t, k, []*slave{s})
	root := filepath.Join(m.mnt, "stress")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var (
		mu     sync.Mutex
		bad    []string
		counts = map[string]int{}
	)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)+1))
			for i := 0; i < nops/workers && time.Since(start) < limit; i++ {
				op, desc, p, err := stressOp(rng, root)
				e := confErrno(err)
				mu.Lock()
				counts[op+" "+e]++
				mu.Unlock()
				if !stressAllowed[e] && stressAlso[op] != e {
					// What the path looks like just after, through the
					// mount and in the backing dir, to help the diagnosis.
					where := stressWhere(p, root, filepath.Join(m.dir, "stress"))
					mu.Lock()
					bad = append(bad, fmt.Sprintf("worker %d op %d: %s: %s (just after: %s)", w, i, desc, e, where))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var summary []string
	for _, k := range keys {
		summary = append(summary, fmt.Sprintf("%s=%d", k, counts[k]))
	}
	t.Logf("stress: %d workers, %v: %s", workers, time.Since(start).Round(time.Millisecond), strings.Join(summary, " "))
	for _, b := range bad {
		t.Errorf("stress (CONFORMANCE_SEED=%d): unexpected errno: %s", seed, b)
	}
	// The mount shows what the backing dir holds.
	mv, err1 := confSnap(root)
	bv, err2 := confSnap(filepath.Join(m.dir, "stress"))
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	for p, b := range bv {
		if mv[p] != b {
			t.Errorf("stress (CONFORMANCE_SEED=%d): %s: the backing dir holds %s, the mount shows %q", seed, p, b, mv[p])
		}
	}
	for p, v := range mv {
		if _, ok := bv[p]; !ok {
			t.Errorf("stress (CONFORMANCE_SEED=%d): %s: the mount shows %s, not in the backing dir", seed, p, v)
		}
	}
	confSettle(t, m, []*slave{s})
}

// stressWhere describes path p under root and each of its parents up to
// root, through the mount and in the backing dir.
func stressWhere(p, root, backing string) string {
	var out []string
	for q := p; q != root && strings.HasPrefix(q, root+"/"); q = filepath.Dir(q) {
		rel := strings.TrimPrefix(q, root+"/")
		var ms, bs unix.Stat_t
		me, be := unix.Lstat(q, &ms), unix.Lstat(filepath.Join(backing, rel), &bs)
		show := func(st *unix.Stat_t, err error) string {
			if err != nil {
				return confErrno(err)
			}
			return confDescribe(st)
		}
		out = append(out, fmt.Sprintf("%s: mount %s, backing %s", rel, show(&ms, me), show(&bs, be)))
	}
	return strings.Join(out, "; ")
}

// stressPath returns a random path under root: one to three components
// from a small alphabet, so that ops collide often.
func stressPath(rng *rand.Rand, root string) string {
	p := root
	for range 1 + rng.IntN(3) {
		p += "/" + string(rune('a'+rng.IntN(5)))
	}
	return p
}

// stressOp does one random op and returns its name, a description, the
// path it was mainly about and its error.
func stressOp(rng *rand.Rand, root string) (string, string, string, error) {
	p, q := stressPath(rng, root), stressPath(rng, root)
	op, desc, err := stressDo(rng, root, p, q)
	return op, desc, p, err
}

func stressDo(rng *rand.Rand, root, p, q string) (string, string, error) {
	rel := func(s string) string { return strings.TrimPrefix(s, root+"/") }
	ids := []int{0, nobody, 1001}
	switch r := rng.IntN(17); r {
	case 0, 1:
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(fd)
		}
		return "create", "create " + rel(p), err
	case 2, 3:
		return "mkdir", "mkdir " + rel(p), unix.Mkdir(p, 0o755)
	case 4:
		return "mkfifo", "mkfifo " + rel(p), unix.Mkfifo(p, 0o644)
	case 5:
		t := rel(q)
		if rng.IntN(2) == 0 {
			t = "../" + t
		}
		return "symlink", "symlink " + t + " " + rel(p), unix.Symlink(t, p)
	case 6:
		return "link", "link " + rel(p) + " " + rel(q), unix.Link(p, q)
	case 7, 8:
		flags := []uint{0, 0, unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE}[rng.IntN(4)]
		return "rename", fmt.Sprintf("rename %s %s flags=%d", rel(p), rel(q), flags), unix.Renameat2(unix.AT_FDCWD, p, unix.AT_FDCWD, q, flags)
	case 9:
		return "unlink", "unlink " + rel(p), unix.Unlink(p)
	case 10:
		return "rmdir", "rmdir " + rel(p), unix.Rmdir(p)
	case 11:
		mode := uint32(rng.IntN(0o1000)) | 0o700 | uint32(rng.IntN(2))*0o1000
		return "chmod", fmt.Sprintf("chmod %s %04o", rel(p), mode), unix.Chmod(p, mode)
	case 12:
		uid, gid := ids[rng.IntN(3)], ids[rng.IntN(3)]
		return "chown", fmt.Sprintf("lchown %s %d %d", rel(p), uid, gid), unix.Lchown(p, uid, gid)
	case 13:
		name := fmt.Sprintf("user.k%d", rng.IntN(3))
		if rng.IntN(3) == 0 {
			return "removexattr", "lremovexattr " + rel(p) + " " + name, unix.Lremovexattr(p, name)
		}
		val := bytes.Repeat([]byte{byte('a' + rng.IntN(26))}, 1+rng.IntN(64))
		return "setxattr", "lsetxattr " + rel(p) + " " + name, unix.Lsetxattr(p, name, val, 0)
	case 14:
		n := rng.Int64N(64 << 10)
		// truncate(2) follows symlinks; one may lead out of the tree.
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Ftruncate(fd, n)
			unix.Close(fd)
		}
		return "truncate", fmt.Sprintf("truncate %s %d", rel(p), n), err
	default:
		off := rng.Int64N(64 << 10)
		data := bytes.Repeat([]byte{byte('a' + rng.IntN(26))}, 1+rng.IntN(8<<10))
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			_, err = unix.Pwrite(fd, data, off)
			unix.Close(fd)
		}
		return "write", fmt.Sprintf("write %s [%d,+%d)", rel(p), off, len(data)), err
	}
}
