package mirrorfs_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tdfs/tdfs/mirrorfs"
	"github.com/tdfs/tdfs/wire"
)

// Stale slave bytes that a pass must not leave behind (found by review):
// a FileID superseded by a later listing of the same slave file, and the
// tail of a short last block when the file grows before its Close.

// A file listed (FileID 1) is replaced by a rename the slave cannot apply
// (its source is not listed yet), then written to; its directory is
// listed again (FileID 2, the same slave inode). FileID 1's items, late
// because its hashes were slow to come back, must not land on the inode
// FileID 2 compared: neither its blocks (the old file still open on the
// master) nor its Close (the old file gone).
func TestResyncSupersededFileID(t *testing.T) {
	for _, keepOpen := range []bool{false, true} {
		t.Run(map[bool]string{false: "gone", true: "still-open"}[keepOpen], func(t *testing.T) {
			bothSlaves(t, func(t *testing.T, real bool) { testSupersededFileID(t, keepOpen, real) })
		})
	}
}

func testSupersededFileID(t *testing.T, keepOpen, real bool) {
	resetHooks(t)
	r := newRig(t, 1, 8<<20, func(back string) {
		must(t, os.MkdirAll(filepath.Join(back, "D"), 0o755))
		must(t, os.MkdirAll(filepath.Join(back, "E"), 0o755))
		must(t, os.WriteFile(filepath.Join(back, "D/a"), bytes.Repeat([]byte("A"), 1<<20), 0o644))
		must(t, os.WriteFile(filepath.Join(back, "E/b"), bytes.Repeat([]byte("B"), 512<<10), 0o644))
	})
	s := r.slaveWith(0, true, real, nil)
	var holder *os.File
	var once sync.Once
	mirrorfs.SetResyncWalkHook(func(dir string) {
		if dir != "D" {
			return
		}
		once.Do(func() {
			if keepOpen {
				var err error
				holder, err = os.Open(r.m("D/a"))
				must(t, err)
			}
			must(t, os.Rename(r.m("E/b"), r.m("D/a")))
			f, err := os.OpenFile(r.m("D/a"), os.O_WRONLY, 0)
			must(t, err)
			_, err = f.WriteAt(bytes.Repeat([]byte("W"), 128<<10), 512<<10)
			must(t, err)
			must(t, f.Close())
		})
	})
	defer func() {
		if holder != nil {
			holder.Close()
		}
	}()
	// The slave's replies, in order, held back until D was listed twice.
	fwd := make(chan wire.ResyncReply, 1<<16)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		var held []wire.ResyncReply
		released := false
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if !released {
				n := 0
				for _, it := range itemsOf[*wire.ResyncDir](r.recs[0].items()) {
					if it.Path == "D" && it.Final {
						n++
					}
				}
				if n >= 2 {
					released = true
					for _, h := range held {
						fwd <- h
					}
					held = nil
				}
			}
			select {
			case x := <-s.replies:
				if released {
					fwd <- x
				} else {
					held = append(held, x)
				}
			case <-tick.C:
			case <-stop:
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := r.srv.RunPass(ctx, wire.PassOptions{Pass: 1, Rebase: true}, r.recs[0], fwd); err != nil {
		t.Fatal(err)
	}
	if n := len(itemsOf[*wire.ResyncDir](r.recs[0].items())); n < 2 {
		t.Fatalf("D was listed %d times: the test did not set up the race", n)
	}
	s.caughtUp()
	if d := treeDiff(t, r.back, s.root); d != "" {
		t.Errorf("trees differ after the pass:\n%s", d)
		dumpEvents(t, r.recs[0])
	}
	s.check(t)
}

// hookSink runs before() in the Reserve that follows the first ResyncData
// of FileID id (Reserve is called without mirrorfs locks).
type hookSink struct {
	*recorder
	mu     sync.Mutex
	id     uint64
	armed  bool
	done   bool
	before func()
}

func (h *hookSink) Emit(it wire.ResyncItem, n int64) {
	if d, ok := it.(*wire.ResyncData); ok {
		h.mu.Lock()
		if d.FileID == h.id && !h.done {
			h.armed = true
		}
		h.mu.Unlock()
	}
	h.recorder.Emit(it, n)
}

func (h *hookSink) Reserve(ctx context.Context, n int64) error {
	h.mu.Lock()
	run := h.armed && !h.done
	if run {
		h.done = true
	}
	h.mu.Unlock()
	if run {
		h.before()
	}
	return h.recorder.Reserve(ctx, n)
}

// The master's file ends inside its last block and the slave's stale copy
// is longer. The short last block is sent, then the file is extended
// (truncate up) before ResyncClose: the slave's stale bytes between the
// master's old end and its own must not stay.
func TestResyncShortLastBlockExtendedBeforeClose(t *testing.T) {
	bothSlaves(t, func(t *testing.T, real bool) {
		resetHooks(t)
		r := newRig(t, 1, 8<<20, func(back string) {
			must(t, os.WriteFile(filepath.Join(back, "f"), bytes.Repeat([]byte("M"), 100), 0o644))
		})
		s := r.slaveWith(0, true, real, func(root string) {
			must(t, os.WriteFile(filepath.Join(root, "f"), bytes.Repeat([]byte("S"), 200), 0o644))
		})
		ran := false
		h := &hookSink{recorder: r.recs[0], id: 1, before: func() {
			ran = true
			must(t, os.Truncate(r.m("f"), 1000))
		}}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := r.srv.RunPass(ctx, wire.PassOptions{Pass: 1, Rebase: true}, h, s.replies); err != nil {
			t.Fatal(err)
		}
		if !ran {
			t.Fatal("no block of f was sent: the test did not set up the race")
		}
		s.caughtUp()
		if d := treeDiff(t, r.back, s.root); d != "" {
			t.Errorf("trees differ after the pass:\n%s", d)
			dumpEvents(t, r.recs[0])
		}
		s.check(t)
	})
}

// A stale copy one byte longer than the master's file, whose mtime an op
// of the pass set to the master's: the quick check (size, mtime) must not
// pass it (the old trick of announcing Size+1 for touched files did).
func TestResyncTouchedStaleCopyOneByteLonger(t *testing.T) {
	bothSlaves(t, func(t *testing.T, real bool) {
		resetHooks(t)
		mt := time.Unix(1700000000, 0)
		r := newRig(t, 1, 8<<20, func(back string) {
			must(t, os.MkdirAll(filepath.Join(back, "z"), 0o755))
			must(t, os.WriteFile(filepath.Join(back, "z/f"), bytes.Repeat([]byte("M"), 100), 0o644))
		})
		s := r.slaveWith(0, true, real, func(root string) {
			must(t, os.MkdirAll(filepath.Join(root, "z"), 0o755))
			must(t, os.WriteFile(filepath.Join(root, "z/f"), bytes.Repeat([]byte("S"), 101), 0o644))
		})
		var once sync.Once
		mirrorfs.SetResyncWalkHook(func(dir string) {
			if dir == "" {
				once.Do(func() { must(t, os.Chtimes(r.m("z/f"), mt, mt)) })
			}
		})
		if _, err := r.resync(0, s, wire.PassOptions{Pass: 1, Rebase: true}); err != nil {
			t.Fatal(err)
		}
		s.caughtUp()
		if d := treeDiff(t, r.back, s.root); d != "" {
			t.Errorf("trees differ after the pass:\n%s", d)
			dumpEvents(t, r.recs[0])
		}
		s.check(t)
	})
}

// Without file handles (a backing filesystem that cannot export them,
// such as overlayfs without nfs_export) the pass holds a descriptor per
// listed file until the slave answers for it. One directory of more files
// than the pass may hold descriptors must still resync: the slave answers
// each item of a directory listed in several (a Part reply), and the
// master lets go of what it did not ask about in between.
func TestResyncBigDirWithoutFileHandles(t *testing.T) {
	if testing.Short() {
		t.Skip("9,000 files")
	}
	// The real slave only: the reference applier takes half a minute
	// over 9,000 entries in one directory.
	func(t *testing.T, real bool) {
		resetHooks(t)
		mirrorfs.SetResyncNoFileHandles(true)
		r := newRig(t, 1, 64<<20, func(back string) {
			must(t, os.MkdirAll(filepath.Join(back, "big"), 0o755))
			for i := range 9000 {
				var data []byte
				if i%1000 == 0 {
					data = []byte(fmt.Sprint("file ", i))
				}
				must(t, os.WriteFile(filepath.Join(back, "big", fmt.Sprintf("f%05d", i)), data, 0o644))
			}
		})
		s := r.slaveWith(0, true, real, nil)
		if _, err := r.resync(0, s, wire.PassOptions{Pass: 1, Rebase: true}); err != nil {
			t.Fatalf("Resync: %v", err)
		}
		s.caughtUp()
		if d := treeDiff(t, r.back, s.root); d != "" {
			t.Errorf("trees differ after the pass:\n%s", d)
		}
		s.check(t)
	}(t, true)
}
