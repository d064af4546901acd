package wire

import (
	"fmt"
	"math"
	"strings"
)

// Encoding of the resync vocabulary (resync.go).
//
// The body of a FrameResync is: after uvarint | kind byte | item payload.
// The body of a FrameResyncReply is: kind byte | reply payload. Payloads
// are fixed sequences of fields, listed in each type's Append method, in
// the vocabulary of the ops (codec.go); several bools share one flags
// byte, whose unknown bits are refused. As for ops, each message has
// exactly one encoding: fields that mean nothing for a message (Target of
// a non-symlink entry, the directory's own Attr and Xattrs of a non-Final
// ResyncDir) are not sent, and decode as zero values.
//
// The codec bounds every count and length, but it does not split: a
// sender keeps each message within MaxFrameLen itself (a ResyncDir of
// MaxResyncEntries entries with long targets or big xattrs can exceed it),
// by measuring len(AppendResyncItem(...)).

// MaxDiffWhatLen bounds Difference.What; longer texts are cut when encoded.
const MaxDiffWhatLen = 4096

// The fewest bytes each repeated element takes, so that a count the rest
// of the body cannot hold is refused before its slice is allocated. These
// are the smallest encodings, valid or not: an element with an empty
// name must be refused as malformed, not as truncated.
const (
	minHandleRefLen  = 2 // handle, path length
	minEntryLen      = 8 // name length, kind, attr (mode, uid, gid, size, time tag), xattr count
	minXattrLen      = 2 // name length, value length
	minDifferenceLen = 2 // path length, what length
)

// Flag bits, one flags byte per message.
const (
	beginRebase = 1 << 0
	beginVerify = 1 << 1
	beginFull   = 1 << 2
	dirFinal    = 1 << 0
	hashesMore  = 1 << 0
	fileCompare = 1 << 0
	donePart    = 1 << 0
)

func (k ResyncKind) String() string {
	switch k {
	case ResyncBeginKind:
		return "begin"
	case ResyncHandlesKind:
		return "handles"
	case ResyncDirKind:
		return "dir"
	case ResyncDataKind:
		return "data"
	case ResyncCloseKind:
		return "close"
	case ResyncEndKind:
		return "end"
	case ResyncHashesKind:
		return "hashes"
	case ResyncDirDoneKind:
		return "dir-done"
	}
	return fmt.Sprintf("resync(%d)", uint8(k))
}

// AppendResyncItem appends the body of a FrameResync to b: the item's
// position after, its kind, its payload. A nil item is written as kind 0,
// which ParseResyncItem refuses: a sender's bug closes the connection
// instead of passing for an item.
func AppendResyncItem(b []byte, after uint64, it ResyncItem) []byte {
	b = appendUvarint(b, after)
	switch it := it.(type) {
	case *ResyncBegin:
		return it.Append(append(b, byte(ResyncBeginKind)))
	case *ResyncHandles:
		return it.Append(append(b, byte(ResyncHandlesKind)))
	case *ResyncDir:
		return it.Append(append(b, byte(ResyncDirKind)))
	case *ResyncData:
		return it.Append(append(b, byte(ResyncDataKind)))
	case *ResyncClose:
		return it.Append(append(b, byte(ResyncCloseKind)))
	case *ResyncEnd:
		return it.Append(append(b, byte(ResyncEndKind)))
	}
	return append(b, 0)
}

// ParseResyncItem parses the body of a FrameResync. The item may alias
// body (ResyncData.Data, Xattr.Value): copy before reusing body.
func ParseResyncItem(body []byte) (after uint64, it ResyncItem, err error) {
	d := &decoder{b: body}
	after = d.uvarint()
	k := ResyncKind(d.byte())
	if d.err != nil {
		return 0, nil, d.err
	}
	switch k {
	case ResyncBeginKind:
		it, err = parseResyncBegin(d)
	case ResyncHandlesKind:
		it, err = parseResyncHandles(d)
	case ResyncDirKind:
		it, err = parseResyncDir(d)
	case ResyncDataKind:
		it, err = parseResyncData(d)
	case ResyncCloseKind:
		it, err = parseResyncClose(d)
	case ResyncEndKind:
		it, err = parseResyncEnd(d)
	case ResyncHashesKind, ResyncDirDoneKind:
		return 0, nil, fmt.Errorf("%w: resync reply kind %v in an item frame", ErrMalformed, k)
	default:
		return 0, nil, fmt.Errorf("%w: unknown resync item kind %d", ErrMalformed, k)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("parse resync %v: %w", k, err)
	}
	return after, it, nil
}

// AppendResyncReply appends the body of a FrameResyncReply to b: the
// reply's kind and payload. A nil reply is written as kind 0, which
// ParseResyncReply refuses.
func AppendResyncReply(b []byte, r ResyncReply) []byte {
	switch r := r.(type) {
	case *ResyncHashes:
		return r.Append(append(b, byte(ResyncHashesKind)))
	case *ResyncDirDone:
		return r.Append(append(b, byte(ResyncDirDoneKind)))
	}
	return append(b, 0)
}

// ParseResyncReply parses the body of a FrameResyncReply. The reply
// aliases nothing: hashes are copied, strings are strings.
func ParseResyncReply(body []byte) (ResyncReply, error) {
	d := &decoder{b: body}
	k := ResyncKind(d.byte())
	if d.err != nil {
		return nil, d.err
	}
	var (
		r   ResyncReply
		err error
	)
	switch k {
	case ResyncHashesKind:
		r, err = parseResyncHashes(d)
	case ResyncDirDoneKind:
		r, err = parseResyncDirDone(d)
	case ResyncBeginKind, ResyncHandlesKind, ResyncDirKind, ResyncDataKind, ResyncCloseKind, ResyncEndKind:
		return nil, fmt.Errorf("%w: resync item kind %v in a reply frame", ErrMalformed, k)
	default:
		return nil, fmt.Errorf("%w: unknown resync reply kind %d", ErrMalformed, k)
	}
	if err != nil {
		return nil, fmt.Errorf("parse resync %v: %w", k, err)
	}
	return r, nil
}

// count reads the number of elements of a list and checks it against max
// and against what the rest of the body can hold at minLen bytes per
// element, so a tiny body claiming a huge list allocates nothing. A count
// within max but beyond the body is truncation, as for d.bytes.
func (d *decoder) count(what string, max, minLen int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(max) {
		d.fail(fmt.Errorf("%w: %d %s exceed %d", ErrMalformed, n, what, max))
		return 0
	}
	if n*uint64(minLen) > uint64(len(d.b)) {
		d.fail(ErrTruncated)
		return 0
	}
	return int(n)
}

// flags reads a flags byte and refuses bits outside known.
func (d *decoder) flags(what string, known byte) byte {
	f := d.byte()
	if d.err == nil && f&^known != 0 {
		d.fail(fmt.Errorf("%w: %s flags %#x", ErrMalformed, what, f))
		return 0
	}
	return f
}

// name reads a directory entry name: one path component.
func (d *decoder) name(what string) string {
	s := d.string(what, MaxNameLen)
	if d.err != nil {
		return ""
	}
	if s == "" || s == "." || s == ".." || strings.IndexByte(s, '/') >= 0 || containsNUL(s) {
		d.fail(fmt.Errorf("%w: %s %q", ErrMalformed, what, s))
		return ""
	}
	return s
}

// size reads a file size: an off_t on the slave, so at most MaxInt64.
func (d *decoder) size(what string) uint64 {
	return uint64(d.int63(what))
}

// fileID reads a FileID, which is never 0 where one is required: 0 is
// what a hard link's later entries carry instead of one.
func (d *decoder) fileID() uint64 {
	id := d.uvarint()
	if d.err == nil && id == 0 {
		d.fail(fmt.Errorf("%w: file id 0", ErrMalformed))
	}
	return id
}

func (d *decoder) hash() Hash {
	var h Hash
	if d.err != nil {
		return h
	}
	if len(d.b) < len(h) {
		d.fail(ErrTruncated)
		return h
	}
	copy(h[:], d.b)
	d.b = d.b[len(h):]
	return h
}

func appendFlag(f byte, on bool, bit byte) byte {
	if on {
		return f | bit
	}
	return f
}

// Append encodes: pass, flags (bit 0 rebase, bit 1 verify), run.
func (it *ResyncBegin) Append(b []byte) []byte {
	b = appendUvarint(b, it.Pass)
	b = append(b, appendFlag(appendFlag(appendFlag(0, it.Rebase, beginRebase), it.Verify, beginVerify), it.Full, beginFull))
	return append(b, it.Run[:]...)
}

// parseResyncBegin refuses Rebase with Verify: a rebase changes the
// slave's op stream on the strength of the repairs the pass makes, and a
// verify pass makes none.
func parseResyncBegin(d *decoder) (*ResyncBegin, error) {
	it := &ResyncBegin{Pass: d.uvarint()}
	f := d.flags("resync begin", beginRebase|beginVerify|beginFull)
	it.Rebase, it.Verify, it.Full = f&beginRebase != 0, f&beginVerify != 0, f&beginFull != 0
	if d.err == nil && it.Rebase && it.Verify {
		d.fail(fmt.Errorf("%w: resync begin with both rebase and verify", ErrMalformed))
	}
	it.Run = d.run()
	return it, d.end()
}

// Append encodes: pass, count, then handle and path of each.
func (it *ResyncHandles) Append(b []byte) []byte {
	b = appendUvarint(b, it.Pass)
	b = appendUvarint(b, uint64(len(it.Handles)))
	for _, h := range it.Handles {
		b = appendUvarint(b, h.Handle)
		b = appendString(b, h.Path)
	}
	return b
}

func parseResyncHandles(d *decoder) (*ResyncHandles, error) {
	it := &ResyncHandles{Pass: d.uvarint()}
	n := d.count("handles", MaxResyncHandles, minHandleRefLen)
	if n > 0 {
		it.Handles = make([]HandleRef, 0, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		h := HandleRef{Handle: d.uvarint(), Path: d.path("handle path", false)}
		if d.err == nil && h.Handle == 0 {
			d.fail(fmt.Errorf("%w: handle 0 for %q", ErrMalformed, h.Path))
		}
		it.Handles = append(it.Handles, h)
	}
	return it, d.end()
}

func appendAttr(b []byte, a *Attr) []byte {
	b = appendUvarint(b, uint64(a.Mode))
	b = appendUvarint(b, uint64(a.Uid))
	b = appendUvarint(b, uint64(a.Gid))
	b = appendUvarint(b, a.Size)
	return appendTime(b, a.Mtime)
}

// attr reads an Attr. Mode holds permission bits only: type bits, or
// anything above them, are refused.
func (d *decoder) attr() Attr {
	a := Attr{Mode: d.uint32("mode"), Uid: d.uint32("uid"), Gid: d.uint32("gid"), Size: d.size("size")}
	if d.err == nil && a.Mode&^0o7777 != 0 {
		d.fail(fmt.Errorf("%w: mode %#o has bits beyond the permissions", ErrMalformed, a.Mode))
	}
	a.Mtime = d.time("mtime")
	return a
}

func appendXattrs(b []byte, xs []Xattr) []byte {
	b = appendUvarint(b, uint64(len(xs)))
	for _, x := range xs {
		b = appendString(b, x.Name)
		b = appendBytes(b, x.Value)
	}
	return b
}

// xattrs reads a list of xattrs, which must be sorted by name without
// duplicates (resync.go): the slave may then merge it with its own sorted
// list, and no name is set twice. Values alias the input.
func (d *decoder) xattrs() []Xattr {
	n := d.count("xattrs", MaxResyncXattrs, minXattrLen)
	if n == 0 {
		return nil
	}
	xs := make([]Xattr, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		x := Xattr{Name: d.xattrName(), Value: d.bytes("xattr value", MaxXattrValueLen)}
		if d.err == nil && i > 0 && x.Name <= xs[i-1].Name {
			d.fail(fmt.Errorf("%w: xattr %q after %q: not sorted", ErrMalformed, x.Name, xs[i-1].Name))
		}
		xs = append(xs, x)
	}
	return xs
}

// appendEntry encodes: name, kind, attr, target (symlinks only), rdev
// (devices only), xattrs, file id, link id and flags (bit 0 compare)
// (files only).
func appendEntry(b []byte, e *Entry) []byte {
	b = appendString(b, e.Name)
	b = append(b, e.Kind)
	b = appendAttr(b, &e.Attr)
	if e.Kind == KindSymlink {
		b = appendString(b, e.Target)
	}
	if IsDevice(e.Kind) {
		b = appendUvarint(b, e.Rdev)
	}
	b = appendXattrs(b, e.Xattrs)
	if e.Kind == KindFile {
		b = appendUvarint(b, e.FileID)
		b = appendUvarint(b, e.LinkID)
		b = append(b, appendFlag(0, e.Compare, fileCompare))
	}
	return b
}

func (d *decoder) entry() Entry {
	e := Entry{Name: d.name("entry name"), Kind: d.byte()}
	if d.err == nil && (e.Kind < KindFile || e.Kind > KindBlkDev) {
		d.fail(fmt.Errorf("%w: entry %q of unknown kind %d", ErrMalformed, e.Name, e.Kind))
	}
	e.Attr = d.attr()
	if e.Kind == KindSymlink {
		// Opaque, as Symlink.Target: the slave never resolves through it.
		e.Target = d.string("symlink target", MaxPathLen)
	}
	if IsDevice(e.Kind) {
		e.Rdev = d.uvarint()
	}
	e.Xattrs = d.xattrs()
	if e.Kind == KindFile {
		e.FileID, e.LinkID = d.uvarint(), d.uvarint()
		if d.err == nil && e.FileID == 0 && e.LinkID == 0 {
			d.fail(fmt.Errorf("%w: file %q has neither a file id nor a link id", ErrMalformed, e.Name))
		}
		e.Compare = d.flags("file entry", fileCompare)&fileCompare != 0
		if d.err == nil && e.Compare && e.FileID == 0 {
			// A later name of a hard-linked file has no contents of
			// its own to compare.
			d.fail(fmt.Errorf("%w: file %q: compare without a file id", ErrMalformed, e.Name))
		}
	}
	return e
}

// Append encodes: pass, dir id, path, flags (bit 0 final), count, the
// entries; then, with Final only, the directory's attr and xattrs.
func (it *ResyncDir) Append(b []byte) []byte {
	b = appendUvarint(b, it.Pass)
	b = appendUvarint(b, it.DirID)
	b = appendString(b, it.Path)
	b = append(b, appendFlag(0, it.Final, dirFinal))
	b = appendUvarint(b, uint64(len(it.Entries)))
	for i := range it.Entries {
		b = appendEntry(b, &it.Entries[i])
	}
	if it.Final {
		b = appendAttr(b, &it.Attr)
		b = appendXattrs(b, it.Xattrs)
	}
	return b
}

// parseResyncDir returns a ResyncDir whose xattr values alias the input.
// Entries must be sorted by name without duplicates (resync.go).
func parseResyncDir(d *decoder) (*ResyncDir, error) {
	it := &ResyncDir{Pass: d.uvarint(), DirID: d.uvarint(), Path: d.path("resync dir path", true)}
	it.Final = d.flags("resync dir", dirFinal)&dirFinal != 0
	n := d.count("entries", MaxResyncEntries, minEntryLen)
	if n > 0 {
		it.Entries = make([]Entry, 0, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		e := d.entry()
		if d.err == nil && i > 0 && e.Name <= it.Entries[i-1].Name {
			d.fail(fmt.Errorf("%w: entry %q after %q: not sorted", ErrMalformed, e.Name, it.Entries[i-1].Name))
		}
		it.Entries = append(it.Entries, e)
	}
	if it.Final {
		it.Attr = d.attr()
		it.Xattrs = d.xattrs()
	}
	return it, d.end()
}

// Append encodes: pass, file id, offset, length, data (empty for a hole).
func (it *ResyncData) Append(b []byte) []byte {
	b = appendUvarint(b, it.Pass)
	b = appendUvarint(b, it.FileID)
	b = appendUvarint(b, uint64(it.Off))
	b = appendUvarint(b, uint64(it.Len))
	return appendBytes(b, it.Data)
}

// parseResyncData returns a ResyncData whose Data aliases the input, or
// is nil for a hole.
func parseResyncData(d *decoder) (*ResyncData, error) {
	it := &ResyncData{
		Pass:   d.uvarint(),
		FileID: d.fileID(),
		Off:    d.int63("resync data offset"),
		Len:    d.int63("resync data length"),
	}
	if d.err == nil && (it.Len == 0 || it.Len > ResyncBlockSize) {
		d.fail(fmt.Errorf("%w: resync data length %d not in 1..%d", ErrMalformed, it.Len, ResyncBlockSize))
	}
	if d.err == nil && it.Off > math.MaxInt64-it.Len {
		d.fail(fmt.Errorf("%w: resync data at %d+%d overflows", ErrMalformed, it.Off, it.Len))
	}
	it.Data = d.bytes("resync data", ResyncBlockSize)
	if len(it.Data) == 0 {
		it.Data = nil // a hole
	} else if d.err == nil && int64(len(it.Data)) != it.Len {
		d.fail(fmt.Errorf("%w: resync data of %d bytes, length says %d", ErrMalformed, len(it.Data), it.Len))
	}
	return it, d.end()
}

// Append encodes: pass, file id, size, mtime.
func (it *ResyncClose) Append(b []byte) []byte {
	b = appendUvarint(b, it.Pass)
	b = appendUvarint(b, it.FileID)
	b = appendUvarint(b, it.Size)
	return appendTime(b, it.Mtime)
}

func parseResyncClose(d *decoder) (*ResyncClose, error) {
	it := &ResyncClose{Pass: d.uvarint(), FileID: d.fileID(), Size: d.size("resync close size")}
	it.Mtime = d.time("mtime")
	return it, d.end()
}

// Append encodes: pass.
func (it *ResyncEnd) Append(b []byte) []byte { return appendUvarint(b, it.Pass) }

func parseResyncEnd(d *decoder) (*ResyncEnd, error) {
	return &ResyncEnd{Pass: d.uvarint()}, d.end()
}

// Append encodes: pass, file id, size, first, count, the hashes, flags
// (bit 0 more), root.
func (r *ResyncHashes) Append(b []byte) []byte {
	b = appendUvarint(b, r.Pass)
	b = appendUvarint(b, r.FileID)
	b = appendUvarint(b, r.Size)
	b = appendUvarint(b, r.First)
	b = appendUvarint(b, uint64(len(r.Hashes)))
	for i := range r.Hashes {
		b = append(b, r.Hashes[i][:]...)
	}
	b = append(b, appendFlag(0, r.More, hashesMore))
	return append(b, r.Root[:]...)
}

func parseResyncHashes(d *decoder) (*ResyncHashes, error) {
	r := &ResyncHashes{Pass: d.uvarint(), FileID: d.fileID(), Size: d.size("resync hashes size"), First: d.uvarint()}
	n := d.count("hashes", MaxResyncHashes, HashLen)
	if n > 0 {
		r.Hashes = make([]Hash, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		r.Hashes[i] = d.hash()
	}
	r.More = d.flags("resync hashes", hashesMore)&hashesMore != 0
	r.Root = d.hash()
	return r, d.end()
}

// Append encodes: pass, dir id, flags (bit 0 part), count, then path and
// what of each difference (what cut to MaxDiffWhatLen bytes).
func (r *ResyncDirDone) Append(b []byte) []byte {
	b = appendUvarint(b, r.Pass)
	b = appendUvarint(b, r.DirID)
	b = append(b, appendFlag(0, r.Part, donePart))
	b = appendUvarint(b, uint64(len(r.Diffs)))
	for _, df := range r.Diffs {
		b = appendString(b, df.Path)
		what := df.What
		if len(what) > MaxDiffWhatLen {
			what = what[:MaxDiffWhatLen]
		}
		b = appendString(b, what)
	}
	return b
}

func parseResyncDirDone(d *decoder) (*ResyncDirDone, error) {
	r := &ResyncDirDone{Pass: d.uvarint(), DirID: d.uvarint()}
	r.Part = d.flags("resync dir done", donePart)&donePart != 0
	n := d.count("differences", MaxResyncDiffs, minDifferenceLen)
	if n > 0 {
		r.Diffs = make([]Difference, 0, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		r.Diffs = append(r.Diffs, Difference{
			Path: d.path("difference path", true),
			What: d.string("difference", MaxDiffWhatLen),
		})
	}
	return r, d.end()
}
