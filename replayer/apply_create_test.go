package replayer

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

func applyAll(t *testing.T, r *Replayer, ops ...wire.Op) {
	t.Helper()
	for _, op := range ops {
		if err := r.Apply(op); err != nil {
			t.Fatal(err)
		}
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCreateReplay: a replayed O_EXCL create leaves the file empty, as the
// master's was right after it; a create without O_EXCL or O_TRUNC keeps
// the contents.
func TestCreateReplay(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	omit := wire.Time{Omit: true}
	f := filepath.Join(root, "f")
	create := &wire.Create{Path: "f", Handle: 1, Flags: wireOExcl | unix.O_WRONLY, Mode: 0o644, Mtime: omit, DirMtime: omit}
	applyAll(t, r, create,
		&wire.Write{Handle: 1, Data: []byte("contents"), Mtime: omit},
		&wire.Release{Handle: 1})
	applyAll(t, r, &wire.Create{Path: "f", Flags: unix.O_WRONLY | unix.O_APPEND, Mode: 0o644, Mtime: omit, DirMtime: omit})
	if got := readFile(t, f); got != "contents" {
		t.Errorf("create without O_EXCL/O_TRUNC: %q, want the contents kept", got)
	}
	applyAll(t, r, create, &wire.Release{Handle: 1})
	if got := readFile(t, f); got != "" {
		t.Errorf("replayed O_EXCL create: %q, want empty", got)
	}
	// O_APPEND from the master must not make positioned writes append.
	applyAll(t, r, &wire.Create{Path: "a", Handle: 2, Flags: unix.O_APPEND | wireOExcl, Mode: 0o644, Mtime: omit, DirMtime: omit},
		&wire.Write{Handle: 2, Off: 0, Data: []byte("xxxx"), Mtime: omit},
		&wire.Write{Handle: 2, Off: 1, Data: []byte("Y"), Mtime: omit},
		&wire.Release{Handle: 2})
	if got := readFile(t, filepath.Join(root, "a")); got != "xYxx" {
		t.Errorf("positioned writes: %q, want xYxx", got)
	}
}

func TestCreateOverSpecialFileRefused(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	applyAll(t, r,
		&wire.Mknod{Path: "fifo", Mode: unix.S_IFIFO | 0o644},
		&wire.Mkdir{Path: "dir", Mode: 0o755})
	for _, p := range []string{"fifo", "dir"} {
		// A blocking open of a fifo would hang here.
		err := r.Apply(&wire.Create{Path: p, Handle: 1, Mode: 0o644})
		if !errors.Is(err, wire.ErrRefused) {
			t.Errorf("create over %s: %v, want wire.ErrRefused", p, err)
		}
	}
	if n := r.NumHandles(); n != 0 {
		t.Errorf("%d handles after refused creates", n)
	}
}

func TestMakeTwice(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	tm := wire.Time{Sec: 1_700_000_000, Nsec: 42}
	twice := []wire.Op{
		&wire.Mkdir{Path: "d", Mode: 0o755, Mtime: tm, DirMtime: tm},
		&wire.Mknod{Path: "p", Mode: unix.S_IFIFO | 0o600, Mtime: tm, DirMtime: tm},
		&wire.Mknod{Path: "r", Mode: 0o600, Mtime: tm, DirMtime: tm},
		&wire.Symlink{Path: "l", Target: "d", Mtime: tm, DirMtime: tm},
	}
	applyAll(t, r, twice...)
	applyAll(t, r, twice...)
	// The second Mkdir still applies the mode.
	applyAll(t, r, &wire.Mkdir{Path: "d", Mode: 0o700, Mtime: tm, DirMtime: tm})
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "d"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o700 || st.Mtim.Nsec != 42 {
		t.Errorf("d after a second mkdir: mode %#o mtime %v", st.Mode&0o7777, st.Mtim)
	}
	if err := unix.Lstat(filepath.Join(root, "r"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Errorf("mknod with no type: %v, mode %#o, want a regular file", err, st.Mode)
	}

	// Something else under the name is an error, not silently accepted.
	conflicts := []wire.Op{
		&wire.Mkdir{Path: "p", Mode: 0o755},
		&wire.Mknod{Path: "d", Mode: unix.S_IFIFO | 0o600},
		&wire.Mknod{Path: "p", Mode: unix.S_IFSOCK | 0o600},
		&wire.Symlink{Path: "l", Target: "elsewhere"},
		&wire.Symlink{Path: "d", Target: "d"},
	}
	for _, op := range conflicts {
		if err := r.Apply(op); !errors.Is(err, fs.ErrExist) {
			t.Errorf("%s: %v, want EEXIST", describe(op), err)
		}
	}
}
