package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
)

// resyncItemCase is one item to round-trip, with its position.
type resyncItemCase struct {
	name  string
	after uint64
	it    ResyncItem
}

type resyncReplyCase struct {
	name string
	r    ResyncReply
}

var attrMax = Attr{Mode: 0o7777, Uid: math.MaxUint32, Gid: math.MaxUint32, Size: math.MaxInt64, Mtime: tMax}

// oneOfEachKind is a directory's entries: one of every kind, sorted, with
// both halves of a hard link.
func oneOfEachKind() []Entry {
	return []Entry{
		{Name: "a-file", Kind: KindFile, Attr: Attr{Mode: 0o644, Uid: 1, Gid: 2, Size: 12, Mtime: tNow}, FileID: 1, Compare: true},
		{Name: "b-dir", Kind: KindDir, Attr: Attr{Mode: 0o1777, Size: 4096, Mtime: tNeg}},
		{Name: "c-link", Kind: KindSymlink, Attr: Attr{Mode: 0o777, Mtime: tMin}, Target: "../../etc/passwd"},
		{Name: "d-fifo", Kind: KindFifo, Attr: Attr{Mode: 0o600, Mtime: tOmit}},
		{Name: "e-sock", Kind: KindSocket, Attr: Attr{Mode: 0o755, Mtime: tNow}},
		{Name: "e-tchr", Kind: KindCharDev, Rdev: 0x0103, Attr: Attr{Mode: 0o666, Mtime: tNow}},
		{Name: "e-ublk", Kind: KindBlkDev, Rdev: 1<<63 | 7, Attr: Attr{Mode: 0o660, Mtime: tNow}},
		{Name: "f-first", Kind: KindFile, Attr: Attr{Mode: 0o4755}, FileID: math.MaxUint64, LinkID: 7},
		{Name: "g-second", Kind: KindFile, Attr: Attr{Mode: 0o4755}, LinkID: 7},
		{Name: "h-xattrs", Kind: KindFile, FileID: 2, Xattrs: []Xattr{
			{Name: "security.selinux", Value: []byte("system_u:object_r:etc_t:s0\x00")},
			{Name: "user.empty"},
			{Name: "user.z", Value: []byte{0}},
		}},
	}
}

// manyEntries returns n sorted entries cycling through the kinds.
func manyEntries(n int) []Entry {
	es := make([]Entry, n)
	for i := range es {
		e := Entry{Name: fmt.Sprintf("e%05d", i), Kind: uint8(i%5) + KindFile, Attr: Attr{Mode: uint32(i) & 0o7777, Mtime: tNow}}
		switch e.Kind {
		case KindFile:
			e.FileID = uint64(i) + 1
		case KindSymlink:
			e.Target = "t"
		}
		es[i] = e
	}
	return es
}

// maxXattrs returns MaxResyncXattrs sorted xattrs, the first with a name
// and a value of the largest sizes.
func maxXattrs() []Xattr {
	xs := make([]Xattr, MaxResyncXattrs)
	xs[0] = Xattr{Name: "a" + strings.Repeat("n", MaxXattrNameLen-1), Value: pattern(MaxXattrValueLen)}
	for i := 1; i < len(xs); i++ {
		xs[i] = Xattr{Name: fmt.Sprintf("user.x%03d", i), Value: []byte{byte(i)}}
	}
	return xs
}

func resyncItemCases() []resyncItemCase {
	handles := make([]HandleRef, MaxResyncHandles)
	for i := range handles {
		handles[i] = HandleRef{Handle: uint64(i) + 1, Path: fmt.Sprintf("d/h%04d", i)}
	}
	hashes := make([]Hash, 3)
	for i := range hashes {
		hashes[i][0], hashes[i][HashLen-1] = byte(i), 0xff
	}
	return []resyncItemCase{
		{"begin", 0, &ResyncBegin{Pass: 1}},
		{"begin rebase", 10, &ResyncBegin{Pass: 2, Rebase: true, Run: RunID{1, 15: 0xff}}},
		{"begin full", 11, &ResyncBegin{Pass: 3, Full: true}},
		{"begin verify max", math.MaxUint64, &ResyncBegin{Pass: math.MaxUint64, Verify: true}},
		{"handles empty", 3, &ResyncHandles{Pass: 1}},
		{"handles", 4, &ResyncHandles{Pass: 1, Handles: []HandleRef{{Handle: 1, Path: "a/b"}, {Handle: math.MaxUint64, Path: longPath(MaxPathLen)}}}},
		{"handles max count", 5, &ResyncHandles{Pass: 1, Handles: handles}},
		{"dir root empty", 6, &ResyncDir{Pass: 1, DirID: 0, Path: ""}},
		{"dir root final", 7, &ResyncDir{Pass: 1, DirID: 1, Path: "", Final: true, Attr: Attr{Mode: 0o755, Mtime: tNow}}},
		{"dir kinds", 8, &ResyncDir{Pass: 3, DirID: 2, Path: "sub/dir", Entries: oneOfEachKind()}},
		{"dir kinds final", 9, &ResyncDir{Pass: 3, DirID: 2, Path: "sub/dir", Entries: oneOfEachKind(), Final: true,
			Attr: attrMax, Xattrs: []Xattr{{Name: "user.a", Value: []byte("1")}, {Name: "user.b"}}}},
		{"dir max", math.MaxUint64, &ResyncDir{Pass: math.MaxUint64, DirID: math.MaxUint64, Path: longPath(MaxPathLen),
			Entries: []Entry{
				{Name: strings.Repeat("n", MaxNameLen), Kind: KindSymlink, Attr: attrMax, Target: longPath(MaxPathLen)},
				{Name: "x", Kind: KindFile, Attr: attrMax, FileID: math.MaxUint64, LinkID: math.MaxUint64, Xattrs: maxXattrs()},
			},
			Final: true, Attr: attrMax, Xattrs: maxXattrs()}},
		{"dir max entries", 11, &ResyncDir{Pass: 1, DirID: 5, Path: "big", Entries: manyEntries(MaxResyncEntries), Final: true}},
		{"data", 12, &ResyncData{Pass: 1, FileID: 1, Off: 0, Len: 5, Data: []byte("hello")}},
		{"data hole", 13, &ResyncData{Pass: 1, FileID: 1, Off: ResyncBlockSize, Len: ResyncBlockSize}},
		{"data full block", 14, &ResyncData{Pass: 1, FileID: 2, Off: 3 * ResyncBlockSize, Len: ResyncBlockSize, Data: pattern(ResyncBlockSize)}},
		{"data max", math.MaxUint64, &ResyncData{Pass: math.MaxUint64, FileID: math.MaxUint64, Off: math.MaxInt64 - 1, Len: 1, Data: []byte{0}}},
		{"data hole max", 15, &ResyncData{Pass: 1, FileID: 1, Off: math.MaxInt64 - ResyncBlockSize, Len: ResyncBlockSize}},
		{"close", 16, &ResyncClose{Pass: 1, FileID: 1, Size: 12, Mtime: tNow}},
		{"close max", math.MaxUint64, &ResyncClose{Pass: math.MaxUint64, FileID: math.MaxUint64, Size: math.MaxInt64, Mtime: tMin}},
		{"close empty omit", 17, &ResyncClose{Pass: 0, FileID: 3, Mtime: tOmit}},
		{"end", 18, &ResyncEnd{Pass: 1}},
		{"end zero", 0, &ResyncEnd{}},
		{"end max", math.MaxUint64, &ResyncEnd{Pass: math.MaxUint64}},
	}
}

func resyncReplyCases() []resyncReplyCase {
	many := make([]Hash, MaxResyncHashes)
	for i := range many {
		many[i][0], many[i][1], many[i][HashLen-1] = byte(i), byte(i>>8), 0xa5
	}
	diffs := make([]Difference, MaxResyncDiffs)
	for i := range diffs {
		diffs[i] = Difference{Path: fmt.Sprintf("d/%d", i), What: "missing"}
	}
	diffs[0] = Difference{Path: "", What: strings.Repeat("w", MaxDiffWhatLen)}
	diffs[1] = Difference{Path: longPath(MaxPathLen), What: ""}
	root := Hash{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	return []resyncReplyCase{
		{"hashes empty file", &ResyncHashes{Pass: 1, FileID: 1}},
		{"hashes", &ResyncHashes{Pass: 1, FileID: 2, Size: 3*ResyncBlockSize - 1, First: 0, Hashes: many[:3]}},
		{"hashes more", &ResyncHashes{Pass: 1, FileID: 2, Size: math.MaxInt64, First: 7, Hashes: many[:2], More: true}},
		{"hashes verify root", &ResyncHashes{Pass: 2, FileID: 9, Size: 1 << 40, Root: root}},
		{"hashes max", &ResyncHashes{Pass: math.MaxUint64, FileID: math.MaxUint64, Size: math.MaxInt64, First: math.MaxUint64,
			Hashes: many, More: true, Root: root}},
		{"dir done", &ResyncDirDone{Pass: 1, DirID: 0}},
		{"dir done part", &ResyncDirDone{Pass: 2, DirID: 9, Part: true}},
		{"dir done diffs", &ResyncDirDone{Pass: 1, DirID: 4, Diffs: []Difference{{Path: "a", What: "missing"}, {Path: "", What: "mode 0755 != 0700"}}}},
		{"dir done max", &ResyncDirDone{Pass: math.MaxUint64, DirID: math.MaxUint64, Diffs: diffs}},
	}
}

// normalizeResync returns a copy of v (an item or a reply) with empty
// slices as nil: the encoding does not tell them apart.
func normalizeResync(v any) any {
	xattrs := func(xs []Xattr) []Xattr {
		if len(xs) == 0 {
			return nil
		}
		out := make([]Xattr, len(xs))
		for i, x := range xs {
			if len(x.Value) == 0 {
				x.Value = nil
			}
			out[i] = x
		}
		return out
	}
	switch v := v.(type) {
	case *ResyncHandles:
		c := *v
		if len(c.Handles) == 0 {
			c.Handles = nil
		}
		return &c
	case *ResyncDir:
		c := *v
		c.Entries = nil
		for _, e := range v.Entries {
			e.Xattrs = xattrs(e.Xattrs)
			c.Entries = append(c.Entries, e)
		}
		c.Xattrs = xattrs(c.Xattrs)
		return &c
	case *ResyncData:
		c := *v
		if len(c.Data) == 0 {
			c.Data = nil
		}
		return &c
	case *ResyncHashes:
		c := *v
		if len(c.Hashes) == 0 {
			c.Hashes = nil
		}
		return &c
	case *ResyncDirDone:
		c := *v
		if len(c.Diffs) == 0 {
			c.Diffs = nil
		}
		return &c
	}
	return v
}

// briefResync formats an item or reply without megabytes of data.
func briefResync(v any) string {
	const max = 300
	s := fmt.Sprintf("%T%+v", v, v)
	if len(s) > max {
		s = fmt.Sprintf("%s...(%d bytes)", s[:max], len(s))
	}
	return s
}

func parseItemErr(b []byte) error {
	_, _, err := ParseResyncItem(b)
	return err
}

func parseReplyErr(b []byte) error {
	_, err := ParseResyncReply(b)
	return err
}

func itemBody(it ResyncItem) []byte { return AppendResyncItem(nil, 1, it) }

func replyBody(r ResyncReply) []byte { return AppendResyncReply(nil, r) }

func TestResyncItemRoundTrip(t *testing.T) {
	for _, tc := range resyncItemCases() {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("prefix")
			b := AppendResyncItem(bytes.Clone(prefix), tc.after, tc.it)
			if !bytes.HasPrefix(b, prefix) {
				t.Fatalf("AppendResyncItem clobbered the bytes it appends to")
			}
			body := b[len(prefix):]
			after, it, err := ParseResyncItem(body)
			if err != nil {
				t.Fatalf("ParseResyncItem(AppendResyncItem(%s)): %v", briefResync(tc.it), err)
			}
			if after != tc.after {
				t.Errorf("after = %d, want %d", after, tc.after)
			}
			if it.ResyncKind() != tc.it.ResyncKind() {
				t.Fatalf("kind = %v, want %v", it.ResyncKind(), tc.it.ResyncKind())
			}
			if got, want := normalizeResync(it), normalizeResync(tc.it); !reflect.DeepEqual(got, want) {
				t.Errorf("decoded item differs\n got %s\nwant %s", briefResync(got), briefResync(want))
			}
			if again := AppendResyncItem(nil, after, it); !bytes.Equal(again, body) {
				t.Errorf("re-encoding gives %d different bytes, want the %d decoded", len(again), len(body))
			}
		})
	}
}

func TestResyncReplyRoundTrip(t *testing.T) {
	for _, tc := range resyncReplyCases() {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("prefix")
			b := AppendResyncReply(bytes.Clone(prefix), tc.r)
			if !bytes.HasPrefix(b, prefix) {
				t.Fatalf("AppendResyncReply clobbered the bytes it appends to")
			}
			body := b[len(prefix):]
			r, err := ParseResyncReply(body)
			if err != nil {
				t.Fatalf("ParseResyncReply(AppendResyncReply(%s)): %v", briefResync(tc.r), err)
			}
			if got, want := normalizeResync(r), normalizeResync(tc.r); !reflect.DeepEqual(got, want) {
				t.Errorf("decoded reply differs\n got %s\nwant %s", briefResync(got), briefResync(want))
			}
			if again := AppendResyncReply(nil, r); !bytes.Equal(again, body) {
				t.Errorf("re-encoding gives %d different bytes, want the %d decoded", len(again), len(body))
			}
		})
	}
}

// The largest cases still fit a frame, except those that carry the
// largest xattrs: senders must measure (see resync_codec.go).
func TestResyncMaxCasesFitAFrame(t *testing.T) {
	for _, tc := range resyncItemCases() {
		if n := len(AppendResyncItem(nil, tc.after, tc.it)); n > MaxFrameLen && tc.name != "dir max" {
			t.Errorf("%s: %d bytes exceed MaxFrameLen", tc.name, n)
		}
	}
	for _, tc := range resyncReplyCases() {
		if n := len(AppendResyncReply(nil, tc.r)); n > MaxFrameLen {
			t.Errorf("%s: %d bytes exceed MaxFrameLen", tc.name, n)
		}
	}
}

// checkTruncatedResync is checkTruncated, sampled for bodies beyond 16
// KiB: the decoder is linear, so every prefix of a large list costs
// quadratic time, and the boundaries are what matter.
func checkTruncatedResync(t *testing.T, body []byte, parse func([]byte) error) {
	t.Helper()
	if len(body) <= 16<<10 {
		checkTruncated(t, body, parse)
		return
	}
	const edge, stride = 1024, 997
	for i := 0; i < len(body); i++ {
		if i > edge && i < len(body)-edge && i%stride != 0 {
			continue
		}
		err := parse(body[:i:i])
		if !errors.Is(err, ErrTruncated) || errors.Is(err, ErrMalformed) {
			t.Fatalf("prefix of %d of %d bytes: err = %v, want ErrTruncated", i, len(body), err)
		}
	}
}

func TestResyncTruncated(t *testing.T) {
	for _, tc := range resyncItemCases() {
		t.Run(tc.name, func(t *testing.T) {
			checkTruncatedResync(t, AppendResyncItem(nil, tc.after, tc.it), parseItemErr)
		})
	}
	for _, tc := range resyncReplyCases() {
		t.Run(tc.name, func(t *testing.T) {
			checkTruncatedResync(t, AppendResyncReply(nil, tc.r), parseReplyErr)
		})
	}
}

// Items in reply frames, replies in item frames, and unknown kinds are
// refused; so is what the encoder writes for a nil item or reply.
func TestResyncKinds(t *testing.T) {
	for _, tc := range resyncItemCases() {
		// An item body without its position is kind + payload: a reply
		// frame's layout.
		body := AppendResyncItem(nil, 0, tc.it)[1:]
		checkMalformed(t, tc.name+" as a reply", body, parseReplyErr)
	}
	for _, tc := range resyncReplyCases() {
		checkMalformed(t, tc.name+" as an item", append([]byte{0}, AppendResyncReply(nil, tc.r)...), parseItemErr)
	}
	for _, k := range []byte{0, 7, 15, 18, 0x80, 0xff} {
		checkMalformed(t, fmt.Sprint("item kind ", k), []byte{1, k}, parseItemErr)
		checkMalformed(t, fmt.Sprint("reply kind ", k), []byte{k}, parseReplyErr)
	}
	checkMalformed(t, "nil item", AppendResyncItem(nil, 1, nil), parseItemErr)
	checkMalformed(t, "nil reply", AppendResyncReply(nil, nil), parseReplyErr)

	for _, tc := range resyncItemCases() {
		checkMalformed(t, tc.name+" + 1 byte", append(AppendResyncItem(nil, tc.after, tc.it), 0), parseItemErr)
	}
	for _, tc := range resyncReplyCases() {
		checkMalformed(t, tc.name+" + 1 byte", append(AppendResyncReply(nil, tc.r), 0), parseReplyErr)
	}
}

func TestResyncKindString(t *testing.T) {
	kinds := []ResyncKind{ResyncBeginKind, ResyncHandlesKind, ResyncDirKind, ResyncDataKind, ResyncCloseKind,
		ResyncEndKind, ResyncHashesKind, ResyncDirDoneKind}
	seen := map[string]bool{}
	for _, k := range kinds {
		s := k.String()
		if strings.HasPrefix(s, "resync(") || seen[s] {
			t.Errorf("resync kind %d is named %q", k, s)
		}
		seen[s] = true
	}
	if s := ResyncKind(99).String(); s != "resync(99)" {
		t.Errorf("ResyncKind(99).String() = %q", s)
	}
}

// withCount replaces the count that ends body[:len(body)-tail] (a count
// of 0: one byte) by n, and drops the tail: a list header claiming n
// elements with nothing after it.
func withCount(body []byte, tail int, n uint64) []byte {
	return appendUvarint(bytes.Clone(body[:len(body)-tail-1]), n)
}

// dirWith encodes a non-final ResyncDir holding the entries es, which the
// encoder writes however invalid they are.
func dirWith(es ...Entry) []byte {
	return itemBody(&ResyncDir{Pass: 1, DirID: 1, Path: "d", Entries: es})
}

// checkMalformedWith is checkMalformed, and the error must also name the
// reason (want), so that a case refused for another reason than the one
// it tests does not pass unnoticed.
func checkMalformedWith(t *testing.T, what, want string, b []byte, parse func([]byte) error) {
	t.Helper()
	err := parse(b)
	if !errors.Is(err, ErrMalformed) || errors.Is(err, ErrTruncated) || !strings.Contains(fmt.Sprint(err), want) {
		t.Errorf("%s: err = %v, want ErrMalformed mentioning %q", what, err, want)
	}
}

func TestResyncMalformed(t *testing.T) {
	item := func(what, want string, it ResyncItem) {
		t.Helper()
		checkMalformedWith(t, what, want, itemBody(it), parseItemErr)
	}
	reply := func(what, want string, r ResyncReply) {
		t.Helper()
		checkMalformedWith(t, what, want, replyBody(r), parseReplyErr)
	}
	entry := func(what, want string, e Entry) {
		t.Helper()
		checkMalformedWith(t, "entry with "+what, want, dirWith(e), parseItemErr)
	}

	// Flags.
	begin := itemBody(&ResyncBegin{Pass: 1})
	for _, f := range []byte{8, 0x80, 0xff} {
		b := bytes.Clone(begin)
		b[len(b)-1-len(RunID{})] = f // flags, then the run
		checkMalformedWith(t, fmt.Sprintf("begin flags %#x", f), "begin flags", b, parseItemErr)
	}
	item("begin with rebase and verify", "both rebase and verify", &ResyncBegin{Pass: 1, Rebase: true, Verify: true})
	dir := itemBody(&ResyncDir{Pass: 1, DirID: 1, Path: "d"}) // ..., flags, count 0
	for _, f := range []byte{2, 0x81, 0xff} {
		b := bytes.Clone(dir)
		b[len(b)-2] = f
		checkMalformedWith(t, fmt.Sprintf("dir flags %#x", f), "dir flags", b, parseItemErr)
	}
	hashes := replyBody(&ResyncHashes{Pass: 1, FileID: 1}) // ..., flags, root
	for _, f := range []byte{2, 0x80, 0xff} {
		b := bytes.Clone(hashes)
		b[len(b)-1-HashLen] = f
		checkMalformedWith(t, fmt.Sprintf("hashes flags %#x", f), "hashes flags", b, parseReplyErr)
	}

	// Paths: CheckPath's reasons.
	for _, p := range []string{"/abs", "a/../b", "..", "a//b", "a/", "a\x00b", longPath(MaxPathLen + 1)} {
		item(fmt.Sprintf("handle path %.20q", p), "handle path", &ResyncHandles{Pass: 1, Handles: []HandleRef{{Handle: 1, Path: p}}})
		item(fmt.Sprintf("dir path %.20q", p), "resync dir path", &ResyncDir{Pass: 1, Path: p})
		reply(fmt.Sprintf("difference path %.20q", p), "difference path", &ResyncDirDone{Diffs: []Difference{{Path: p, What: "x"}}})
	}
	item("handle path of the root", "root", &ResyncHandles{Pass: 1, Handles: []HandleRef{{Handle: 1, Path: ""}}})
	item("handle 0", "handle 0", &ResyncHandles{Pass: 1, Handles: []HandleRef{{Handle: 0, Path: "f"}}})

	// Entries.
	for _, n := range []string{"", ".", "..", "a/b", "/", "a\x00"} {
		entry(fmt.Sprintf("name %q", n), "entry name", Entry{Name: n, Kind: KindDir})
	}
	entry("name of MaxNameLen+1", "entry name of 256 bytes", Entry{Name: strings.Repeat("n", MaxNameLen+1), Kind: KindDir})
	for _, k := range []uint8{0, KindBlkDev + 1, 0xff} {
		entry(fmt.Sprint("kind ", k), "unknown kind", Entry{Name: "e", Kind: k})
	}
	entry("file id 0 and link id 0", "neither a file id nor a link id", Entry{Name: "f", Kind: KindFile})
	entry("compare without a file id", "compare without a file id", Entry{Name: "f", Kind: KindFile, LinkID: 1, Compare: true})
	entry("mode with type bits", "beyond the permissions", Entry{Name: "f", Kind: KindFile, FileID: 1, Attr: Attr{Mode: 0o100644}})
	entry("mode 0o10000", "beyond the permissions", Entry{Name: "d", Kind: KindDir, Attr: Attr{Mode: 0o10000}})
	entry("size 2^63", "size", Entry{Name: "f", Kind: KindFile, FileID: 1, Attr: Attr{Size: 1 << 63}})
	entry("symlink target of MaxPathLen+1", "symlink target", Entry{Name: "l", Kind: KindSymlink, Target: strings.Repeat("t", MaxPathLen+1)})
	entry("xattr name of MaxXattrNameLen+1", "xattr name of", Entry{Name: "f", Kind: KindDir, Xattrs: []Xattr{{Name: strings.Repeat("x", MaxXattrNameLen+1)}}})
	entry("empty xattr name", "xattr name", Entry{Name: "f", Kind: KindDir, Xattrs: []Xattr{{Name: ""}}})
	entry("xattr name with NUL", "xattr name", Entry{Name: "f", Kind: KindDir, Xattrs: []Xattr{{Name: "user.\x00"}}})
	entry("xattr value of MaxXattrValueLen+1", "xattr value", Entry{Name: "f", Kind: KindDir, Xattrs: []Xattr{{Name: "user.x", Value: make([]byte, MaxXattrValueLen+1)}}})
	entry("xattrs unsorted", "not sorted", Entry{Name: "f", Kind: KindDir, Xattrs: []Xattr{{Name: "user.b"}, {Name: "user.a"}}})
	entry("xattrs duplicated", "not sorted", Entry{Name: "f", Kind: KindDir, Xattrs: []Xattr{{Name: "user.a"}, {Name: "user.a"}}})
	checkMalformedWith(t, "entries unsorted", "not sorted", dirWith(Entry{Name: "b", Kind: KindDir}, Entry{Name: "a", Kind: KindDir}), parseItemErr)
	checkMalformedWith(t, "entries duplicated", "not sorted", dirWith(Entry{Name: "a", Kind: KindDir}, Entry{Name: "a", Kind: KindFifo}), parseItemErr)
	item("dir's own xattrs unsorted", "not sorted", &ResyncDir{Pass: 1, Final: true, Xattrs: []Xattr{{Name: "user.b"}, {Name: "user.a"}}})
	item("dir's own mode with type bits", "beyond the permissions", &ResyncDir{Pass: 1, Final: true, Attr: Attr{Mode: 0o40755}})

	// Counts one beyond the bound, with every element present and valid.
	xs := maxXattrs()
	xs = append(xs, Xattr{Name: "user.z"})
	entry("MaxResyncXattrs+1 xattrs", "257 xattrs", Entry{Name: "f", Kind: KindDir, Xattrs: xs})
	item("MaxResyncEntries+1 entries", "4097 entries", &ResyncDir{Pass: 1, Entries: manyEntries(MaxResyncEntries + 1)})
	hs := make([]HandleRef, MaxResyncHandles+1)
	for i := range hs {
		hs[i] = HandleRef{Handle: 1, Path: "f"}
	}
	item("MaxResyncHandles+1 handles", "4097 handles", &ResyncHandles{Pass: 1, Handles: hs})
	reply("MaxResyncHashes+1 hashes", "32769 hashes", &ResyncHashes{Pass: 1, FileID: 1, Hashes: make([]Hash, MaxResyncHashes+1)})
	ds := make([]Difference, MaxResyncDiffs+1)
	for i := range ds {
		ds[i] = Difference{Path: "f", What: "x"}
	}
	reply("MaxResyncDiffs+1 differences", "1025 differences", &ResyncDirDone{Pass: 1, Diffs: ds})

	// Data.
	item("data of length 0", "length 0 not in", &ResyncData{Pass: 1, FileID: 1, Off: 0, Len: 0})
	item("data of negative length", "length 18446744073709551615 out of range", &ResyncData{Pass: 1, FileID: 1, Off: 0, Len: -1})
	item("data at a negative offset", "offset 18446744073709551615 out of range", &ResyncData{Pass: 1, FileID: 1, Off: -1, Len: 1, Data: []byte{1}})
	item("hole at offset -2^63", "offset 9223372036854775808 out of range", &ResyncData{Pass: 1, FileID: 1, Off: math.MinInt64, Len: 1})
	item("hole beyond a block", "length 131073 not in", &ResyncData{Pass: 1, FileID: 1, Len: ResyncBlockSize + 1})
	item("data beyond a block", "length 131073 not in", &ResyncData{Pass: 1, FileID: 1, Len: ResyncBlockSize + 1, Data: make([]byte, ResyncBlockSize+1)})
	item("data shorter than its length", "of 3 bytes, length says 4", &ResyncData{Pass: 1, FileID: 1, Len: 4, Data: []byte("abc")})
	item("data longer than its length", "of 3 bytes, length says 2", &ResyncData{Pass: 1, FileID: 1, Len: 2, Data: []byte("abc")})
	item("data ending beyond 2^63", "overflows", &ResyncData{Pass: 1, FileID: 1, Off: math.MaxInt64, Len: 1, Data: []byte{1}})
	item("data of file 0", "file id 0", &ResyncData{Pass: 1, FileID: 0, Len: 1, Data: []byte{1}})
	item("close of file 0", "file id 0", &ResyncClose{Pass: 1, FileID: 0})
	item("close to size 2^63", "size 9223372036854775808 out of range", &ResyncClose{Pass: 1, FileID: 1, Size: 1 << 63})
	item("close with nsec 1e9", "nanoseconds", &ResyncClose{Pass: 1, FileID: 1, Mtime: Time{Nsec: 1e9}})
	reply("hashes of file 0", "file id 0", &ResyncHashes{Pass: 1})
	reply("hashes of size 2^64-1", "size 18446744073709551615 out of range", &ResyncHashes{Pass: 1, FileID: 1, Size: math.MaxUint64})

	// Differences: the encoder cuts What; a peer that does not is refused.
	b := replyBody(&ResyncDirDone{Pass: 1, Diffs: []Difference{{Path: "f"}}})
	b = appendString(b[:len(b)-1], strings.Repeat("w", MaxDiffWhatLen+1))
	checkMalformedWith(t, "difference of MaxDiffWhatLen+1 bytes", "difference of 4097 bytes", b, parseReplyErr)

	// Non-minimal varints anywhere are refused: here the position, a
	// count and a length.
	checkMalformedWith(t, "non-minimal position", "minimal", append([]byte{0x81, 0x00}, itemBody(&ResyncEnd{})[1:]...), parseItemErr)
	checkMalformedWith(t, "non-minimal entry count", "minimal", append(bytes.Clone(dir[:len(dir)-1]), 0x80, 0x00), parseItemErr)
	d := itemBody(&ResyncData{Pass: 1, FileID: 1, Len: 1, Data: []byte{7}})
	d = append(d[:len(d)-2], 0x81, 0x00, 7)
	checkMalformedWith(t, "non-minimal data length", "minimal", d, parseItemErr)
}

// listHeader is a valid body holding an empty list whose count (one
// byte) is followed by tail more bytes, with the list's bound and parser.
type listHeader struct {
	body  []byte
	tail  int
	max   uint64
	parse func([]byte) error
}

// listHeaders returns a listHeader for every list of the codec.
func listHeaders() map[string]listHeader {
	return map[string]listHeader{
		"handles":     {itemBody(&ResyncHandles{Pass: 1}), 0, MaxResyncHandles, parseItemErr},
		"entries":     {itemBody(&ResyncDir{Pass: 1, Path: "d"}), 0, MaxResyncEntries, parseItemErr},
		"xattrs":      {dirWith(Entry{Name: "p", Kind: KindFifo}), 0, MaxResyncXattrs, parseItemErr},
		"dir xattrs":  {itemBody(&ResyncDir{Pass: 1, Final: true}), 0, MaxResyncXattrs, parseItemErr},
		"hashes":      {replyBody(&ResyncHashes{Pass: 1, FileID: 1}), 1 + HashLen, MaxResyncHashes, parseReplyErr},
		"differences": {replyBody(&ResyncDirDone{Pass: 1}), 0, MaxResyncDiffs, parseReplyErr},
	}
}

// A tiny body claiming a huge list is refused by the bound check, and one
// claiming a list within the bound but beyond the body by the length
// check, both before the list is allocated.
func TestResyncCountBoundBeforeAllocation(t *testing.T) {
	for what, h := range listHeaders() {
		if err := h.parse(h.body); err != nil || h.body[len(h.body)-1-h.tail] != 0 {
			t.Fatalf("%s: header does not hold a count of 0 where expected (err %v)", what, err)
		}
		for _, claim := range []uint64{h.max + 1, 1 << 40, math.MaxUint64} {
			b := withCount(h.body, h.tail, claim)
			checkMalformed(t, fmt.Sprintf("%s claiming %d", what, claim), b, h.parse)
			if n := allocBytesPerRun(100, func() { _ = h.parse(b) }); n > 4<<10 {
				t.Errorf("%s claiming %d: %d bytes allocated per parse, want a few hundred", what, claim, n)
			}
		}
		b := withCount(h.body, h.tail, h.max)
		var err error
		if n := allocBytesPerRun(100, func() { err = h.parse(b) }); n > 4<<10 {
			t.Errorf("%s claiming the bound %d: %d bytes allocated per parse, want a few hundred", what, h.max, n)
		}
		if !errors.Is(err, ErrTruncated) || errors.Is(err, ErrMalformed) {
			t.Errorf("%s claiming the bound %d with no elements: err = %v, want ErrTruncated", what, h.max, err)
		}
	}
}

// The decoded Data and xattr values alias the body (documented on
// ParseResyncItem): a block costs no copy.
func TestResyncItemAliasesBody(t *testing.T) {
	body := itemBody(&ResyncData{Pass: 1, FileID: 1, Len: 3, Data: []byte("abc")})
	_, it, err := ParseResyncItem(body)
	if err != nil {
		t.Fatal(err)
	}
	data := it.(*ResyncData).Data
	body2 := dirWith(Entry{Name: "d", Kind: KindDir, Xattrs: []Xattr{{Name: "user.a", Value: []byte("xyz")}}})
	_, it, err = ParseResyncItem(body2)
	if err != nil {
		t.Fatal(err)
	}
	value := it.(*ResyncDir).Entries[0].Xattrs[0].Value
	for _, b := range [][]byte{body, body2} {
		for i := range b {
			b[i] = 'Z'
		}
	}
	if string(data) != "ZZZ" || string(value) != "ZZZ" {
		t.Errorf("Data = %q, Value = %q after overwriting the bodies; want them to alias the bodies", data, value)
	}
	if cap(data) != len(data) || cap(value) != len(value) {
		t.Errorf("cap(Data) = %d, cap(Value) = %d: appending must not overwrite the rest of the body", cap(data), cap(value))
	}
}

// Fields that mean nothing for a message are not sent: they decode as
// zero values, as Time's Omit drops Sec and Nsec.
func TestResyncUnsentFields(t *testing.T) {
	it := &ResyncDir{Pass: 1, Path: "d", Attr: attrMax, Xattrs: []Xattr{{Name: "user.a"}}, Entries: []Entry{
		{Name: "a", Kind: KindDir, Target: "t", FileID: 5, LinkID: 6},
		{Name: "b", Kind: KindFifo, Target: "t", FileID: 5},
	}}
	_, got, err := ParseResyncItem(itemBody(it))
	if err != nil {
		t.Fatal(err)
	}
	want := &ResyncDir{Pass: 1, Path: "d", Entries: []Entry{{Name: "a", Kind: KindDir}, {Name: "b", Kind: KindFifo}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// A hole's data, and a long difference's tail, are not sent either.
	long := strings.Repeat("w", 2*MaxDiffWhatLen)
	r, err := ParseResyncReply(replyBody(&ResyncDirDone{Pass: 1, Diffs: []Difference{{Path: "f", What: long}}}))
	if err != nil {
		t.Fatal(err)
	}
	if what := r.(*ResyncDirDone).Diffs[0].What; what != long[:MaxDiffWhatLen] {
		t.Errorf("What of %d bytes decodes to %d bytes, want %d", len(long), len(what), MaxDiffWhatLen)
	}
}

// Frames carry resync bodies like any other.
func TestResyncFrames(t *testing.T) {
	item := AppendResyncItem(nil, 42, &ResyncData{Pass: 1, FileID: 1, Len: ResyncBlockSize, Data: pattern(ResyncBlockSize)})
	reply := AppendResyncReply(nil, &ResyncHashes{Pass: 1, FileID: 1, Hashes: make([]Hash, MaxResyncHashes)})
	stream := AppendFrame(AppendFrame(nil, FrameResync, item, nil), FrameResyncReply, reply, nil)
	got, err := readAll(NewFrameReader(bytes.NewReader(stream), nil))
	if err != io.EOF {
		t.Fatalf("after the last frame: err = %v, want io.EOF", err)
	}
	checkFrames(t, got, []frame{{FrameResync, item}, {FrameResyncReply, reply}})
	if FrameResync.String() != "resync" || FrameResyncReply.String() != "resync-reply" {
		t.Errorf("frame kinds named %q, %q", FrameResync, FrameResyncReply)
	}
}
