package mirrorfs

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// newEnvOnTmpfs is newEnv over a backing dir that is a tmpfs mounted with
// opts (size=..., nr_inodes=...), to make the backing dir fail.
func newEnvOnTmpfs(t *testing.T, opts string) *env {
	t.Helper()
	requireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	e := &env{t: t, back: filepath.Join(dir, "back"), mnt: filepath.Join(dir, "mnt"), sink: &fakeSink{}}
	for _, d := range []string{e.back, e.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tdfs-test", e.back).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { unix.Unmount(e.back, unix.MNT_DETACH) })
	srv, err := Mount(e.mnt, Options{Backing: e.back, Sink: e.sink, Mode: wire.ModeAsync})
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	e.srv = srv
	e.sink.mu.Lock()
	e.sink.skip = 2 // the run start and the root's attributes
	e.sink.mu.Unlock()
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			unix.Unmount(e.mnt, unix.MNT_DETACH)
			t.Errorf("Unmount: %v", err)
			return
		}
		srv.Wait()
		e.sink.check(t)
	})
	return e
}

// A full backing dir: the application gets ENOSPC, the slaves get the
// bytes that were written (a short write included) and the mtime the
// failed write left, and nothing more.
func TestBackingDirFullWrite(t *testing.T) {
	e := newEnvOnTmpfs(t, "size=1m")
	f, err := os.Create(e.m("big"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	written := 0
	var werr error
	for range 64 {
		var n int
		n, werr = f.Write(chunk)
		written += n
		if werr != nil {
			break
		}
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("writing 4 MiB into a 1 MiB backing dir: %v, want ENOSPC", werr)
	}
	f.Close()
	e.settle()
	var sent int
	for _, w := range ofType[*wire.Write](e.sink.all()) {
		sent += len(w.Data)
	}
	if sent != written {
		t.Errorf("the application wrote %d bytes, the slaves were sent %d", written, sent)
	}
	// The last op on the file carries the mtime it has now.
	var last wire.Time
	for _, r := range e.sink.all() {
		switch o := r.op.(type) {
		case *wire.Write:
			last = o.Mtime
		case *wire.Setattr:
			last = o.Mtime
		}
	}
	if want := e.mtime("big"); last != want {
		t.Errorf("the last op on the file sets mtime %v, the backing file has %v", last, want)
	}
}

// A create that fails (no inode left) reaches no slave.
func TestBackingDirFullCreate(t *testing.T) {
	e := newEnvOnTmpfs(t, "size=1m,nr_inodes=16")
	created := 0
	var err error
	for i := range 64 {
		var f *os.File
		if f, err = os.Create(e.m("f" + string(rune('a'+i%26)) + string(rune('a'+i/26)))); err != nil {
			break
		}
		f.Close()
		created++
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("creating 64 files with 16 inodes: %v, want ENOSPC", err)
	}
	if err := os.Mkdir(e.m("dir"), 0o755); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("mkdir with no inode left: %v, want ENOSPC", err)
	}
	e.settle()
	if n := len(ofType[*wire.Create](e.sink.all())); n != created {
		t.Errorf("%d files created, %d creates sent", created, n)
	}
	if n := len(ofType[*wire.Mkdir](e.sink.all())); n != 0 {
		t.Errorf("a failed mkdir was sent (%d)", n)
	}
}
