package replayer

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

func TestNewRejectsNonDirectory(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{filepath.Join(dir, "missing"), file} {
		if r, err := New(root, Options{}); err == nil {
			r.Close()
			t.Errorf("New(%q) succeeded", root)
		}
	}
}

func TestCloseTwiceAndUseAfterClose(t *testing.T) {
	r, err := New(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(&wire.Create{Path: "f", Handle: 1, Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if err := r.Apply(&wire.Mkdir{Path: "d", Mode: 0o755}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("apply after close: %v, want os.ErrClosed", err)
	}
	if err := r.Sync(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("sync after close: %v, want os.ErrClosed", err)
	}
	if n := r.NumHandles(); n != 0 {
		t.Errorf("%d handles after close", n)
	}
}

// strangeOp is an op type the replayer does not know.
type strangeOp struct{}

func (strangeOp) Type() wire.OpType      { return wire.OpType(200) }
func (strangeOp) Append(b []byte) []byte { return b }

func TestUnknownOpRefused(t *testing.T) {
	r := newTestReplayer(t, t.TempDir(), Options{})
	for _, op := range []wire.Op{nil, strangeOp{}} {
		if err := r.Apply(op); !errors.Is(err, wire.ErrRefused) {
			t.Errorf("Apply(%#v): %v, want wire.ErrRefused", op, err)
		}
	}
}

func TestErrorsNameOpAndWrapCause(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	if err := r.Apply(&wire.Mkdir{Path: "d", Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		op   wire.Op
		want error
		msg  string
	}{
		{&wire.Open{Path: "missing", Handle: 1}, fs.ErrNotExist, `apply open "missing"`},
		{&wire.Unlink{Path: "d"}, unix.EISDIR, `apply unlink "d"`},
		{&wire.Create{Path: "nodir/f", Handle: 1}, fs.ErrNotExist, `apply create "nodir/f"`},
		{&wire.Rename{OldPath: "nope", NewPath: "x"}, fs.ErrNotExist, `apply rename "nope" -> "x"`},
	}
	for _, c := range cases {
		err := r.Apply(c.op)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", describe(c.op), err, c.want)
		}
		if err != nil && !strings.HasPrefix(err.Error(), c.msg) {
			t.Errorf("error %q does not start with %q", err, c.msg)
		}
	}
}

// TestSyncConcurrentWithApply: Sync may come from another goroutine (a
// durability timer) while ops are applied; -race checks the locking.
func TestSyncConcurrentWithApply(t *testing.T) {
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	wg.Go(func() {
		for range 20 {
			if err := r.Sync(); err != nil {
				errs <- err
				return
			}
		}
	})
	omit := wire.Time{Omit: true}
	for i := range 50 {
		ops := []wire.Op{
			&wire.Create{Path: "f", Handle: 1, Flags: wireOExcl, Mode: 0o644, Mtime: omit, DirMtime: omit},
			&wire.Write{Handle: 1, Off: int64(i), Data: []byte("x"), Mtime: omit},
			&wire.Release{Handle: 1},
		}
		if i%10 == 0 {
			ops = append(ops, &wire.Sync{})
		}
		for _, op := range ops {
			if err := r.Apply(op); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}
