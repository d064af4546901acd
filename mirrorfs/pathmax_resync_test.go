package mirrorfs_test

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// A resync pass walks a tree whose deepest directory is 4,096 bytes below
// the root (the wire's limit, one byte more than one *at(2) call takes)
// and holds a file at 4,095 bytes: the master lists and sends it all, and
// the slave ends with it (pathmax_test.go covers the mount). The slave is
// the real one (replayer.Resync): the reference applier of these tests
// works by absolute paths, which cannot be that long.
func TestResyncPathMax(t *testing.T) {
	resetHooks(t)
	names := make([]string, 0, 21)
	for i := range 20 {
		names = append(names, strings.Repeat(string(rune('a'+i)), 200)) // 4,019 bytes
	}
	fileName := strings.Repeat("f", 75)            // 4,095 bytes
	names = append(names, strings.Repeat("z", 76)) // 4,096 bytes
	r := newRig(t, 1, 1<<20, func(back string) {
		fd := openChain(t, back, names[:20], true)
		defer unix.Close(fd)
		must(t, unix.Mkdirat(fd, names[20], 0o755))
		ffd, err := unix.Openat(fd, fileName, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		must(t, err)
		_, err = unix.Write(ffd, []byte("deep data"))
		must(t, err)
		unix.Close(ffd)
	})
	s := r.slaveWith(0, true, true, nil)
	if _, err := r.resync(0, s, wire.PassOptions{Pass: 1, Rebase: true}); err != nil {
		t.Fatalf("Resync: %v", err)
	}
	s.caughtUp()
	s.check(t)
	fd := openChain(t, s.root, names[:20], false)
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstatat(fd, names[20], &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("slave's 4096-byte directory: mode %#o, %v", st.Mode, err)
	}
	ffd, err := unix.Openat(fd, fileName, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("slave's 4095-byte file: %v", err)
	}
	defer unix.Close(ffd)
	buf := make([]byte, 64)
	n, err := unix.Read(ffd, buf)
	if err != nil || string(buf[:n]) != "deep data" {
		t.Errorf("slave's 4095-byte file holds %q, %v", buf[:max(n, 0)], err)
	}
}

// openChain opens the directory root/names[0]/names[1]/..., one component
// at a time, making each first when mk.
func openChain(t *testing.T, root string, names []string, mk bool) int {
	t.Helper()
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	must(t, err)
	for _, n := range names {
		if mk {
			must(t, unix.Mkdirat(fd, n, 0o755))
		}
		nfd, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		must(t, err)
		fd = nfd
	}
	return fd
}
