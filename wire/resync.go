package wire

// Resync vocabulary. A resync pass makes one slave's tree equal to the
// master's backing dir by comparison, while live ops keep flowing
// (docs/design.md, Resync passes).
//
// Items travel master -> slave on the control stream in FrameResync frames.
// Every item is positioned: it applies after op number After and before
// op After+1, in the order items were sent. The master builds each item
// while holding the mirrorfs locks that exclude every op conflicting with
// what the item describes, and tags it with the last seq numbered at that
// moment; so at its position, an item describes exactly the master's tree
// as of that seq. Applying a pass's items at their positions, and every
// op in between, leaves the slave equal to the master as of the position
// of the pass's ResyncEnd.
//
// Replies travel slave -> master on the control stream in
// FrameResyncReply frames; they are not positioned, but they are ordered:
// the slave applies items in their order and sends each item's replies
// before it applies the next item, and the master relies on that order
// (the ResyncHashes a ResyncDir causes arrive before its ResyncDirDone;
// replies of one pass arrive in the order of the items they answer). One
// control stream in each direction keeps the order on the wire.
//
// A pass has a number (Pass), chosen by the master, unique on its
// connection; items and replies of another pass are refused.

// ResyncKind says what a resync item or reply holds. The numbers are part
// of the protocol: never renumber, only append.
type ResyncKind uint8

// Items (master -> slave).
const (
	ResyncBeginKind   ResyncKind = 1 // ResyncBegin
	ResyncHandlesKind ResyncKind = 2 // ResyncHandles
	ResyncDirKind     ResyncKind = 3 // ResyncDir
	ResyncDataKind    ResyncKind = 4 // ResyncData
	ResyncCloseKind   ResyncKind = 5 // ResyncClose
	ResyncEndKind     ResyncKind = 6 // ResyncEnd
)

// Replies (slave -> master).
const (
	ResyncHashesKind  ResyncKind = 16 // ResyncHashes
	ResyncDirDoneKind ResyncKind = 17 // ResyncDirDone
)

// ResyncBlockSize is the block size of content hashes and data items.
const ResyncBlockSize = 128 << 10

// HashLen is the length of a block hash: SHA-256 truncated. It detects
// differences, it does not authenticate (the connection does).
const HashLen = 16

// Hash is a truncated SHA-256 of one block (or, for a whole file, of the
// concatenation of its block hashes).
type Hash [HashLen]byte

// Resync limits, checked by the decoder before allocating.
const (
	// MaxResyncEntries bounds the entries of one ResyncDir item (a large
	// directory is sent in several items with the same DirID).
	MaxResyncEntries = 4096
	// MaxResyncHandles bounds the handles of one ResyncHandles item.
	MaxResyncHandles = 4096
	// MaxResyncHashes bounds the hashes of one ResyncHashes reply (a large
	// file is described in several).
	MaxResyncHashes = 32768
	// MaxResyncXattrs bounds the xattrs of one entry.
	MaxResyncXattrs = 256
)

// ResyncItem is one master -> slave item. It is sealed: only the item
// types of this file implement it, so the compiler refuses a reply where
// an item belongs (the two interfaces would otherwise be the same type).
type ResyncItem interface {
	ResyncKind() ResyncKind
	InPass() uint64 // the pass it belongs to
	String() string // what it is, for messages: "dir \"a/b\" (id 3)"
	resyncItem()
}

// ResyncReply is one slave -> master reply; sealed like ResyncItem.
type ResyncReply interface {
	ResyncKind() ResyncKind
	InPass() uint64
	String() string
	resyncReply()
}

// ResyncBegin starts pass Pass.
//
// With Rebase, the slave's tree is of unknown state relative to the
// master (a new slave, a journal that could not cover it, a replica edited
// by hand): the slave drops any op it buffered, its next op is After+1,
// and until ResyncEnd it applies ops tolerantly (an op that fails because
// the slave's tree still differs is skipped: the pass repairs what it
// touched). Without Rebase the slave is in sync at After already (verify,
// or a check after the master crashed) and stays on its op stream.
//
// With Verify the slave changes nothing: it only compares, and reports
// differences in its replies.
type ResyncBegin struct {
	Pass   uint64
	Rebase bool
	Verify bool
	// Full: compare the contents of every file, not only of those
	// whose size or mtime differ (a repair after verify found a
	// difference that left both alone).
	Full bool
	// Run is the master's run at the item's position: after a rebase,
	// the slave's ops are that run's (HelloAck.Run).
	Run RunID
}

// HandleRef is a file the master holds open for writing.
type HandleRef struct {
	Handle uint64
	Path   string // its path at the item's position
}

// ResyncHandles tells the slave which handles are open on the master at
// the item's position: the slave opens Path for writing under Handle
// (replacing what it held under that handle), creating the file (and
// missing parent directories) if it lacks them; the pass fixes their
// attributes and contents later. Only rebase passes send it, at two
// points:
//   - right after ResyncBegin, listing every handle whose file has a
//     name on the master (in several items if there are many). Open files
//     that no longer have a name on the master are not listed: writes
//     through their handles change nothing visible, and the slave skips
//     them;
//   - right after a ResyncDir that lists files open for writing on the
//     master, naming their handles again: the listing may have replaced
//     the slave's file under that name (a kind or hard-link mismatch), and
//     the handles must name the file the listing left there.
type ResyncHandles struct {
	Pass    uint64
	Handles []HandleRef
}

// Entry kinds.
const (
	KindFile    uint8 = 1
	KindDir     uint8 = 2
	KindSymlink uint8 = 3
	KindFifo    uint8 = 4
	KindSocket  uint8 = 5
	KindCharDev uint8 = 6 // character device (Entry.Rdev)
	KindBlkDev  uint8 = 7 // block device (Entry.Rdev)
)

// IsDevice reports whether kind is a device node's.
func IsDevice(kind uint8) bool { return kind == KindCharDev || kind == KindBlkDev }

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Attr is the attributes of a directory entry that the resync compares.
type Attr struct {
	Mode     uint32 // permission bits incl. setuid/setgid/sticky (no type bits)
	Uid, Gid uint32
	Size     uint64 // files only
	Mtime    Time
}

// Entry is one directory entry as the master has it.
type Entry struct {
	Name   string
	Kind   uint8 // KindFile ...
	Attr   Attr
	Target string  // KindSymlink: the link's target
	Rdev   uint64  // KindCharDev, KindBlkDev: the device number
	Xattrs []Xattr // sorted by name
	// FileID (KindFile) names the file for the rest of the pass: the
	// slave's ResyncHashes and the master's ResyncData/ResyncClose use
	// it. Unique within the pass.
	FileID uint64
	// LinkID is non-zero when the file has other hard links on the
	// master: every entry with the same LinkID must be the same file on
	// the slave. The first entry of a LinkID carries a FileID; later
	// ones carry FileID 0 and are hard links to the first.
	LinkID uint64
	// Compare (an entry with a FileID only) makes the slave compare the
	// file's contents even when its size and mtime equal the entry's.
	// The master sets it on files that an op numbered during the pass
	// changed: every op carries the master's mtime, so such an op may
	// have given a stale copy on the slave the master's mtime, and the
	// quick check (size and mtime, as rsync's) would pass it as equal.
	Compare bool
}

// ResyncDir describes directory Path at the item's position. A directory
// with many entries is sent as several items with the same DirID, sorted
// by name across items; Final marks the last one.
//
// The slave makes Path a directory, removes what it has in it that the
// master lacks (once it has seen the Final item: names of earlier items
// are kept) or whose kind differs, creates what it lacks (empty files,
// directories, symlinks, fifos, hard links), and sets every entry's
// attributes and xattrs (a directory's own attributes are set by its own
// ResyncDir). For each file whose size or mtime differs, it answers
// ResyncHashes with the hashes of its blocks at this position (or, in
// Verify mode, of every file: Root only). With the Final item it sets
// Path's own attributes and xattrs (Attr.Size unused) and answers
// ResyncDirDone; after a non-Final item, it answers ResyncDirDone with
// Part.
type ResyncDir struct {
	Pass    uint64
	DirID   uint64
	Path    string
	Entries []Entry
	Final   bool
	Attr    Attr    // with Final: the directory's own attributes
	Xattrs  []Xattr // with Final: the directory's own xattrs
}

// ResyncData writes Data at Off into file FileID; with Data empty it
// punches a hole of Len bytes at Off (the master's block is a hole or all
// zeros).
type ResyncData struct {
	Pass   uint64
	FileID uint64
	Off    int64
	Len    int64 // len(Data), or the hole's length
	Data   []byte
}

// ResyncClose ends the content transfer of FileID: the slave sets its
// size and mtime (the item's position fixes them) and forgets FileID.
//
// With Mtime.Omit the file is gone from the master (every name of it was
// unlinked by ops the slave applied too): the slave only forgets FileID,
// changing nothing (Size is unused).
//
// A FileID is superseded when a later ResyncDir binds the slave's file
// that FileID names to another FileID (the master listed it again: a
// live op the slave could not apply may have left that file under a name
// where the master now has another). From then on the new FileID's hashes
// describe the file, and the master sends what differs from them; so the
// slave ignores the old FileID's ResyncData, and its ResyncClose only
// forgets it. Otherwise the old FileID's blocks, sent after the new
// hashes were taken, would overwrite blocks the master judged equal.
type ResyncClose struct {
	Pass   uint64
	FileID uint64
	Size   uint64
	Mtime  Time
}

// ResyncEnd ends pass Pass. In repair mode the slave equals the master as
// of the item's position and leaves the resyncing state.
type ResyncEnd struct {
	Pass uint64
}

// ResyncHashes is the slave's answer for file FileID: its size and the
// hashes of blocks First, First+1, ... (ResyncBlockSize each, the last one
// short; a hole hashes like zeros) at the position of the ResyncDir that
// named the file. More says further ResyncHashes follow for the file. In
// Verify mode Hashes is empty and Root is the hash of all block hashes.
type ResyncHashes struct {
	Pass   uint64
	FileID uint64
	Size   uint64
	First  uint64
	Hashes []Hash
	More   bool
	Root   Hash
}

// Difference is one path on which the slave differs from the master.
type Difference struct {
	Path string
	What string // human-readable: "missing", "extra", "mode 0644 != 0600", ...
}

// ResyncDirDone says the slave has applied ResyncDir DirID (its Final
// item). Diffs lists what differed: in Verify mode, what the slave found;
// in repair mode, what it changed (for the log and the counters). Files
// whose content is still to be compared appear in ResyncHashes instead.
//
// With Part, it says the slave has applied the next non-Final item of
// DirID: the slave answers every ResyncDir item, so the master can let go
// of the files of a large directory's earlier items that the slave did
// not ask about (no ResyncHashes) before the directory's Final item. A
// Part reply carries no Diffs (the Final one carries the directory's).
type ResyncDirDone struct {
	Pass  uint64
	DirID uint64
	Part  bool
	Diffs []Difference
}

func (*ResyncBegin) ResyncKind() ResyncKind   { return ResyncBeginKind }
func (*ResyncHandles) ResyncKind() ResyncKind { return ResyncHandlesKind }
func (*ResyncDir) ResyncKind() ResyncKind     { return ResyncDirKind }
func (*ResyncData) ResyncKind() ResyncKind    { return ResyncDataKind }
func (*ResyncClose) ResyncKind() ResyncKind   { return ResyncCloseKind }
func (*ResyncEnd) ResyncKind() ResyncKind     { return ResyncEndKind }
func (*ResyncHashes) ResyncKind() ResyncKind  { return ResyncHashesKind }
func (*ResyncDirDone) ResyncKind() ResyncKind { return ResyncDirDoneKind }

func (*ResyncBegin) resyncItem()    {}
func (*ResyncHandles) resyncItem()  {}
func (*ResyncDir) resyncItem()      {}
func (*ResyncData) resyncItem()     {}
func (*ResyncClose) resyncItem()    {}
func (*ResyncEnd) resyncItem()      {}
func (*ResyncHashes) resyncReply()  {}
func (*ResyncDirDone) resyncReply() {}

var (
	_ ResyncItem  = (*ResyncBegin)(nil)
	_ ResyncItem  = (*ResyncHandles)(nil)
	_ ResyncItem  = (*ResyncDir)(nil)
	_ ResyncItem  = (*ResyncData)(nil)
	_ ResyncItem  = (*ResyncClose)(nil)
	_ ResyncItem  = (*ResyncEnd)(nil)
	_ ResyncReply = (*ResyncHashes)(nil)
	_ ResyncReply = (*ResyncDirDone)(nil)
)

// MaxResyncDiffs bounds the differences of one ResyncDirDone; the slave
// sends the first ones and a final Difference whose What says how many
// more there were.
const MaxResyncDiffs = 1024
