package replayer

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// memSuspects is a SuspectLog in memory (the slave's is a file in its
// state dir: cmd/tdfs-slave).
type memSuspects struct {
	inos  [][2]uint64
	all   bool
	clear int
}

func (m *memSuspects) Add(ino [2]uint64) error { m.inos = append(m.inos, ino); return nil }
func (m *memSuspects) All() error              { m.all = true; return nil }
func (m *memSuspects) Clear() error            { m.inos, m.all = nil, false; m.clear++; return nil }

// A rebase pass is cut short after an op appended to a file whose stale
// contents the pass had not replaced yet: the file has the master's size
// and mtime. The next pass, in this process or in the next one (the
// suspects reloaded from their log), must compare its contents anyway.
func TestSuspectsOutliveAnInterruptedPass(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(map[bool]string{false: "same process", true: "restarted"}[restart], func(t *testing.T) {
			root := t.TempDir()
			stale := bytes.Repeat([]byte("S"), 2000)
			if err := os.WriteFile(filepath.Join(root, "f"), stale, 0o644); err != nil {
				t.Fatal(err)
			}
			log := &memSuspects{}
			r := newTestReplayer(t, root, Options{Suspects: log})
			none := func(wire.ResyncReply) error { return nil }
			mt := wire.Time{Sec: time.Now().Unix(), Nsec: 5}
			if err := r.ApplyItem(&wire.ResyncBegin{Pass: 1, Rebase: true}, none); err != nil {
				t.Fatal(err)
			}
			// The master appends 9 bytes to its f (2000 other bytes): the op
			// reaches the slave's stale copy.
			applyAll(t, r, &wire.Open{Path: "f", Handle: 1, Mtime: wire.Time{Omit: true}},
				&wire.Write{Handle: 1, Off: 2000, Data: []byte("appended!"), Mtime: mt},
				&wire.Release{Handle: 1})
			if len(log.inos) != 1 {
				t.Fatalf("suspects logged: %v, want f's inode", log.inos)
			}
			// Pass 1 is cut short (no ResyncEnd).
			if restart {
				r.Close()
				r = newTestReplayer(t, root, Options{Suspects: log})
				r.SetSuspects(log.inos, log.all)
			}
			var hashed []uint64
			reply := func(rp wire.ResyncReply) error {
				if h, ok := rp.(*wire.ResyncHashes); ok {
					hashed = append(hashed, h.FileID)
				}
				return nil
			}
			for _, it := range []wire.ResyncItem{
				&wire.ResyncBegin{Pass: 2, Rebase: true},
				&wire.ResyncDir{Pass: 2, DirID: 1, Final: true, Attr: wire.Attr{Mode: 0o755, Mtime: wire.Time{Omit: true}},
					Entries: []wire.Entry{{Name: "f", Kind: wire.KindFile, FileID: 7, Attr: wire.Attr{Mode: 0o644, Size: 2009, Mtime: mt}}}},
			} {
				if err := r.ApplyItem(it, reply); err != nil {
					t.Fatal(err)
				}
			}
			if len(hashed) != 1 || hashed[0] != 7 {
				t.Fatalf("hashes answered for files %v: the suspect file with the master's size and mtime was not compared", hashed)
			}
			for _, it := range []wire.ResyncItem{
				&wire.ResyncClose{Pass: 2, FileID: 7, Size: 2009, Mtime: mt},
				&wire.ResyncEnd{Pass: 2},
			} {
				if err := r.ApplyItem(it, none); err != nil {
					t.Fatal(err)
				}
			}
			if n, all := r.Suspects(); n != 0 || all || log.clear != 1 || len(log.inos) != 0 {
				t.Errorf("after the pass ended: %d suspects (all %v), log %+v", n, all, log)
			}
		})
	}
}

// Outside a rebase pass (the tree in sync), ops mark nothing.
func TestNoSuspectsWhenInSync(t *testing.T) {
	root := t.TempDir()
	log := &memSuspects{}
	r := newTestReplayer(t, root, Options{Suspects: log})
	applyAll(t, r, &wire.Create{Path: "f", Handle: 1, Mode: 0o644, Mtime: wire.Time{Omit: true}, DirMtime: wire.Time{Omit: true}},
		&wire.Write{Handle: 1, Data: []byte("x"), Mtime: wire.Time{Omit: true}},
		&wire.Release{Handle: 1})
	if n, _ := r.Suspects(); n != 0 || len(log.inos) != 0 {
		t.Errorf("%d suspects, log %v", n, log.inos)
	}
	// After a crash of the host, every file is.
	if err := r.SuspectAll(); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(root, "f"), &st); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	s := r.isSuspect(&st)
	r.mu.Unlock()
	if !s || !log.all {
		t.Errorf("SuspectAll: suspect %v, logged %v", s, log.all)
	}
}
