package replayer

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

var copyOmit = wire.Time{Omit: true}

// copyFixture makes "src" holding data (released) and "dst" open under
// handle 2.
func copyFixture(t *testing.T, o Options, data []byte) (*Replayer, string) {
	t.Helper()
	root := t.TempDir()
	r := newTestReplayer(t, root, o)
	ops := []wire.Op{&wire.Create{Path: "src", Handle: 1, Mode: 0o644, Mtime: copyOmit, DirMtime: copyOmit}}
	for off := 0; off < len(data); off += wire.MaxWriteLen {
		chunk := data[off:min(len(data), off+wire.MaxWriteLen)]
		ops = append(ops, &wire.Write{Handle: 1, Off: int64(off), Data: chunk, Mtime: copyOmit})
	}
	ops = append(ops,
		&wire.Release{Handle: 1},
		&wire.Create{Path: "dst", Handle: 2, Mode: 0o644, Mtime: copyOmit, DirMtime: copyOmit})
	applyAll(t, r, ops...)
	return r, root
}

// copyData is a pattern that neither repeats every page nor is all zeros.
func copyData(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i/4093)
	}
	return b
}

func TestCopyRangeApply(t *testing.T) {
	data := copyData(3<<20 + 17)
	r, root := copyFixture(t, Options{}, data)
	tm := wire.Time{Sec: 1_650_000_000, Nsec: 42}
	applyAll(t, r,
		&wire.CopyRange{SrcPath: "src", SrcOff: 5, Handle: 2, Off: 100, Len: int64(len(data) - 5), Mtime: tm},
		// Within the destination, by its own handle: [100,+10) to the end.
		&wire.CopyRange{SrcHandle: 2, SrcOff: 100, Handle: 2, Off: int64(100 + len(data) - 5), Len: 10, Mtime: tm})
	want := append(make([]byte, 100), data[5:]...)
	want = append(want, data[5:15]...)
	if got := readFile(t, filepath.Join(root, "dst")); got != string(want) {
		t.Errorf("dst holds %d bytes, want %d (equal: %v)", len(got), len(want), got == string(want))
	}
	checkMtime(t, root, "dst", tm)
	if got := readFile(t, filepath.Join(root, "src")); got != string(data) {
		t.Errorf("src changed")
	}
}

// A source unlinked while open on the master has no name: the master
// names it by a writable handle, which the slave reads through /proc.
func TestCopyRangeFromNamelessHandle(t *testing.T) {
	r, root := copyFixture(t, Options{}, []byte("x"))
	applyAll(t, r,
		&wire.Create{Path: "tmp", Handle: 3, Mode: 0o200, Mtime: copyOmit, DirMtime: copyOmit},
		&wire.Write{Handle: 3, Data: []byte("hello, nameless"), Mtime: copyOmit},
		&wire.Unlink{Path: "tmp", DirMtime: copyOmit},
		&wire.CopyRange{SrcHandle: 3, SrcOff: 7, Handle: 2, Off: 0, Len: 8, Mtime: copyOmit})
	if got := readFile(t, filepath.Join(root, "dst")); got != "nameless" {
		t.Errorf("dst = %q", got)
	}
}

// The master's op records what it copied; a source that holds fewer bytes
// on the slave means the trees differ, and the op fails without a shorter
// copy passing for success. A copy of nothing at the end is fine.
func TestCopyRangeShortSource(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		name := "copy_file_range"
		if fallback {
			name = "read/write"
		}
		t.Run(name, func(t *testing.T) {
			if fallback {
				refuseCopyFileRange(t, unix.EXDEV)
			}
			r, _ := copyFixture(t, Options{}, []byte("0123456789"))
			applyAll(t, r, &wire.CopyRange{SrcPath: "src", SrcOff: 10, Handle: 2, Off: 0, Len: 0, Mtime: copyOmit})
			err := r.Apply(&wire.CopyRange{SrcPath: "src", SrcOff: 4, Handle: 2, Off: 0, Len: 7, Mtime: copyOmit})
			if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "after 6 of 7 bytes") {
				t.Errorf("copy of 7 bytes where 6 are: %v, want io.ErrUnexpectedEOF", err)
			}
			err = r.Apply(&wire.CopyRange{SrcPath: "src", SrcOff: 50, Handle: 2, Off: 0, Len: 1, Mtime: copyOmit})
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("copy from past the end: %v, want io.ErrUnexpectedEOF", err)
			}
		})
	}
}

// refuseCopyFileRange makes copy_file_range fail with errno for the rest
// of the test, as on a filesystem that does not support it.
func refuseCopyFileRange(t *testing.T, errno unix.Errno) {
	old := copyFileRangeSys
	copyFileRangeSys = func(int, *int64, int, *int64, int, int) (int, error) { return 0, errno }
	t.Cleanup(func() { copyFileRangeSys = old })
}

// Where the slave's filesystem refuses copy_file_range, the bytes are read
// and written; the result is the same.
func TestCopyRangeFallback(t *testing.T) {
	data := copyData(2<<20 + 3)
	for _, errno := range []unix.Errno{unix.EXDEV, unix.EOPNOTSUPP, unix.ENOSYS, unix.EINVAL} {
		t.Run(errno.Error(), func(t *testing.T) {
			refuseCopyFileRange(t, errno)
			r, root := copyFixture(t, Options{}, data)
			applyAll(t, r, &wire.CopyRange{SrcPath: "src", SrcOff: 1, Handle: 2, Off: 3, Len: int64(len(data) - 1), Mtime: copyOmit})
			if got := readFile(t, filepath.Join(root, "dst")); got != "\x00\x00\x00"+string(data[1:]) {
				t.Errorf("dst holds %d bytes, not the copy", len(got))
			}
		})
	}
	// Another error is the slave's trouble, reported as it is.
	refuseCopyFileRange(t, unix.EIO)
	r, _ := copyFixture(t, Options{}, data)
	if err := r.Apply(&wire.CopyRange{SrcPath: "src", Handle: 2, Len: 1, Mtime: copyOmit}); !errors.Is(err, unix.EIO) {
		t.Errorf("EIO: %v", err)
	}
}

// After a partial copy_file_range, the fallback copies the rest from
// where it stopped.
func TestCopyRangeFallbackAfterPartial(t *testing.T) {
	data := copyData(100)
	calls := 0
	old := copyFileRangeSys
	copyFileRangeSys = func(in int, inOff *int64, out int, outOff *int64, n, flags int) (int, error) {
		if calls++; calls == 1 {
			return old(in, inOff, out, outOff, 30, flags)
		}
		return 0, unix.EXDEV
	}
	t.Cleanup(func() { copyFileRangeSys = old })
	r, root := copyFixture(t, Options{}, data)
	applyAll(t, r, &wire.CopyRange{SrcPath: "src", Handle: 2, Len: 100, Mtime: copyOmit})
	if got := readFile(t, filepath.Join(root, "dst")); got != string(data) {
		t.Errorf("dst = % x", got)
	}
}

// The source is confined beneath the root and must be a regular file; the
// destination must be a known handle.
func TestCopyRangeRefusals(t *testing.T) {
	r, root := copyFixture(t, Options{MaxFileSize: 1 << 20}, []byte("0123456789"))
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		os.Symlink(outside, filepath.Join(root, "out")),
		os.Symlink("src", filepath.Join(root, "lnk")),
		os.Mkdir(filepath.Join(root, "dir"), 0o755),
		unix.Mkfifo(filepath.Join(root, "fifo"), 0o644),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		op   *wire.CopyRange
		want error
		why  string
	}{
		{"through a symlink out of the root", &wire.CopyRange{SrcPath: "out/secret", Handle: 2, Len: 6}, wire.ErrRefused, "leaves the root"},
		{"final symlink", &wire.CopyRange{SrcPath: "lnk", Handle: 2, Len: 1}, wire.ErrRefused, "symlink"},
		{"parent path", &wire.CopyRange{SrcPath: "../secret", Handle: 2, Len: 1}, wire.ErrRefused, ".."},
		{"directory source", &wire.CopyRange{SrcPath: "dir", Handle: 2, Len: 1}, wire.ErrRefused, "directory is not a regular file"},
		{"fifo source", &wire.CopyRange{SrcPath: "fifo", Handle: 2, Len: 1}, wire.ErrRefused, "fifo is not a regular file"},
		{"missing source", &wire.CopyRange{SrcPath: "nope", Handle: 2, Len: 1}, unix.ENOENT, "nope"},
		{"unknown destination", &wire.CopyRange{SrcPath: "src", Handle: 9, Len: 1}, ErrUnknownHandle, "handle 9"},
		{"unknown source handle", &wire.CopyRange{SrcHandle: 8, Handle: 2, Len: 1}, ErrUnknownHandle, "handle 8"},
		{"beyond max file size", &wire.CopyRange{SrcPath: "src", Handle: 2, Off: 1<<20 - 5, Len: 6}, wire.ErrRefused, "--max-file-size"},
		{"overlap within one file", &wire.CopyRange{SrcHandle: 2, Handle: 2, SrcOff: 0, Off: 4, Len: 5}, wire.ErrRefused, "overlapping"},
	}
	for _, tc := range cases {
		tc.op.Mtime = copyOmit
		err := r.Apply(tc.op)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.why) || !strings.Contains(err.Error(), "copy-range") {
			t.Errorf("%s: %v, want %v saying %q", tc.name, err, tc.want, tc.why)
		}
		if got := readFile(t, filepath.Join(root, "dst")); got != "" {
			t.Fatalf("%s: dst = %q after a refused copy", tc.name, got)
		}
	}
}

// A destination that has set-id bits (a seeded copy, say) is not written
// into unless the slave allows set-id files.
func TestCopyRangeSetidDestination(t *testing.T) {
	for _, allow := range []bool{false, true} {
		r, root := copyFixture(t, Options{AllowSetuid: allow}, []byte("0123456789"))
		if err := unix.Chmod(filepath.Join(root, "dst"), 0o4755); err != nil {
			t.Fatal(err)
		}
		err := r.Apply(&wire.CopyRange{SrcPath: "src", Handle: 2, Len: 4, Mtime: copyOmit})
		got := readFile(t, filepath.Join(root, "dst"))
		switch {
		case !allow && (!errors.Is(err, wire.ErrRefused) || !strings.Contains(err.Error(), "set-id") || got != ""):
			t.Errorf("copy into a setuid file: %v, dst %q; want wire.ErrRefused and nothing written", err, got)
		case allow && (err != nil || got != "0123"):
			t.Errorf("copy into a setuid file with AllowSetuid: %v, dst %q", err, got)
		}
	}
}

// In tolerant mode (a rebase pass) a source that is still shorter on the
// slave is a tree that differs: skipped, and the destination is suspect.
func TestCopyRangeTolerant(t *testing.T) {
	r, root := copyFixture(t, Options{}, []byte("0123"))
	r.SetTolerant(true)
	before := r.Skipped()
	if err := r.Apply(&wire.CopyRange{SrcPath: "src", Handle: 2, Len: 10, Mtime: copyOmit}); err != nil {
		t.Fatalf("tolerant short copy: %v", err)
	}
	if r.Skipped() != before+1 {
		t.Errorf("skipped %d ops, want 1", r.Skipped()-before)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(root, "dst"), &st); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	suspect := r.isSuspect(&st)
	r.mu.Unlock()
	if !suspect {
		t.Errorf("the destination of a tolerated copy is not suspect")
	}
	// Refusals are never tolerated.
	if err := r.Apply(&wire.CopyRange{SrcPath: "../x", Handle: 2, Len: 1, Mtime: copyOmit}); !errors.Is(err, wire.ErrRefused) {
		t.Errorf("tolerant copy from ../x: %v, want wire.ErrRefused", err)
	}
}

// Applying a copy again, as Reapply does after a crash, gives the same
// bytes.
func TestCopyRangeReapply(t *testing.T) {
	data := copyData(1 << 16)
	r, root := copyFixture(t, Options{}, data)
	op := &wire.CopyRange{SrcPath: "src", SrcOff: 0, Handle: 2, Off: 10, Len: int64(len(data)), Mtime: copyOmit}
	applyAll(t, r, op)
	if err := r.Reapply(op); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "dst")); !bytes.Equal([]byte(got[10:]), data) || len(got) != 10+len(data) {
		t.Errorf("dst after reapply differs")
	}
}
