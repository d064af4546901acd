package replayer

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// A pass over more files awaiting contents and more hard-link groups than
// it may hold descriptors for holds the rest by file handle: every link is
// made, every file gets its contents, and the descriptors stay bounded
// (found by black-box testing: a directory of many differing files failed
// every pass with EMFILE, and links past 4096 groups were never made).
func TestResyncHoldsManyFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("open_by_handle_at needs CAP_DAC_READ_SEARCH: run as root")
	}
	const n = maxPassFds + 500 // groups, each a file with two names
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	none := func(wire.ResyncReply) error { return nil }
	base := openFds(t)
	var entries []wire.Entry
	for i := range n {
		entries = append(entries, wire.Entry{Name: fmt.Sprintf("a%05d", i), Kind: wire.KindFile,
			FileID: uint64(i + 1), LinkID: uint64(i + 1), Attr: wire.Attr{Mode: 0o644, Size: 5}})
	}
	for i := range n {
		entries = append(entries, wire.Entry{Name: fmt.Sprintf("b%05d", i), Kind: wire.KindFile,
			LinkID: uint64(i + 1), Attr: wire.Attr{Mode: 0o644, Size: 5}})
	}
	items := []wire.ResyncItem{&wire.ResyncBegin{Pass: 1, Rebase: true}}
	for i := 0; i < len(entries); i += wire.MaxResyncEntries {
		end := min(len(entries), i+wire.MaxResyncEntries)
		items = append(items, &wire.ResyncDir{Pass: 1, DirID: 1, Entries: entries[i:end], Final: end == len(entries),
			Attr: wire.Attr{Mode: 0o755, Mtime: wire.Time{Omit: true}}})
	}
	for _, it := range items {
		if err := r.ApplyItem(it, none); err != nil {
			t.Fatal(err)
		}
	}
	if got := openFds(t) - base; got > maxPassFds+16 {
		t.Errorf("%d descriptors held for %d files and %d link groups, want at most about %d", got, n, n, maxPassFds)
	}
	for i := range n {
		id := uint64(i + 1)
		for _, it := range []wire.ResyncItem{
			&wire.ResyncData{Pass: 1, FileID: id, Len: 5, Data: []byte(fmt.Sprintf("%05d", i))},
			&wire.ResyncClose{Pass: 1, FileID: id, Size: 5, Mtime: wire.Time{Sec: 1_700_000_000}},
		} {
			if err := r.ApplyItem(it, none); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := r.ApplyItem(&wire.ResyncEnd{Pass: 1}, none); err != nil {
		t.Fatal(err)
	}
	if got := openFds(t) - base; got > 2 {
		t.Errorf("%d descriptors still held after the pass", got)
	}
	for i := range n {
		a, b := filepath.Join(root, fmt.Sprintf("a%05d", i)), filepath.Join(root, fmt.Sprintf("b%05d", i))
		var sa, sb unix.Stat_t
		if err := unix.Lstat(a, &sa); err != nil {
			t.Fatal(err)
		}
		if err := unix.Lstat(b, &sb); err != nil {
			t.Fatalf("group %d: later link not made: %v", i, err)
		}
		if sa.Ino != sb.Ino || sa.Nlink != 2 {
			t.Fatalf("group %d: %s and %s are not one file (inodes %d, %d; %d links)", i, a, b, sa.Ino, sb.Ino, sa.Nlink)
		}
		if got, _ := os.ReadFile(a); string(got) != fmt.Sprintf("%05d", i) {
			t.Fatalf("group %d: contents %q", i, got)
		}
	}
}
