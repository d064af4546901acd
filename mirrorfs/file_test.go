package mirrorfs

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

func TestFileOffersNoPassthroughFd(t *testing.T) {
	var h fs.FileHandle = &file{}
	if _, ok := h.(fs.FilePassthroughFder); ok {
		t.Error("file implements FilePassthroughFder: kernel passthrough would bypass the mirror")
	}
	if _, ok := h.(fs.FileIoctler); ok {
		t.Error("file implements FileIoctler: ioctls would reach the backing file")
	}
}

// writes concatenates the Write ops of handle h in seq order, checking
// they are contiguous from offset 0.
func writes(t *testing.T, recs []rec, h uint64) []byte {
	t.Helper()
	var b []byte
	for _, w := range ofType[*wire.Write](recs) {
		if w.Handle != h {
			continue
		}
		if w.Off != int64(len(b)) {
			t.Fatalf("write at %d, want %d", w.Off, len(b))
		}
		b = append(b, w.Data...)
	}
	return b
}

func TestPwriteAndOpen(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("f", []byte("hello world"))
	mark := e.sink.mark()
	f, err := os.OpenFile(e.m("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("WORLD"), 6); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("!"), 100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.settle()
	recs := e.sink.since(mark)
	o := one[*wire.Open](t, recs)
	if o.Path != "f" || o.Flags != 0 || o.Handle == 0 {
		t.Errorf("open op %+v, want f without flags, with a handle", *o)
	}
	ws := ofType[*wire.Write](recs)
	if len(ws) != 2 || ws[0].Off != 6 || string(ws[0].Data) != "WORLD" || ws[1].Off != 100 || string(ws[1].Data) != "!" ||
		ws[0].Handle != o.Handle || ws[1].Handle != o.Handle {
		t.Fatalf("writes %+v, want WORLD at 6 and ! at 100 through handle %d", ws, o.Handle)
	}
	if ws[1].Mtime != e.mtime("f") {
		t.Errorf("write mtime %+v, backing %+v", ws[1].Mtime, e.mtime("f"))
	}
}

func TestOpenTrunc(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("f", []byte("old contents"))
	mark := e.sink.mark()
	f, err := os.OpenFile(e.m("f"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.settle()
	recs := withoutReleases(e.sink.since(mark))
	o := one[*wire.Open](t, recs)
	// Without FUSE_ATOMIC_O_TRUNC the kernel opens without O_TRUNC and
	// truncates with SETATTR; either way the ops must truncate.
	truncated := o.Flags&syscall.O_TRUNC != 0
	for _, sa := range ofType[*wire.Setattr](recs) {
		if sa.Valid == wire.SetSize && sa.Size == 0 && (sa.Path == "f" || sa.Handle == o.Handle) && sa.Mtime == e.mtime("f") {
			truncated = true
		}
	}
	if !truncated {
		t.Errorf("O_TRUNC open emitted %v without a truncation: %+v", types(recs), recs)
	}
	if fi, err := os.Stat(e.b("f")); err != nil || fi.Size() != 0 {
		t.Errorf("backing size after O_TRUNC: %v", err)
	}
}

func TestMmapWrite(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("f", make([]byte, 8192))
	mark := e.sink.mark()
	f, err := os.OpenFile(e.m("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A page fault on a FUSE mapping blocks its thread outside a syscall:
	// with the daemon in this process a stop-the-world GC could then wait
	// for a thread that waits for the daemon (go-fuse's fs/api.go). So
	// populate the mapping inside mmap(2) (a syscall) and keep the GC off
	// while the mapping is touched; the store into a populated shared page
	// needs no FUSE request.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	if runtime.GOMAXPROCS(0) < 2 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		t.Fatal(err)
	}
	copy(mem[4096:], "mapped")
	if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	if err := unix.Munmap(mem); err != nil {
		t.Fatal(err)
	}
	o := one[*wire.Open](t, e.sink.since(mark))
	var found bool
	for _, w := range ofType[*wire.Write](e.sink.since(mark)) {
		// The kernel writes back whole pages, with pid 0, through a
		// writable handle of the inode.
		if w.Handle == o.Handle && w.Off <= 4096 && int64(len(w.Data)) >= 4096-w.Off+6 &&
			string(w.Data[4096-w.Off:4096-w.Off+6]) == "mapped" {
			found = true
		}
	}
	if !found {
		t.Errorf("msync of a mapped page emitted no write carrying it: %v", types(e.sink.since(mark)))
	}
}

func TestFallocate(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	f, err := os.Create(e.m("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := one[*wire.Create](t, e.sink.all()).Handle
	for _, c := range []struct {
		mode     uint32
		off, len int64
	}{
		{0, 0, 1 << 16},
		{unix.FALLOC_FL_KEEP_SIZE, 1 << 16, 1 << 16},
		{unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, 4096, 8192},
		{unix.FALLOC_FL_ZERO_RANGE, 0, 4096},
	} {
		mark := e.sink.mark()
		if err := unix.Fallocate(int(f.Fd()), c.mode, c.off, c.len); err != nil {
			t.Fatalf("fallocate mode %#x: %v", c.mode, err)
		}
		fa := one[*wire.Fallocate](t, e.sink.since(mark))
		want := wire.Fallocate{Handle: h, Mode: c.mode, Off: c.off, Len: c.len, Mtime: e.mtime("f")}
		if *fa != want {
			t.Errorf("fallocate op %+v, want %+v", *fa, want)
		}
	}
}

func TestFsyncEmitsSync(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	f, err := os.Create(e.m("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := types(e.sink.all()); len(got) != 3 || got[2] != wire.OpSync {
		t.Fatalf("create, write, fsync emitted %v", got)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	d, err := os.Open(e.mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := ofType[*wire.Sync](e.sink.all()); len(got) != 3 {
		t.Errorf("fsync, fdatasync, fsync of a directory emitted %d syncs, want 3", len(got))
	}
}

func TestWriteAfterRename(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	f, err := os.Create(e.m("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(e.m("a"), e.m("b")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("two")); err != nil {
		t.Fatal(err)
	}
	recs := e.sink.all()
	if got := types(recs); len(got) != 4 || got[2] != wire.OpRename {
		t.Fatalf("ops %v, want create, write, rename, write", got)
	}
	h := one[*wire.Create](t, recs).Handle
	if got := writes(t, recs, h); string(got) != "onetwo" {
		t.Errorf("writes through handle %d carry %q", h, got)
	}
}

func TestWriteUnlinkedOpenFile(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	f, err := os.Create(e.m("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := one[*wire.Create](t, e.sink.all()).Handle
	if err := os.Remove(e.m("a")); err != nil {
		t.Fatal(err)
	}
	mark := e.sink.mark()
	if _, err := f.Write([]byte("ghost")); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(3); err != nil {
		t.Fatal(err)
	}
	// Without a handle from the kernel these are path ops on a file
	// that has no path: applied locally, emitted nowhere.
	if err := f.Chmod(0o600); err != nil {
		t.Fatalf("fchmod of an unlinked file: %v", err)
	}
	if err := unix.Fsetxattr(int(f.Fd()), "user.k", []byte("v"), 0); err != nil {
		t.Fatalf("fsetxattr of an unlinked file: %v", err)
	}
	buf := make([]byte, 16)
	if n, err := unix.Fgetxattr(int(f.Fd()), "user.k", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("fgetxattr of an unlinked file: %q, %v", buf[:max(n, 0)], err)
	}
	var sx unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx); err != nil || sx.Size != 3 {
		t.Errorf("statx of an unlinked file: size %d, %v", sx.Size, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		t.Errorf("fstatfs of an unlinked file: %v", err)
	}
	if err := unix.Fremovexattr(int(f.Fd()), "user.k"); err != nil {
		t.Fatalf("fremovexattr of an unlinked file: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Mode&0o7777 != 0o600 || st.Size != 3 {
		t.Errorf("unlinked file after fchmod and ftruncate: mode %#o size %d, %v", st.Mode&0o7777, st.Size, err)
	}
	recs := e.sink.since(mark)
	for _, r := range recs {
		switch o := r.op.(type) {
		case *wire.Write:
			if o.Handle != h || string(o.Data) != "ghost" {
				t.Errorf("write %+v, want ghost through handle %d", *o, h)
			}
		case *wire.Setattr:
			if o.Handle != h || o.Path != "" || o.Valid != wire.SetSize || o.Size != 3 {
				t.Errorf("setattr %+v, want ftruncate through handle %d", *o, h)
			}
		default:
			t.Errorf("op %v on an unlinked file: %+v", r.op.Type(), r.op)
		}
	}
	if got := types(recs); len(got) != 2 {
		t.Errorf("ops %v, want write and setattr through the handle", got)
	}
}

// applySink checks, for every Write it is handed, that the backing file
// holds that write's data at that moment: nothing may reach the file
// between a write's pwrite and its numbering.
type applySink struct {
	fakeSink
	fd   int
	bad  atomic.Int32
	seen atomic.Int32
}

func (s *applySink) Append(seq uint64, op wire.Op) {
	if w, ok := op.(*wire.Write); ok {
		s.seen.Add(1)
		buf := make([]byte, len(w.Data))
		if n, err := syscall.Pread(s.fd, buf, w.Off); err != nil || n != len(buf) || !bytes.Equal(buf, w.Data) {
			s.bad.Add(1)
		}
	}
	s.fakeSink.Append(seq, op)
}

// TestWriteLockCoversNumbering writes one range through several handles of
// one node at once. The kernel already serializes buffered writes to one
// inode, so this drives file.write directly.
func TestWriteLockCoversNumbering(t *testing.T) {
	p := t.TempDir() + "/f"
	if err := os.WriteFile(p, make([]byte, 8), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(p, syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	sink := &applySink{fd: fd}
	m := &mirror{log: slog.Default()}
	m.seq.sink = sink
	n := &node{m: m}
	const writers, each = 4, 300
	var wg sync.WaitGroup
	for g := range writers {
		wfd, err := syscall.Open(p, syscall.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(wfd)
		f := &file{fd: wfd, node: n, handle: uint64(g + 1)}
		wg.Go(func() {
			for i := range each {
				data := fmt.Appendf(nil, "%d%07d", g, i)
				if _, err := f.write(data, nil, 0); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	sink.check(t)
	if got := sink.seen.Load(); got != writers*each {
		t.Errorf("sink saw %d writes, want %d", got, writers*each)
	}
	if bad := sink.bad.Load(); bad != 0 {
		t.Errorf("%d writes were numbered after another write had reached the file", bad)
	}
}
