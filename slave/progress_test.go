package slave

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/tdfs/tdfs/replayer"
)

func mustOpenProgress(t *testing.T, dir, boot string) (*progress, progressState) {
	t.Helper()
	p, st, err := openProgressAt(dir, boot)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.close() })
	return p, st
}

func mustProg(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var (
	recA = replayer.HandleRecord{Handle: 7, FHType: 1, FH: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
	recB = replayer.HandleRecord{Handle: 9, Gone: true}
	recC = replayer.HandleRecord{Handle: 1 << 60, FHType: -3, FH: make([]byte, replayer.MaxFileHandleLen)}
)

func handleMap(recs ...replayer.HandleRecord) map[uint64]replayer.HandleRecord {
	m := make(map[uint64]replayer.HandleRecord)
	for _, r := range recs {
		m[r.Handle] = r
	}
	return m
}

func TestProgressRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p, st := mustOpenProgress(t, dir, "boot-1")
	if st.Valid || st.Applied != 0 || len(st.Handles) != 0 {
		t.Fatalf("new log recovered %+v", st)
	}
	for seq := uint64(1); seq <= 5; seq++ {
		mustProg(t, p.applied(seq))
	}
	mustProg(t, p.handleOpened(recA))
	mustProg(t, p.handleOpened(recB))
	mustProg(t, p.handleOpened(recC))
	mustProg(t, p.handleReleased(recA.Handle))
	mustProg(t, p.applied(6))
	mustProg(t, p.close())

	// Restarts without an op in between keep what was recovered.
	for i := range 3 {
		p, st := mustOpenProgress(t, dir, "boot-1")
		want := progressState{BootID: "boot-1", SameBoot: true, Valid: true, Applied: 6, Handles: handleMap(recB, recC)}
		if !reflect.DeepEqual(st, want) {
			t.Fatalf("open %d recovered %+v, want %+v", i, st, want)
		}
		mustProg(t, p.close())
	}
	if names := dirNames(t, dir); !reflect.DeepEqual(names, []string{appliedFile, progressFile}) {
		t.Errorf("state dir holds %v", names)
	}
}

// A log of another boot is reported, not believed, and not carried over.
func TestProgressOtherBoot(t *testing.T) {
	dir := t.TempDir()
	p, _ := mustOpenProgress(t, dir, "boot-1")
	mustProg(t, p.applied(42))
	mustProg(t, p.handleOpened(recA))
	mustProg(t, p.close())
	p, st := mustOpenProgress(t, dir, "boot-2")
	if !st.Valid || st.SameBoot || st.BootID != "boot-1" || st.Applied != 42 {
		t.Errorf("recovered %+v, want a valid log of boot-1", st)
	}
	mustProg(t, p.close())
	_, st = mustOpenProgress(t, dir, "boot-2")
	if !st.Valid || !st.SameBoot || st.Applied != 0 || len(st.Handles) != 0 {
		t.Errorf("after a restart in boot-2: %+v, want an empty log of this boot", st)
	}
}

func TestProgressRealBootID(t *testing.T) {
	dir := t.TempDir()
	p, _, err := openProgress(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustProg(t, p.applied(3))
	mustProg(t, p.close())
	p, st, err := openProgress(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	if !st.SameBoot || st.Applied != 3 || len(st.BootID) != 36 {
		t.Errorf("recovered %+v", st)
	}
}

// Every prefix of a log recovers the state of the records it holds whole;
// a corrupt byte ends recovery before its record.
func TestProgressTornTail(t *testing.T) {
	dir := t.TempDir()
	p, _ := mustOpenProgress(t, dir, "boot-1")
	p.noMark() // the log's own 'A' records
	path := filepath.Join(dir, progressFile)
	// states[i] is the state once the log is ends[i] bytes long.
	var ends []int64
	var states []progressState
	snap := func(applied uint64, recs ...replayer.HandleRecord) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		ends = append(ends, fi.Size())
		states = append(states, progressState{BootID: "boot-1", SameBoot: true, Valid: true, Applied: applied, Handles: handleMap(recs...)})
	}
	snap(0)
	mustProg(t, p.applied(1))
	snap(1)
	mustProg(t, p.handleOpened(recA))
	snap(1, recA)
	mustProg(t, p.applied(2))
	snap(2, recA)
	mustProg(t, p.handleOpened(recC))
	snap(2, recA, recC)
	mustProg(t, p.handleReleased(recA.Handle))
	snap(2, recC)
	mustProg(t, p.applied(1<<63))
	snap(1<<63, recC)
	mustProg(t, p.close())
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	stateAt := func(n int64) progressState {
		st := progressState{}
		for i, e := range ends {
			if e <= n {
				st = states[i]
			}
		}
		return st
	}
	torn := filepath.Join(t.TempDir(), progressFile)
	for n := range int64(len(full)) + 1 {
		mustProg(t, os.WriteFile(torn, full[:n], 0o600))
		got, err := recoverProgress(torn, "boot-1")
		if err != nil {
			t.Fatal(err)
		}
		want := stateAt(n)
		if !want.Valid {
			want = progressState{}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%d of %d bytes: recovered %+v, want %+v", n, len(full), got, want)
		}
	}
	for i := range int64(len(full)) {
		bad := append([]byte(nil), full...)
		bad[i] ^= 0x40
		mustProg(t, os.WriteFile(torn, bad, 0o600))
		got, err := recoverProgress(torn, "boot-1")
		if err != nil {
			t.Fatal(err)
		}
		// The records before the one holding byte i survive.
		before := int64(0)
		for _, e := range ends {
			if e <= i {
				before = e
			}
		}
		want := stateAt(before)
		if !want.Valid {
			want = progressState{}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("byte %d flipped: recovered %+v, want %+v", i, got, want)
		}
	}
}

// TestProgressReset: a durable point leaves a small log as it is (its
// records replay to the same state) and compacts one that grew.
func TestProgressReset(t *testing.T) {
	dir := t.TempDir()
	p, _ := mustOpenProgress(t, dir, "b")
	for seq := uint64(1); seq <= 100; seq++ {
		mustProg(t, p.applied(seq))
	}
	mustProg(t, p.handleOpened(recA))
	path := filepath.Join(dir, progressFile)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	mustProg(t, p.reset(100, func() []replayer.HandleRecord { t.Error("small log compacted"); return nil }))
	if after, err := os.Stat(path); err != nil || !os.SameFile(before, after) || after.Size() != before.Size() {
		t.Errorf("small log rewritten at a durable point: %v", err)
	}
	// Grown past progressResetSize: compacted to the handles given.
	for i := 0; p.size <= p.compacted+progressResetSize; i++ {
		mustProg(t, p.handleOpened(replayer.HandleRecord{Handle: uint64(1000 + i), FH: []byte("fh")}))
		mustProg(t, p.handleReleased(uint64(1000+i)))
	}
	mustProg(t, p.reset(100, func() []replayer.HandleRecord { return []replayer.HandleRecord{recA, recB} }))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	compact := int64(len(appendRecord(nil, bootBody("b"))) + len(appendRecord(nil, appliedBody(nil, 100))) +
		len(appendRecord(nil, openedBody(nil, recA))) + len(appendRecord(nil, openedBody(nil, recB))))
	if fi.Size() != compact {
		t.Errorf("log of %d bytes after reset, want %d", fi.Size(), compact)
	}
	mustProg(t, p.applied(101))
	mustProg(t, p.close())
	_, st := mustOpenProgress(t, dir, "b")
	if st.Applied != 101 || !reflect.DeepEqual(st.Handles, handleMap(recA, recB)) {
		t.Errorf("recovered %+v", st)
	}
}

// Without the mapped mark: one record per applied op, of a fixed small
// size, and the log compacts itself when it grows.
func TestProgressSizeBounded(t *testing.T) {
	dir := t.TempDir()
	p, _ := mustOpenProgress(t, dir, "b")
	p.noMark()
	path := filepath.Join(dir, progressFile)
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	mustProg(t, p.handleOpened(recA))
	start := size()
	for seq := uint64(1); seq <= 10; seq++ {
		mustProg(t, p.applied(seq))
	}
	if per := (size() - start) / 10; per != 17 || size()-start != 170 {
		t.Errorf("%d bytes per applied record, want 17", per)
	}
	p.maxSize = 1024
	for seq := uint64(11); seq <= 1000; seq++ {
		mustProg(t, p.applied(seq))
		if s := size(); s > p.maxSize+17 {
			t.Fatalf("log of %d bytes, bound %d", s, p.maxSize)
		}
	}
	mustProg(t, p.close())
	_, st := mustOpenProgress(t, dir, "b")
	if st.Applied != 1000 || !reflect.DeepEqual(st.Handles, handleMap(recA)) {
		t.Errorf("recovered %+v after compactions", st)
	}
}

// With the mapped mark, an applied op writes nothing to the log, and a
// process that ends without closing (killed) leaves the last op applied
// to the next one of this boot, not to one of another boot.
func TestProgressAppliedMark(t *testing.T) {
	dir := t.TempDir()
	p, _, err := openProgressAt(dir, "boot-1")
	if err != nil {
		t.Fatal(err)
	}
	if p.mark == nil {
		t.Fatal("the state dir was not mapped")
	}
	path := filepath.Join(dir, progressFile)
	before, _ := os.Stat(path)
	mustProg(t, p.handleOpened(recA))
	for seq := uint64(1); seq <= 10000; seq++ {
		mustProg(t, p.applied(seq))
	}
	after, _ := os.Stat(path)
	if grew := after.Size() - before.Size(); grew != int64(len(appendRecord(nil, openedBody(nil, recA)))) {
		t.Errorf("the log grew %d bytes for one handle and 10,000 applied ops", grew)
	}
	// Killed: no close. The page stays in the page cache.
	p2, st := mustOpenProgress(t, dir, "boot-1")
	if !st.SameBoot || st.Applied != 10000 || !reflect.DeepEqual(st.Handles, handleMap(recA)) {
		t.Errorf("after a kill: recovered %+v, want applied 10000 and handle A", st)
	}
	p.mark.unmap()
	p.f.Close()
	mustProg(t, p2.applied(10001))
	mustProg(t, p2.close())
	_, st = mustOpenProgress(t, dir, "boot-2")
	if st.SameBoot || st.Applied != 10001 {
		t.Errorf("in another boot: recovered %+v, want the old boot's 10001 reported, not believed", st)
	}
	_, st = mustOpenProgress(t, dir, "boot-2")
	if !st.SameBoot || st.Applied != 0 {
		t.Errorf("restarted in boot 2: recovered %+v, want nothing applied", st)
	}
}

// A closed log refuses records rather than losing them silently.
func TestProgressClosed(t *testing.T) {
	p, _ := mustOpenProgress(t, t.TempDir(), "b")
	mustProg(t, p.close())
	mustProg(t, p.close())
	if p.applied(1) == nil || p.handleOpened(recA) == nil || p.handleReleased(1) == nil || p.reset(1, func() []replayer.HandleRecord { return nil }) == nil {
		t.Error("a closed log took a record")
	}
}

// BenchmarkProgressApplied is the per-op cost of the log: a store to the
// mapped page (or, where the state dir cannot be mapped, one small
// write(2), no fsync).
func BenchmarkProgressApplied(b *testing.B) {
	p, _, err := openProgressAt(b.TempDir(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer p.close()
	b.ReportAllocs()
	seq := uint64(0)
	for b.Loop() {
		seq++
		if err := p.applied(seq); err != nil {
			b.Fatal(err)
		}
	}
}

// noMark makes p record applied ops in the log, as where the state dir
// cannot be mapped.
func (p *progress) noMark() {
	p.mark.unmap()
	p.mark = nil
}
