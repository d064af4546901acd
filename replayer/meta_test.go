package replayer

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

func TestChownFalseWarnsOnce(t *testing.T) {
	root := t.TempDir()
	var logs bytes.Buffer
	r := newTestReplayer(t, root, Options{Chown: false, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	foreign := uint32(os.Geteuid() + 1000)
	ops := []wire.Op{
		&wire.Mkdir{Path: "d", Mode: 0o755, Uid: foreign, Gid: foreign},
		&wire.Create{Path: "d/f", Mode: 0o644, Uid: foreign, Gid: foreign},
		&wire.Symlink{Path: "d/l", Target: "f", Uid: foreign, Gid: foreign},
		&wire.Setattr{Path: "d/f", Valid: wire.SetUid, Uid: foreign, Mtime: wire.Time{Omit: true}},
	}
	for _, op := range ops {
		if err := r.Apply(op); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"d", "d/f", "d/l"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Fatal(err)
		}
		if int(st.Uid) != os.Geteuid() {
			t.Errorf("%s owned by %d with Chown false", p, st.Uid)
		}
	}
	if n := strings.Count(logs.String(), "not applying owners"); n != 1 {
		t.Errorf("%d owner warnings, want 1:\n%s", n, logs.String())
	}
}

// TestModesExactDespiteUmask: the slave's umask must not shape modes.
func TestModesExactDespiteUmask(t *testing.T) {
	old := unix.Umask(0o077) // process-wide: no test in this package runs in parallel
	defer unix.Umask(old)
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{Chown: os.Geteuid() == 0, AllowSetuid: true})
	omit := wire.Time{Omit: true}
	ops := []wire.Op{
		&wire.Mkdir{Path: "d", Mode: 0o1777, Mtime: omit, DirMtime: omit},
		&wire.Create{Path: "f", Mode: 0o666, Mtime: omit, DirMtime: omit},
		&wire.Create{Path: "s", Mode: 0o6755, Mtime: omit, DirMtime: omit},
		&wire.Mknod{Path: "p", Mode: unix.S_IFIFO | 0o666, Mtime: omit, DirMtime: omit},
	}
	for _, op := range ops {
		if err := r.Apply(op); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]uint32{"d": 0o1777, "f": 0o666, "s": 0o6755, "p": 0o666}
	for p, mode := range want {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != mode {
			t.Errorf("%s mode %#o, want %#o", p, st.Mode&0o7777, mode)
		}
	}
}

func TestTimespec(t *testing.T) {
	ts, err := timespec(wire.Time{Sec: -5, Nsec: 999_999_999})
	if err != nil || ts.Sec != -5 || ts.Nsec != 999_999_999 {
		t.Errorf("timespec(-5.999999999) = %v, %v", ts, err)
	}
	if ts, err := timespec(wire.Time{Omit: true}); err != nil || ts.Nsec != unix.UTIME_OMIT {
		t.Errorf("timespec(omit) = %v, %v", ts, err)
	}
	if _, err := timespec(wire.Time{Sec: 1, Nsec: 1e9}); !errors.Is(err, wire.ErrRefused) {
		t.Errorf("timespec with 1e9 ns: %v, want wire.ErrRefused", err)
	}
}
