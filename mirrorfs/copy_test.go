package mirrorfs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/replayer"
	"github.com/tdfs/tdfs/wire"
)

// copyPattern is data that neither repeats every page nor is all zeros.
func copyPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + i/4093)
	}
	return b
}

// openFd opens p with flags and closes it when the test ends.
func openFd(t *testing.T, p string, flags int) int {
	t.Helper()
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// copyAll calls copy_file_range until n bytes are copied or it returns 0,
// and returns how many were copied.
func copyAll(t *testing.T, in int, offIn int64, out int, offOut int64, n int) int {
	t.Helper()
	done := 0
	for done < n {
		c, err := unix.CopyFileRange(in, &offIn, out, &offOut, n-done, 0)
		if err != nil {
			t.Fatalf("copy_file_range after %d of %d bytes: %v", done, n, err)
		}
		if c == 0 {
			break
		}
		done += c
	}
	return done
}

// replayCopy applies recs to a fresh replica and returns it.
func replayCopy(t *testing.T, recs []rec) string {
	t.Helper()
	root := t.TempDir()
	rp, err := replayer.New(root, replayer.Options{Chown: os.Geteuid() == 0})
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	for _, r := range recs {
		if err := rp.Apply(r.op); err != nil {
			t.Fatalf("replica: op %d: %v", r.seq, err)
		}
	}
	return root
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Errorf("%s (%d bytes) differs from %s (%d bytes)", a, len(x), b, len(y))
	}
}

// TestCopyFileRangeTravelsAsOp: copy_file_range on the mount copies on
// the backing dir and emits one CopyRange, no Write; a replica that
// applies the ops holds the same bytes.
func TestCopyFileRangeTravelsAsOp(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	data := copyPattern(3<<20 + 123)
	e.write("src", data)
	in := openFd(t, e.m("src"), unix.O_RDONLY)
	out := openFd(t, e.m("dst"), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL)
	mark := e.sink.mark()
	if got := copyAll(t, in, 5, out, 100, len(data)-5); got != len(data)-5 {
		t.Fatalf("copied %d bytes, want %d", got, len(data)-5)
	}
	want := append(make([]byte, 100), data[5:]...)
	if got, err := os.ReadFile(e.b("dst")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("backing dst: %d bytes (%v), not the copy", len(got), err)
	}
	recs := e.sink.since(mark)
	if got := types(recs); len(got) != 1 || got[0] != wire.OpCopyRange {
		t.Fatalf("ops %v, want one copy-range", got)
	}
	creates := ofType[*wire.Create](e.sink.all())
	h := creates[len(creates)-1].Handle // dst's
	cr := recs[0].op.(*wire.CopyRange)
	wantOp := wire.CopyRange{SrcPath: "src", SrcOff: 5, Handle: h, Off: 100, Len: int64(len(data) - 5), Mtime: e.mtime("dst")}
	if *cr != wantOp {
		t.Errorf("op %+v, want %+v", *cr, wantOp)
	}
	sameFile(t, e.b("dst"), filepath.Join(replayCopy(t, e.sink.all()), "dst"))
}

// The source's end bounds the copy: the op records what was copied, and
// nothing is emitted for a copy from past the end.
func TestCopyFileRangeAtEOF(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("src", []byte("0123456789"))
	in := openFd(t, e.m("src"), unix.O_RDONLY)
	out := openFd(t, e.m("dst"), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL)
	mark := e.sink.mark()
	offIn, offOut := int64(10), int64(0)
	if c, err := unix.CopyFileRange(in, &offIn, out, &offOut, 100, 0); c != 0 || err != nil {
		t.Errorf("copy from the end: %d, %v; want 0, nil", c, err)
	}
	offIn = 4
	if c, err := unix.CopyFileRange(in, &offIn, out, &offOut, 100, 0); c != 6 || err != nil {
		t.Fatalf("copy across the end: %d, %v; want 6, nil", c, err)
	}
	recs := e.sink.since(mark)
	if got := types(recs); len(got) != 1 || got[0] != wire.OpCopyRange {
		t.Fatalf("ops %v, want one copy-range", got)
	}
	if cr := recs[0].op.(*wire.CopyRange); cr.SrcOff != 4 || cr.Len != 6 || cr.Off != 0 {
		t.Errorf("op %+v, want 6 bytes from 4 to 0", *cr)
	}
	sameFile(t, e.b("dst"), filepath.Join(replayCopy(t, e.sink.all()), "dst"))
}

// Within one file: disjoint ranges are copied (the source named by its
// path, which is the destination's), overlapping ones refused as
// copy_file_range(2) refuses them; flags are refused.
func TestCopyFileRangeSameFile(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("f", []byte("abcdefghij"))
	fd := openFd(t, e.m("f"), unix.O_RDWR)
	open := one[*wire.Open](t, e.sink.all())
	mark := e.sink.mark()
	offIn, offOut := int64(0), int64(10)
	if c, err := unix.CopyFileRange(fd, &offIn, fd, &offOut, 10, 0); c != 10 || err != nil {
		t.Fatalf("disjoint copy: %d, %v", c, err)
	}
	offIn, offOut = 0, 5
	if _, err := unix.CopyFileRange(fd, &offIn, fd, &offOut, 10, 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("overlapping copy: %v, want EINVAL", err)
	}
	offIn, offOut = 0, 40
	if _, err := unix.CopyFileRange(fd, &offIn, fd, &offOut, 1, 1); !errors.Is(err, unix.EINVAL) {
		t.Errorf("copy with flags 1: %v, want EINVAL", err)
	}
	if got, _ := os.ReadFile(e.b("f")); string(got) != "abcdefghijabcdefghij" {
		t.Errorf("backing f = %q", got)
	}
	recs := e.sink.since(mark)
	if got := ofType[*wire.CopyRange](recs); len(got) != 1 || got[0].SrcPath != "f" || got[0].Handle != open.Handle || got[0].Len != 10 {
		t.Errorf("copy ops %+v, want one of 10 bytes from f into handle %d", got, open.Handle)
	}
	sameFile(t, e.b("f"), filepath.Join(replayCopy(t, e.sink.all()), "f"))
}

// A source renamed, then unlinked while open: it is named by its new
// path, then by a handle with write access of it; with no such handle the
// kernel falls back to writes, which carry the bytes.
func TestCopyFileRangeSourceNames(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("a", []byte("renamed source"))
	// Closed below, not by a cleanup: a second close could hit an fd
	// number go-fuse has reused since (its /dev/null, say).
	w, err := unix.Open(e.m("a"), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	wOpen := true
	t.Cleanup(func() {
		if wOpen {
			unix.Close(w)
		}
	})
	in := openFd(t, e.m("a"), unix.O_RDONLY)
	out := openFd(t, e.m("dst"), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL)
	if err := os.Rename(e.m("a"), e.m("b")); err != nil {
		t.Fatal(err)
	}
	mark := e.sink.mark()
	copyAll(t, in, 0, out, 0, 7)
	if got := ofType[*wire.CopyRange](e.sink.since(mark)); len(got) != 1 || got[0].SrcPath != "b" || got[0].SrcHandle != 0 {
		t.Fatalf("copy ops %+v, want one from path b", got)
	}

	if err := os.Remove(e.m("b")); err != nil {
		t.Fatal(err)
	}
	var wh uint64
	for _, r := range e.sink.all() {
		if o, ok := r.op.(*wire.Open); ok && o.Path == "a" {
			wh = o.Handle
		}
	}
	mark = e.sink.mark()
	copyAll(t, in, 7, out, 7, 7)
	if got := ofType[*wire.CopyRange](e.sink.since(mark)); len(got) != 1 || got[0].SrcHandle != wh || got[0].SrcPath != "" {
		t.Fatalf("copy ops %+v, want one from handle %d", got, wh)
	}
	if got, _ := os.ReadFile(e.b("dst")); string(got) != "renamed source" {
		t.Errorf("backing dst = %q", got)
	}
	sameFile(t, e.b("dst"), filepath.Join(replayCopy(t, e.sink.all()), "dst"))

	// No handle with write access left on the nameless source.
	wOpen = false
	if err := unix.Close(w); err != nil {
		t.Fatal(err)
	}
	e.eventually("release of the writable handle", func() bool {
		for _, r := range e.sink.all() {
			if o, ok := r.op.(*wire.Release); ok && o.Handle == wh {
				return true
			}
		}
		return false
	})
	mark = e.sink.mark()
	copyAll(t, in, 0, out, 14, 7)
	recs := e.sink.since(mark)
	if got := ofType[*wire.CopyRange](recs); len(got) != 0 {
		t.Errorf("copy ops %+v from a source the slaves cannot name", got)
	}
	if got := ofType[*wire.Write](recs); len(got) == 0 {
		t.Errorf("ops %v, want the kernel's fallback writes", types(recs))
	}
	if got, _ := os.ReadFile(e.b("dst")); string(got) != "renamed sourcerenamed" {
		t.Errorf("backing dst = %q", got)
	}
	sameFile(t, e.b("dst"), filepath.Join(replayCopy(t, e.sink.all()), "dst"))
}

// In ModeSync the copy returns only after the slaves have its op.
func TestCopyFileRangeWaitsInSyncMode(t *testing.T) {
	e := newEnv(t, wire.ModeSync)
	e.write("src", []byte("sync"))
	in := openFd(t, e.m("src"), unix.O_RDONLY)
	out := openFd(t, e.m("dst"), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL)
	copyAll(t, in, 0, out, 0, 4)
	var seq uint64
	for _, r := range e.sink.all() {
		if r.op.Type() == wire.OpCopyRange {
			seq = r.seq
		}
	}
	if seq == 0 {
		t.Fatalf("no copy-range op: %v", types(e.sink.all()))
	}
	waited := false
	for _, w := range e.sink.waitCalls() {
		waited = waited || w.seq >= seq
	}
	if !waited {
		t.Errorf("no Wait for seq %d or later: %+v", seq, e.sink.waitCalls())
	}
}

// While a resync pass runs, a slave's source may still differ: the copy
// is refused as an op and the kernel falls back to writes, which carry the
// bytes.
func TestCopyFileRangeDuringResyncBecomesWrites(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("src", []byte("copied bytes"))
	in := openFd(t, e.m("src"), unix.O_RDONLY)
	out := openFd(t, e.m("dst"), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL)
	w := &watch{}
	e.srv.m.ns.Lock()
	passMount{e.srv.m}.watch(w)
	e.srv.m.ns.Unlock()
	t.Cleanup(func() {
		e.srv.m.ns.Lock()
		passMount{e.srv.m}.unwatch(w)
		e.srv.m.ns.Unlock()
	})
	mark := e.sink.mark()
	if got := copyAll(t, in, 0, out, 0, 12); got != 12 {
		t.Fatalf("copied %d bytes", got)
	}
	recs := e.sink.since(mark)
	if got := ofType[*wire.CopyRange](recs); len(got) != 0 {
		t.Errorf("copy ops %+v during a pass", got)
	}
	var data []byte
	for _, o := range ofType[*wire.Write](recs) {
		data = append(data, o.Data...)
	}
	if string(data) != "copied bytes" {
		t.Errorf("writes carry %q; ops %v", data, types(recs))
	}
}

// A destination with a set-id bit falls back to writes, whose path clears
// privileges as the kernel asks.
func TestCopyFileRangeIntoSetidBecomesWrites(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	e.write("src", []byte("copied bytes"))
	in := openFd(t, e.m("src"), unix.O_RDONLY)
	out := openFd(t, e.m("dst"), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL)
	if err := unix.Fchmod(out, 0o4755); err != nil {
		t.Fatal(err)
	}
	mark := e.sink.mark()
	if got := copyAll(t, in, 0, out, 0, 12); got != 12 {
		t.Fatalf("copied %d bytes", got)
	}
	recs := e.sink.since(mark)
	if got := ofType[*wire.CopyRange](recs); len(got) != 0 {
		t.Errorf("copy ops %+v into a setuid file", got)
	}
	if got, _ := os.ReadFile(e.b("dst")); string(got) != "copied bytes" {
		t.Errorf("backing dst = %q", got)
	}
}
