package mirrorfs

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

func TestMountRefusesBadOptions(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sink := &fakeSink{}
	for _, c := range []struct {
		name string
		o    Options
		want error
	}{
		{"no sink", Options{Backing: dir}, ErrNoSink},
		{"backing is a file", Options{Backing: file, Sink: sink}, ErrBadBacking},
		{"backing missing", Options{Backing: filepath.Join(dir, "none"), Sink: sink}, syscall.ENOENT},
		{"bad mode", Options{Backing: dir, Sink: sink, Mode: wire.ModeSync + 1}, ErrBadMode},
	} {
		if _, err := Mount(filepath.Join(dir, "mnt"), c.o); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func TestMountOptions(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for l := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == e.mnt {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("%s not in /proc/self/mountinfo", e.mnt)
	}
	for _, want := range []string{" - fuse.tdfs " + e.back + " ", "default_permissions", "max_read=1048576", "nosuid", "nodev"} {
		if !strings.Contains(line, want) {
			t.Errorf("mount line %q lacks %q", line, want)
		}
	}
}

func TestDefaultPermissions(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	if err := os.WriteFile(e.m("secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.settle()
	mark := e.sink.mark()
	asUser(t, 1234, 1234, func() {
		if _, err := os.ReadFile(e.m("secret")); !errors.Is(err, syscall.EACCES) {
			t.Errorf("uid 1234 reading a root 0600 file: %v, want EACCES", err)
		}
		if err := os.WriteFile(e.m("nope"), nil, 0o644); !errors.Is(err, syscall.EACCES) {
			t.Errorf("uid 1234 creating in a root 0755 dir: %v, want EACCES", err)
		}
	})
	if got := e.sink.since(mark); len(got) != 0 {
		t.Errorf("refused ops emitted %v", types(got))
	}
}

func TestUmaskNotAppliedTwice(t *testing.T) {
	// A daemon usually starts with a restrictive umask; Mount must clear
	// it, or the backing dir would get the caller's mode masked again.
	defer unix.Umask(unix.Umask(0o077))
	e := newEnv(t, wire.ModeFsync)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The caller gets a umask of its own (CLONE_FS gives the thread
		// its own fs_struct); the thread is never unlocked, so the
		// runtime discards it afterwards.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			t.Errorf("unshare(CLONE_FS): %v", err)
			return
		}
		unix.Umask(0o002)
		if fd, err := syscall.Open(e.m("f"), syscall.O_CREAT|syscall.O_WRONLY, 0o666); err != nil {
			t.Error(err)
		} else {
			syscall.Close(fd)
		}
		if err := syscall.Mkdir(e.m("d"), 0o777); err != nil {
			t.Error(err)
		}
	}()
	<-done
	e.settle()
	for p, want := range map[string]uint32{"f": 0o664, "d": 0o775} {
		var st syscall.Stat_t
		if err := syscall.Lstat(e.b(p), &st); err != nil || st.Mode&0o7777 != want {
			t.Errorf("backing %s mode %#o, %v; want %#o", p, st.Mode&0o7777, err, want)
		}
	}
	if c := one[*wire.Create](t, e.sink.all()); c.Mode != 0o664 {
		t.Errorf("create op mode %#o, want 0664", c.Mode)
	}
}

func TestWaitUnmountLastSeq(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	back, mnt := filepath.Join(dir, "back"), filepath.Join(dir, "mnt")
	for _, d := range []string{back, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sink := &fakeSink{}
	srv, err := Mount(mnt, Options{Backing: back, Sink: sink, Mode: wire.ModeFsync})
	if err != nil {
		t.Fatal(err)
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			if err := srv.Unmount(); err != nil {
				t.Errorf("Unmount: %v", err)
				unix.Unmount(mnt, unix.MNT_DETACH)
			}
		}
	})
	if got := srv.LastSeq(); got != 2 {
		t.Errorf("LastSeq before any op %d, want 2 (the run start, the root's attributes)", got)
	}
	for _, d := range []string{"a", "b", "c"} {
		if err := os.Mkdir(filepath.Join(mnt, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got := srv.LastSeq(); got != 5 || len(sink.all()) != 5 {
		t.Errorf("LastSeq %d after 3 mkdirs, sink has %d", got, len(sink.all()))
	}
	done := make(chan struct{})
	go func() {
		srv.Wait()
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("Wait returned while mounted")
	default:
	}
	// An umount from outside ends Wait, as tdfs-master relies on.
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	mounted = false
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return after umount")
	}
	sink.check(t)
}
