package replayer

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// OnHandle hears of each handle as it opens (with its record) and as it is
// released.
func TestOnHandle(t *testing.T) {
	root := t.TempDir()
	got := make(map[uint64]*HandleRecord)
	var order []uint64
	r := newTestReplayer(t, root, Options{OnHandle: func(h uint64, rec *HandleRecord) {
		got[h] = rec
		order = append(order, h)
	}})
	applyAll(t, r,
		&wire.Create{Path: "a", Handle: 1, Mode: 0o644, Mtime: tA, DirMtime: tA},
		&wire.Create{Path: "b", Handle: 2, Mode: 0o644, Mtime: tA, DirMtime: tA},
		&wire.Create{Path: "c", Mode: 0o644, Mtime: tA, DirMtime: tA}, // no handle
		&wire.Write{Handle: 1, Data: []byte("x"), Mtime: tA},          // no record per write
		&wire.Open{Path: "c", Handle: 3, Mtime: tA},
		&wire.Release{Handle: 2},
	)
	if want := []uint64{1, 2, 3, 2}; !slices.Equal(order, want) {
		t.Errorf("OnHandle calls for %v, want %v", order, want)
	}
	if got[2] != nil {
		t.Error("handle 2: released, but its last record is not nil")
	}
	for _, h := range []uint64{1, 3} {
		rec := got[h]
		if rec == nil || rec.Handle != h || len(rec.FH) == 0 || rec.Gone {
			t.Fatalf("handle %d: record %+v", h, rec)
		}
		direct, err := r.HandleRecord(h)
		if err != nil {
			t.Fatal(err)
		}
		if direct.FHType != rec.FHType || !slices.Equal(direct.FH, rec.FH) {
			t.Errorf("handle %d: HandleRecord %+v, OnHandle %+v", h, direct, rec)
		}
	}
	if _, err := r.HandleRecord(2); !errors.Is(err, ErrUnknownHandle) {
		t.Errorf("record of a released handle: %v, want ErrUnknownHandle", err)
	}
	recs := r.HandleRecords()
	if len(recs) != 2 || recs[0].Handle != 1 || recs[1].Handle != 3 {
		t.Errorf("HandleRecords = %+v, want handles 1 and 3", recs)
	}
}

// A process dies holding handles; a new one restores them: writes land
// in the right file, whatever happened to its name, and a file that had
// no name is gone, its writes harmless.
func TestRestoreHandles(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	dead, err := New(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []wire.Op{
		&wire.Create{Path: "f", Handle: 1, Mode: 0o644, Mtime: tA, DirMtime: tA},
		&wire.Write{Handle: 1, Data: []byte("before "), Mtime: tA},
		&wire.Create{Path: "g", Handle: 2, Mode: 0o644, Mtime: tA, DirMtime: tA},
		&wire.Write{Handle: 2, Data: []byte("unlinked, still open"), Mtime: tA},
		&wire.Unlink{Path: "g", DirMtime: tB},
	} {
		if err := dead.Apply(op); err != nil {
			t.Fatal(err)
		}
	}
	recs := dead.HandleRecords()
	// The process dies: its fds close, and g's inode goes with them.
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}

	r := newTestReplayer(t, root, Options{})
	restored, gone, err := r.RestoreHandles(recs)
	if err != nil {
		t.Fatal(err)
	}
	if restored != 1 || gone != 1 {
		t.Errorf("restored %d, gone %d; want 1 and 1", restored, gone)
	}
	before := snapshot(t, root)
	applyAll(t, r,
		&wire.Write{Handle: 2, Off: 0, Data: []byte("to nowhere"), Mtime: tC},
		&wire.Fallocate{Handle: 2, Off: 0, Len: 1 << 20, Mtime: tC},
		&wire.Setattr{Handle: 2, Valid: wire.SetSize | wire.SetMode, Size: 5, Mode: 0o777, Mtime: tC},
	)
	if d := diffTrees(before, snapshot(t, root)); len(d) != 0 {
		t.Errorf("ops through a gone handle changed the tree: %v", d)
	}
	if rec, err := r.HandleRecord(2); err != nil || !rec.Gone {
		t.Errorf("record of a gone handle: %+v, %v", rec, err)
	}
	applyAll(t, r,
		&wire.Release{Handle: 2},
		&wire.Rename{OldPath: "f", NewPath: "renamed", OldDirMtime: tB, NewDirMtime: tB},
		&wire.Write{Handle: 1, Off: 7, Data: []byte("after"), Mtime: tC},
		&wire.Release{Handle: 1},
	)
	if got := readFile(t, filepath.Join(root, "renamed")); got != "before after" {
		t.Errorf("renamed = %q, want the writes of both processes", got)
	}
	if err := r.Apply(&wire.Write{Handle: 2, Data: []byte("x"), Mtime: tC}); !errors.Is(err, ErrUnknownHandle) {
		t.Errorf("write through a released gone handle: %v, want ErrUnknownHandle", err)
	}
}

// A handle that cannot be reopened fails the whole restore, which then
// restores nothing.
func TestRestoreHandlesLost(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	good := func(r *Replayer) HandleRecord {
		applyAll(t, r, &wire.Create{Path: "f", Handle: 1, Mode: 0o644, Mtime: tA, DirMtime: tA})
		rec, err := r.HandleRecord(1)
		if err != nil {
			t.Fatal(err)
		}
		applyAll(t, r, &wire.Release{Handle: 1})
		return rec
	}
	dirHandle, _, err := unix.NameToHandleAt(unix.AT_FDCWD, filepath.Join(root, "d"), 0)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string]HandleRecord{
		"no file handle":       {Handle: 2},
		"file handle too long": {Handle: 2, FH: make([]byte, MaxFileHandleLen+1)},
		"a directory":          {Handle: 2, FHType: dirHandle.Type(), FH: dirHandle.Bytes()},
		"handle 0":             {Handle: 0, Gone: true},
	}
	for name, rec := range bad {
		t.Run(name, func(t *testing.T) {
			r := newTestReplayer(t, root, Options{})
			ok := good(r)
			fds := openFds(t)
			restored, gone, err := r.RestoreHandles([]HandleRecord{ok, rec})
			if !errors.Is(err, ErrHandlesLost) {
				t.Errorf("err = %v, want ErrHandlesLost", err)
			}
			if restored != 0 || gone != 0 || r.NumHandles() != 0 {
				t.Errorf("restored %d, gone %d, %d handles open after a failed restore", restored, gone, r.NumHandles())
			}
			if n := openFds(t); n != fds {
				t.Errorf("%d fds open, %d before", n, fds)
			}
		})
	}
}
