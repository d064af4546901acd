package replayer

import (
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

func TestSetattrRoot(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	tm := wire.Time{Sec: 1_111_111_111, Nsec: 222_222_222}
	applyAll(t, r, &wire.Setattr{Path: "", Valid: wire.SetMode | wire.SetMtime, Mode: 0o751, Mtime: tm})
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o751 {
		t.Errorf("root mode %#o, want 0751", st.Mode&0o7777)
	}
	checkMtime(t, root, "", tm)
}

// TestSetattrAtimeOnlyWhenAsked: atime is applied only with SetAtime,
// and an omitted mtime is left alone.
func TestSetattrAtimeOnlyWhenAsked(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	at := wire.Time{Sec: 1_000_000_001, Nsec: 3}
	mt := wire.Time{Sec: 1_000_000_002, Nsec: 4}
	applyAll(t, r,
		&wire.Create{Path: "f", Mode: 0o644, Mtime: mt, DirMtime: mt},
		&wire.Setattr{Path: "f", Valid: wire.SetAtime, Atime: at, Mtime: wire.Time{Omit: true}})
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "f"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Atim.Sec != at.Sec || st.Atim.Nsec != int64(at.Nsec) {
		t.Errorf("atime %v, want %v", st.Atim, at)
	}
	checkMtime(t, root, "f", mt)
	// Without SetAtime, Atime is ignored.
	applyAll(t, r, &wire.Setattr{Path: "f", Valid: wire.SetMode, Mode: 0o600, Atime: mt, Mtime: mt})
	if err := unix.Lstat(filepath.Join(root, "f"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Atim.Sec != at.Sec {
		t.Errorf("atime moved to %v without SetAtime", st.Atim)
	}
}

// TestSetattrUnlinkedByHandle: truncating an open, unlinked file through
// its handle works (the path means nothing then).
func TestSetattrUnlinkedByHandle(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	omit := wire.Time{Omit: true}
	applyAll(t, r,
		&wire.Create{Path: "f", Handle: 1, Mode: 0o644, Mtime: omit, DirMtime: omit},
		&wire.Link{OldPath: "f", NewPath: "g", DirMtime: omit},
		&wire.Write{Handle: 1, Data: []byte("0123456789"), Mtime: omit},
		&wire.Unlink{Path: "f", DirMtime: omit},
		&wire.Setattr{Handle: 1, Path: "f", Valid: wire.SetSize, Size: 4, Mtime: omit},
		&wire.Release{Handle: 1})
	if got := readFile(t, filepath.Join(root, "g")); got != "0123" {
		t.Errorf("g = %q, want 0123", got)
	}
}
