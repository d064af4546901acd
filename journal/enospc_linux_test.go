package journal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// mountTiny mounts a tmpfs of size bytes on a temp dir, unmounted at the
// end of the test (after the journal in it is closed: cleanups run last
// registered first).
func mountTiny(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: mounting a tiny tmpfs to run out of space needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tdfs-journal-test", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+size); err != nil {
		t.Skipf("SKIPPED LOUDLY: cannot mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// ENOSPC: the error comes back, stays until Reset, and the journal on disk
// stays consistent: the next Open cuts the partial record and keeps every
// record that was written whole.
// Both ways a record is written: copied into the buffer (1,000 bytes),
// and written from the caller's memory after it (3,000 >= BufferSize/2).
func TestWriteErrorIsSticky(t *testing.T) {
	for _, size := range []int{1000, 3000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { testWriteErrorIsSticky(t, size) })
	}
}

func testWriteErrorIsSticky(t *testing.T, size int) {
	fs := mountTiny(t, "64k")
	dir := filepath.Join(fs, "journal")
	j := open(t, dir, Options{BufferSize: 4 << 10})
	rec := bytes.Repeat([]byte("x"), size)
	var werr error
	seq := uint64(1)
	for ; seq < 1000; seq++ {
		if werr = j.Append(seq, rec); werr != nil {
			break
		}
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("Append on a full filesystem: %v, want ENOSPC", werr)
	}
	for name, f := range map[string]func() error{
		"Append": func() error { return j.Append(seq+1, rec) },
		"Flush":  j.Flush,
		"Sync":   j.Sync,
	} {
		if err := f(); err == nil || err.Error() != werr.Error() {
			t.Fatalf("%s after the write error: %v, want %v", name, err, werr)
		}
	}
	// Readers still see what was written before, and nothing partial.
	r, err := j.Reader(1)
	if err != nil {
		t.Fatal(err)
	}
	var flushed uint64
	for {
		s, b, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil || !bytes.Equal(b, rec) {
			t.Fatalf("Next after %d: %v", flushed, err)
		}
		flushed = s
	}
	r.Close()
	if flushed == 0 {
		t.Fatal("nothing flushed before the filesystem filled: make the tmpfs larger")
	}
	if err := j.Close(); err == nil {
		t.Fatal("Close after a write error returned nil")
	}

	j = open(t, dir, Options{BufferSize: 4 << 10})
	last := j.Last()
	if last < flushed || last >= seq {
		t.Fatalf("Last after reopen = %d, want %d..%d", last, flushed, seq-1)
	}
	if rec := j.Recovered(); len(rec.Repairs) != 1 || rec.Repairs[0].Removed {
		t.Fatalf("Recovered: %v, want the partial record cut", describe(rec))
	}
	// Still full: the next Flush fails (a large record's own Append
	// already), Reset clears it and frees the space.
	if err := j.Append(last+1, rec); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(err)
	}
	for s := last + 2; j.Flush() == nil; s++ {
		if err := j.Append(s, rec); err != nil && !errors.Is(err, syscall.ENOSPC) {
			t.Fatal(err)
		}
		if s > last+1000 {
			t.Fatal("the filesystem does not fill")
		}
	}
	if err := j.Reset(); err != nil {
		t.Fatal(err)
	}
	appendRange(t, j, 1, 20)
	if err := j.Sync(); err != nil {
		t.Fatalf("Sync after Reset: %v", err)
	}
	checkRecords(t, j, 1, 20)
}
