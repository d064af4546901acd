package mirrorfs

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

func TestReadOnlyEmitsNothing(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	if err := os.WriteFile(e.b("f"), []byte("made behind the mount"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(e.m("f"))
	if err != nil || string(got) != "made behind the mount" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := os.ReadDir(e.mnt); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(e.m("f")); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if recs := e.sink.all(); len(recs) != 0 {
		t.Errorf("reads emitted %v", types(recs))
	}
}

func TestTmpfileRefused(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	fd, err := syscall.Open(e.mnt, unix.O_TMPFILE|syscall.O_RDWR, 0o600)
	if err == nil {
		syscall.Close(fd)
	}
	if !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("O_TMPFILE: %v, want EOPNOTSUPP", err)
	}
	if recs := e.sink.all(); len(recs) != 0 {
		t.Errorf("refused O_TMPFILE emitted %v", types(recs))
	}
}

func TestIoctlRefused(t *testing.T) {
	e := newEnv(t, wire.ModeFsync)
	f, err := os.Create(e.m("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mark := e.sink.mark()
	// chattr +A: FS_IOC_SETFLAGS with FS_NOATIME_FL would change the
	// backing inode with no op describing it.
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, fsNoatimeFl); err == nil {
		t.Error("FS_IOC_SETFLAGS succeeded")
	}
	bf, err := os.Open(e.b("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	if flags, err := unix.IoctlGetInt(int(bf.Fd()), unix.FS_IOC_GETFLAGS); err == nil && flags&fsNoatimeFl != 0 {
		t.Error("the backing file got FS_NOATIME_FL")
	}
	if recs := e.sink.since(mark); len(recs) != 0 {
		t.Errorf("refused ioctl emitted %v", types(recs))
	}
}

// fsNoatimeFl is FS_NOATIME_FL from linux/fs.h (x/sys does not export it).
const fsNoatimeFl = 0x80
