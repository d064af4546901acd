package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// workload runs every mutating op tdfs replicates through the mount at mnt.
func workload(t *testing.T, mnt string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(name string) string { return filepath.Join(mnt, name) }
	rnd := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}

	// Create, O_TRUNC, small and large writes (large ones travel on data
	// streams), compressible and not.
	must(os.MkdirAll(p("a/b/c"), 0o755))
	must(os.WriteFile(p("a/small"), []byte("hello tdfs\n"), 0o644))
	must(os.WriteFile(p("a/big.bin"), random(5<<20+12345), 0o600))
	must(os.WriteFile(p("a/b/text"), bytes.Repeat([]byte("compressible text "), 200000), 0o640))
	must(os.WriteFile(p("a/small"), []byte("truncated and rewritten\n"), 0o644)) // O_TRUNC of an existing file

	// pwrite at offsets, O_APPEND, a sparse tail.
	f, err := os.OpenFile(p("a/pw"), os.O_CREATE|os.O_RDWR, 0o644)
	must(err)
	_, err = f.WriteAt([]byte("0123456789"), 0)
	must(err)
	_, err = f.WriteAt([]byte("xyz"), 4)
	must(err)
	_, err = f.WriteAt(random(70000), 1<<20)
	must(err)
	must(f.Close())
	f, err = os.OpenFile(p("a/pw"), os.O_WRONLY|os.O_APPEND, 0)
	must(err)
	_, err = f.Write([]byte("appended"))
	must(err)
	must(f.Close())

	// mmap writes reach the daemon with pid 0 through a writable handle.
	f, err = os.OpenFile(p("a/mmap"), os.O_CREATE|os.O_RDWR, 0o644)
	must(err)
	must(f.Truncate(64 << 10))
	mem, err := unix.Mmap(int(f.Fd()), 0, 64<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	must(err)
	copy(mem[100:], "written through mmap")
	copy(mem[40000:], random(5000))
	must(unix.Msync(mem, unix.MS_SYNC))
	must(unix.Munmap(mem))
	must(f.Close())

	// Several writers at once: their own files and disjoint parts of a shared one.
	shared, err := os.OpenFile(p("a/shared"), os.O_CREATE|os.O_RDWR, 0o644)
	must(err)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 4 {
		wg.Go(func() {
			data := bytes.Repeat([]byte{byte('A' + w)}, 200<<10)
			if err := os.WriteFile(p(fmt.Sprintf("a/writer%d", w)), data, 0o644); err != nil {
				errs <- err
				return
			}
			for i := range 8 {
				if _, err := shared.WriteAt(data[:16<<10], int64((i*4+w)*(16<<10))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(err)
	}
	must(shared.Close())

	// Truncate down and up.
	must(os.Truncate(p("a/big.bin"), 3<<20+7))
	must(os.Truncate(p("a/b/text"), 5<<20))

	// Directories: mkdir, rmdir, rename of a directory with contents.
	must(os.Mkdir(p("gone"), 0o700))
	must(os.Remove(p("gone")))
	must(os.MkdirAll(p("d1/sub"), 0o755))
	must(os.WriteFile(p("d1/sub/f"), []byte("in a dir that moves"), 0o644))
	must(os.Rename(p("d1"), p("a/d2")))

	// unlink, rename, RENAME_NOREPLACE (ok and EEXIST), RENAME_EXCHANGE.
	must(os.WriteFile(p("victim"), []byte("x"), 0o644))
	must(os.Remove(p("victim")))
	must(os.WriteFile(p("r1"), []byte("r1"), 0o644))
	must(os.WriteFile(p("r2"), []byte("r2"), 0o644))
	must(os.Rename(p("r1"), p("r1-renamed")))
	must(unix.Renameat2(unix.AT_FDCWD, p("r1-renamed"), unix.AT_FDCWD, p("r3"), unix.RENAME_NOREPLACE))
	if err := unix.Renameat2(unix.AT_FDCWD, p("r3"), unix.AT_FDCWD, p("r2"), unix.RENAME_NOREPLACE); err != unix.EEXIST {
		t.Fatalf("RENAME_NOREPLACE onto an existing file: %v, want EEXIST", err)
	}
	must(unix.Renameat2(unix.AT_FDCWD, p("r2"), unix.AT_FDCWD, p("a/b"), unix.RENAME_EXCHANGE))

	// Links, symlinks, fifos.
	must(os.Link(p("a/small"), p("hardlink")))
	must(os.Symlink("a/small", p("symlink")))
	must(os.Symlink("/nonexistent/absolute", p("dangling")))
	must(unix.Mkfifo(p("fifo"), 0o640))

	// chmod (with setgid on a dir and sticky), chown, utimens to the nanosecond.
	must(os.Chmod(p("a/small"), 0o600))
	must(unix.Chmod(p("r2"), 0o3775)) // setgid + sticky on a directory
	must(os.Chown(p("a/pw"), 1234, 5678))
	must(os.Lchown(p("symlink"), 4321, 8765))
	ts := []unix.Timespec{{Sec: 1600000000, Nsec: 111111111}, {Sec: 1500000000, Nsec: 987654321}}
	must(unix.UtimesNanoAt(unix.AT_FDCWD, p("a/mmap"), ts, 0))
	must(unix.UtimesNanoAt(unix.AT_FDCWD, p("symlink"), ts, unix.AT_SYMLINK_NOFOLLOW))

	// xattrs.
	must(unix.Setxattr(p("a/small"), "user.color", []byte("blue"), 0))
	must(unix.Setxattr(p("a/small"), "user.gone", []byte("soon"), 0))
	must(unix.Removexattr(p("a/small"), "user.gone"))
	must(unix.Setxattr(p("a"), "user.dir", bytes.Repeat([]byte("v"), 3000), 0))

	// fallocate: extend, keep size, punch a hole, zero a range.
	f, err = os.OpenFile(p("a/falloc"), os.O_CREATE|os.O_RDWR, 0o644)
	must(err)
	_, err = f.Write(random(256 << 10))
	must(err)
	fd := int(f.Fd())
	must(unix.Fallocate(fd, 0, 0, 512<<10))
	must(unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20))
	must(unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 64<<10, 64<<10))
	must(unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 200<<10, 10<<10))
	must(f.Sync())
	must(f.Close())

	// Writes after a rename of the open file land in the renamed file.
	f, err = os.Create(p("moving"))
	must(err)
	_, err = f.Write([]byte("before rename;"))
	must(err)
	must(os.Rename(p("moving"), p("a/moved")))
	_, err = f.Write([]byte("after rename"))
	must(err)
	must(f.Close())

	// Writes to an unlinked-but-open file go nowhere visible; writes to a file
	// whose other name was removed land in the remaining name.
	f, err = os.Create(p("orphan"))
	must(err)
	must(os.Remove(p("orphan")))
	_, err = f.Write(random(100 << 10))
	must(err)
	must(f.Close())
	f, err = os.Create(p("twonames"))
	must(err)
	must(os.Link(p("twonames"), p("a/othername")))
	must(os.Remove(p("twonames")))
	_, err = f.Write([]byte("written after the first name was removed"))
	must(err)
	must(f.Sync())
	must(f.Close())

	// Directory mtimes are set explicitly too.
	must(unix.UtimesNanoAt(unix.AT_FDCWD, p("a/b"), ts, 0))
}

// syncMount makes everything before it durable on every connected slave in
// fsync and sync modes (fsync through the mount waits for them).
func syncMount(t *testing.T, mnt string) {
	t.Helper()
	f, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// readAll reads every regular file under dir, and fails if that takes
// longer than limit: reads must never wait for the network.
func readAll(t *testing.T, dir string, limit time.Duration) int {
	t.Helper()
	done := make(chan int, 1)
	go func() {
		n := 0
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if b, err := os.ReadFile(p); err == nil {
					n += len(b)
				}
			}
			return nil
		})
		done <- n
	}()
	select {
	case n := <-done:
		return n
	case <-time.After(limit):
		t.Fatalf("reading %s through the mount hung for %v with the slaves stopped", dir, limit)
		return 0
	}
}
