package replayer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

func TestResyncRepairsEveryDifference(t *testing.T) {
	requireRoot(t)
	for _, chunk := range []int{3, wire.MaxResyncEntries} {
		t.Run(fmt.Sprintf("chunk %d", chunk), func(t *testing.T) {
			ref, replica := t.TempDir(), t.TempDir()
			plant(t, ref, replica, false)
			r := newTestReplayer(t, replica, Options{Chown: true, AllowSetuid: true})
			m := newPassMaster(t, ref, r, false, chunk)
			m.run(true)
			requireSameTree(t, ref, replica)
			if got := m.blocksSent["f_content"]; !slices.Equal(got, []uint64{1}) {
				t.Errorf("f_content: blocks sent %v, want only the changed block [1]", got)
			}
			if len(m.diffs) == 0 {
				t.Error("a repair pass that changed the tree reported no differences")
			}
			if r.pass != nil || r.tolerant {
				t.Error("pass state or tolerant mode left after ResyncEnd")
			}

			// A Verify pass now finds nothing.
			v := newPassMaster(t, ref, r, true, chunk)
			v.run(false)
			if len(v.diffs) != 0 {
				t.Errorf("verify after repair: %v", v.diffs)
			}
			if mm := v.rootMismatches(); len(mm) != 0 {
				t.Errorf("verify after repair: contents differ in %v", mm)
			}
			if len(v.roots) == 0 {
				t.Error("verify sent no root hashes")
			}
		})
	}
}

func TestResyncVerifyChangesNothingAndReportsAll(t *testing.T) {
	requireRoot(t)
	ref, replica := t.TempDir(), t.TempDir()
	want := plant(t, ref, replica, true)
	before := snapshot(t, replica)
	r := newTestReplayer(t, replica, Options{Chown: true, AllowSetuid: true})
	m := newPassMaster(t, ref, r, true, 3)
	m.run(false)
	if d := diffTrees(before, snapshot(t, replica)); len(d) != 0 {
		t.Errorf("a Verify pass changed the slave's tree:\n%s", strings.Join(d, "\n"))
	}
	for _, w := range want {
		if !slices.ContainsFunc(m.diffs, func(d wire.Difference) bool {
			return d.Path == w.path && strings.HasPrefix(d.What, w.prefix)
		}) {
			t.Errorf("not reported: %q %s", w.path, w.prefix)
		}
	}
	// Nothing else, but what lies in or is a directory missing here.
	for _, d := range m.diffs {
		planted := slices.ContainsFunc(want, func(w expectDiff) bool {
			return d.Path == w.path && strings.HasPrefix(d.What, w.prefix)
		})
		inMissing := strings.HasPrefix(d.Path, "dir_missing/") || d.Path == "kind_d2f" && d.What == "missing"
		if !planted && !inMissing {
			t.Errorf("reported, not planted: %q %s", d.Path, d.What)
		}
	}
	wantRoots := []string{"f_content", "f_size", "f_sneaky", "s2"}
	if got := m.rootMismatches(); !slices.Equal(got, wantRoots) {
		t.Errorf("root hashes differ for %v, want %v", got, wantRoots)
	}
	for id, hs := range m.hashes {
		if len(hs) != 0 {
			t.Errorf("file %d: a Verify pass sent %d block hashes, want the root alone", id, len(hs))
		}
	}
}

// sparseFile makes a file of size bytes holding data only at the given
// blocks.
func sparseFile(t *testing.T, p string, size int64, blocks map[int64][]byte) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for i, b := range blocks {
		if _, err := f.WriteAt(b, i*wire.ResyncBlockSize); err != nil {
			t.Fatal(err)
		}
	}
}

func fileHashesOf(t *testing.T, p string) []wire.Hash {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	var hs []wire.Hash
	if err := FileHashes(fd, st.Size, func(i uint64, h wire.Hash) error {
		if i != uint64(len(hs)) {
			t.Fatalf("block %d after %d", i, len(hs))
		}
		hs = append(hs, h)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return hs
}

// A large sparse file with one changed block: the slave's hashes differ
// in that block alone, come in several replies (more blocks than
// MaxResyncHashes), only that block travels, and holes stay holes.
func TestResyncSparseFileOneBlock(t *testing.T) {
	ref, replica := t.TempDir(), t.TempDir()
	const blocks = wire.MaxResyncHashes + 3
	size := int64(blocks)*wire.ResyncBlockSize - 100
	data := map[int64][]byte{
		0:                        randomData(10, 4096),
		1000:                     randomData(11, wire.ResyncBlockSize),
		wire.MaxResyncHashes:     randomData(12, 100),
		wire.MaxResyncHashes + 2: randomData(13, 500),
	}
	sparseFile(t, filepath.Join(ref, "big"), size, data)
	data[1000] = randomData(14, wire.ResyncBlockSize)
	sparseFile(t, filepath.Join(replica, "big"), size, data)
	for _, d := range []string{ref, replica} {
		treeBuilder{t, d}.stampAll()
	}
	treeBuilder{t, replica}.mtime("big", 99, 9)

	r := newTestReplayer(t, replica, Options{Chown: os.Geteuid() == 0})
	m := newPassMaster(t, ref, r, false, wire.MaxResyncEntries)
	m.run(false)

	if m.replies != 2 {
		t.Errorf("%d ResyncHashes replies for %d blocks, want 2", m.replies, blocks)
	}
	if got := m.blocksSent["big"]; !slices.Equal(got, []uint64{1000}) {
		t.Errorf("blocks sent %v, want [1000]", got)
	}
	want, got := fileHashesOf(t, filepath.Join(ref, "big")), fileHashesOf(t, filepath.Join(replica, "big"))
	if !slices.Equal(want, got) {
		t.Error("contents differ after the pass")
	}
	var ws, gs unix.Stat_t
	if err := unix.Stat(filepath.Join(ref, "big"), &ws); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(filepath.Join(replica, "big"), &gs); err != nil {
		t.Fatal(err)
	}
	if gs.Size != ws.Size || gs.Mtim != ws.Mtim {
		t.Errorf("size %d mtime %v, want %d %v", gs.Size, gs.Mtim, ws.Size, ws.Mtim)
	}
	// Data in 4 blocks: a filled hole would be gigabytes.
	if gs.Blocks*512 > 8*wire.ResyncBlockSize {
		t.Errorf("replica uses %d bytes: holes were filled", gs.Blocks*512)
	}
}

// A directory described in several items while live ops run: a name a
// live op creates in the range of an item already applied is kept (even
// one the slave had as an extra there), a stale name the master creates
// again is kept, extras in every range go.
func TestResyncChunkedDirWithLiveOps(t *testing.T) {
	replica := t.TempDir()
	om := newMaster(t, replica, Options{Chown: os.Geteuid() == 0})
	om.mkdir("d", 0o755, 0, 0)
	for _, n := range []string{"a1", "a2", "c1", "c2", "e1"} {
		om.create("d/"+n, 0, 0, 0o644, 0, 0)
	}
	s := treeBuilder{t, replica}
	s.file("d/a15", []byte("extra in item 1's range"), 0o644)
	s.file("d/b_stale", []byte("stale contents"), 0o644)
	s.file("d/d_extra", []byte("extra in item 3's range"), 0o644)
	s.file("d/z_extra", []byte("extra after every name"), 0o644)

	pm := newPassMaster(t, om.ref, om.r, false, 2)
	pm.between = func(dirPath string, item int) {
		if dirPath == "d" && item == 0 {
			// Between items 1 and 2: names in item 1's range (one the
			// slave had as an extra, removed at item 1), and one the
			// slave has stale in item 2's range.
			om.create("d/a0", 0, 0, 0o644, 0, 0)
			om.create("d/a15", 0, unix.O_EXCL, 0o640, 0, 0)
			om.create("d/b_stale", 5, unix.O_EXCL, 0o600, 0, 0)
			om.write(5, 0, []byte("new"))
			om.release(5)
		}
	}
	pm.run(true)
	requireSameTree(t, om.ref, replica)
	for _, p := range []string{"d/a15", "d/d_extra", "d/z_extra"} {
		if !slices.ContainsFunc(pm.diffs, func(d wire.Difference) bool { return d.Path == p && d.What == "extra" }) {
			t.Errorf("%s not reported as extra", p)
		}
	}
}

func TestResyncDiffsBounded(t *testing.T) {
	ref, replica := t.TempDir(), t.TempDir()
	const extras = wire.MaxResyncDiffs + 10
	for i := range extras {
		if err := os.WriteFile(filepath.Join(replica, fmt.Sprintf("x%04d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := newTestReplayer(t, replica, Options{})
	m := newPassMaster(t, ref, r, true, wire.MaxResyncEntries)
	m.run(false)
	if len(m.diffs) != wire.MaxResyncDiffs {
		t.Fatalf("%d differences in one ResyncDirDone, want %d", len(m.diffs), wire.MaxResyncDiffs)
	}
	// Plus the root's mtime, which differs too.
	if last := m.diffs[len(m.diffs)-1]; last.What != fmt.Sprintf("and %d more differences", extras+1-(wire.MaxResyncDiffs-1)) {
		t.Errorf("last difference %+v", last)
	}
}

func TestResyncProtocolErrors(t *testing.T) {
	none := func(wire.ResyncReply) error { return nil }
	file := func(name string, id uint64) wire.Entry {
		return wire.Entry{Name: name, Kind: wire.KindFile, FileID: id, Attr: wire.Attr{Mode: 0o644}}
	}
	cases := []struct {
		name  string
		items []wire.ResyncItem
	}{
		{"no pass", []wire.ResyncItem{&wire.ResyncDir{Pass: 1, Final: true}}},
		{"another pass", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1}, &wire.ResyncEnd{Pass: 2}}},
		{"rebase and verify", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1, Rebase: true, Verify: true}}},
		{"unknown file id", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1},
			&wire.ResyncData{Pass: 1, FileID: 9, Len: 1, Data: []byte("x")}}},
		{"close of unknown file id", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1}, &wire.ResyncClose{Pass: 1, FileID: 9}}},
		{"data in a verify pass", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1, Verify: true},
			&wire.ResyncDir{Pass: 1, DirID: 1, Entries: []wire.Entry{file("f", 3)}, Final: true},
			&wire.ResyncData{Pass: 1, FileID: 3, Len: 1, Data: []byte("x")}}},
		{"entries out of order", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1},
			&wire.ResyncDir{Pass: 1, DirID: 1, Entries: []wire.Entry{file("b", 1), file("a", 2)}}}},
		{"entries out of order across items", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1},
			&wire.ResyncDir{Pass: 1, DirID: 1, Entries: []wire.Entry{file("b", 1)}},
			&wire.ResyncDir{Pass: 1, DirID: 1, Entries: []wire.Entry{file("b", 2)}}}},
		{"dir id with another path", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1},
			&wire.ResyncDir{Pass: 1, DirID: 1},
			&wire.ResyncDir{Pass: 1, DirID: 1, Path: "x"}}},
		{"name with a slash", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1},
			&wire.ResyncDir{Pass: 1, DirID: 1, Entries: []wire.Entry{file("a/b", 1)}}}},
		{"name dot-dot", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1},
			&wire.ResyncDir{Pass: 1, DirID: 1, Entries: []wire.Entry{file("..", 1)}}}},
		{"file without a file id", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1},
			&wire.ResyncDir{Pass: 1, DirID: 1, Entries: []wire.Entry{file("f", 0)}}}},
		{"unknown kind", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1},
			&wire.ResyncDir{Pass: 1, DirID: 1, Entries: []wire.Entry{{Name: "dev", Kind: 9}}}}},
		{"handles without rebase", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1},
			&wire.ResyncHandles{Pass: 1, Handles: []wire.HandleRef{{Handle: 1, Path: "f"}}}}},
		{"handle 0", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1, Rebase: true},
			&wire.ResyncHandles{Pass: 1, Handles: []wire.HandleRef{{Handle: 0, Path: "f"}}}}},
		{"dir path escaping", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1}, &wire.ResyncDir{Pass: 1, DirID: 1, Path: "../x"}}},
		{"negative offset", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1},
			&wire.ResyncDir{Pass: 1, DirID: 1, Entries: []wire.Entry{{Name: "f", Kind: wire.KindFile, FileID: 3, Attr: wire.Attr{Size: 1}}}, Final: true},
			&wire.ResyncData{Pass: 1, FileID: 3, Off: -1, Len: 1, Data: []byte("x")}}},
		{"data length mismatch", []wire.ResyncItem{&wire.ResyncBegin{Pass: 1},
			&wire.ResyncDir{Pass: 1, DirID: 1, Entries: []wire.Entry{{Name: "f", Kind: wire.KindFile, FileID: 3, Attr: wire.Attr{Size: 1}}}, Final: true},
			&wire.ResyncData{Pass: 1, FileID: 3, Len: 2, Data: []byte("x")}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestReplayer(t, t.TempDir(), Options{})
			var err error
			for i, it := range tc.items {
				if err = r.ApplyItem(it, none); err != nil {
					if i != len(tc.items)-1 {
						t.Fatalf("item %d of %d: %v", i+1, len(tc.items), err)
					}
				}
			}
			if !errors.Is(err, ErrBadResync) {
				t.Errorf("err = %v, want ErrBadResync", err)
			}
		})
	}
}

// ResyncHandles opens every listed path under its handle, creating what
// is missing and replacing what is in the way; unlisted handles are
// nameless files whose writes change nothing, until a new run.
func TestResyncHandles(t *testing.T) {
	root := t.TempDir()
	b := treeBuilder{t, root}
	b.file("existing", []byte("keep me"), 0o644)
	b.dir("dirhere", 0o755)
	b.file("dirhere/inside", []byte("x"), 0o644)
	b.file("old", nil, 0o644)
	var events []string
	r := newTestReplayer(t, root, Options{OnHandle: func(h uint64, rec *HandleRecord) {
		events = append(events, fmt.Sprintf("%d:%v", h, rec != nil))
	}})
	applyAll(t, r, &wire.Open{Path: "old", Handle: 7, Mtime: wire.Time{Omit: true}})
	none := func(wire.ResyncReply) error { return nil }
	for _, it := range []wire.ResyncItem{
		&wire.ResyncBegin{Pass: 3, Rebase: true},
		&wire.ResyncHandles{Pass: 3, Handles: []wire.HandleRef{{Handle: 1, Path: "a/b/new"}, {Handle: 2, Path: "existing"}}},
		&wire.ResyncHandles{Pass: 3, Handles: []wire.HandleRef{{Handle: 3, Path: "dirhere"}}},
	} {
		if err := r.ApplyItem(it, none); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.NumHandles(); n != 3 {
		t.Errorf("%d handles, want 3 (the unlisted one closed)", n)
	}
	wantEvents := []string{"7:true", "7:false", "1:true", "2:true", "3:true"}
	if !slices.Equal(events, wantEvents) {
		t.Errorf("OnHandle events %v, want %v", events, wantEvents)
	}
	applyAll(t, r,
		&wire.Write{Handle: 1, Off: 0, Data: []byte("one"), Mtime: wire.Time{Omit: true}},
		&wire.Write{Handle: 2, Off: 7, Data: []byte("!"), Mtime: wire.Time{Omit: true}},
		&wire.Write{Handle: 3, Off: 0, Data: []byte("three"), Mtime: wire.Time{Omit: true}},
		// Handle 7 was not listed: the master's file has no name.
		&wire.Write{Handle: 7, Off: 0, Data: []byte("lost"), Mtime: wire.Time{Omit: true}},
		&wire.Setattr{Handle: 7, Valid: wire.SetSize, Size: 100, Mtime: wire.Time{Omit: true}},
	)
	for p, want := range map[string]string{"a/b/new": "one", "existing": "keep me!", "dirhere": "three", "old": ""} {
		if got := readFile(t, filepath.Join(root, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if err := r.ApplyItem(&wire.ResyncEnd{Pass: 3}, none); err != nil {
		t.Fatal(err)
	}
	// Still nameless after the pass; a new run forgets it.
	applyAll(t, r, &wire.Write{Handle: 7, Data: []byte("x"), Mtime: wire.Time{Omit: true}}, &wire.RunStart{})
	if err := r.Apply(&wire.Write{Handle: 7, Data: []byte("x"), Mtime: wire.Time{Omit: true}}); !errors.Is(err, ErrUnknownHandle) {
		t.Errorf("write through an unknown handle in a new run: %v, want ErrUnknownHandle", err)
	}
	if s := r.Skipped(); s != 0 {
		t.Errorf("%d ops skipped, want 0", s)
	}
}

// A new ResyncBegin abandons the pass in progress and its fds.
func TestResyncBeginAbandonsPass(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newTestReplayer(t, root, Options{})
	before := openFds(t)
	none := func(wire.ResyncReply) error { return nil }
	for _, it := range []wire.ResyncItem{
		&wire.ResyncBegin{Pass: 1},
		&wire.ResyncDir{Pass: 1, DirID: 1, Entries: []wire.Entry{{Name: "f", Kind: wire.KindFile, FileID: 1, Attr: wire.Attr{Size: 10, Mode: 0o644}}}},
		&wire.ResyncBegin{Pass: 2},
	} {
		if err := r.ApplyItem(it, none); err != nil {
			t.Fatal(err)
		}
	}
	if after := openFds(t); after != before {
		t.Errorf("%d fds open, %d before the first pass", after, before)
	}
	if err := r.ApplyItem(&wire.ResyncClose{Pass: 1, FileID: 1}, none); !errors.Is(err, ErrBadResync) {
		t.Errorf("item of the abandoned pass: %v, want ErrBadResync", err)
	}
}

// The slave links two names the master keeps apart, and the name left on
// the old inode has the master's size and mtime: its contents are still
// compared.
func TestResyncSplitsHardLinks(t *testing.T) {
	ref, replica := t.TempDir(), t.TempDir()
	m, s := treeBuilder{t, ref}, treeBuilder{t, replica}
	m.file("s1", []byte("one"), 0o644)
	m.file("s2", []byte("two"), 0o644)
	s.file("s1", []byte("one"), 0o644)
	s.link("s1", "s2")
	for _, b := range []treeBuilder{m, s} {
		b.mtime("s1", 100, 1)
		b.mtime("s2", 100, 1)
		b.mtime("", 200, 2)
	}
	r := newTestReplayer(t, replica, Options{Chown: os.Geteuid() == 0})
	newPassMaster(t, ref, r, false, wire.MaxResyncEntries).run(false)
	requireSameTree(t, ref, replica)
}
