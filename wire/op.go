package wire

import "fmt"

// OpType identifies a mutating operation. The numbers are part of the
// protocol: never renumber, only append.
type OpType uint8

// Op types.
const (
	OpCreate      OpType = 1  // create (or open with O_CREAT) a regular file, optionally under a handle
	OpMkdir       OpType = 2  // make a directory
	OpMknod       OpType = 3  // make a fifo, socket or empty regular file (never a device on the slave)
	OpSymlink     OpType = 4  // make a symbolic link
	OpLink        OpType = 5  // make a hard link
	OpUnlink      OpType = 6  // remove a non-directory
	OpRmdir       OpType = 7  // remove an empty directory
	OpRename      OpType = 8  // rename, with RENAME_NOREPLACE / RENAME_EXCHANGE flags
	OpOpen        OpType = 9  // open an existing file for writing under a handle
	OpRelease     OpType = 10 // close a handle
	OpWrite       OpType = 11 // pwrite through a handle
	OpSetattr     OpType = 12 // chmod, chown, truncate, utimens
	OpSetxattr    OpType = 13 // set an extended attribute
	OpRemovexattr OpType = 14 // remove an extended attribute
	OpFallocate   OpType = 15 // fallocate through a handle (mode whitelisted by the slave)
	OpSync        OpType = 16 // make every op up to this one durable
	OpRunStart    OpType = 17 // a master process starts: handles of earlier runs are gone
	OpCopyRange   OpType = 18 // copy_file_range into a handle from the slave's own copy of the source
	OpUnclean     OpType = 19 // right after a RunStart: the previous run ended without a clean stop
)

func (t OpType) String() string {
	switch t {
	case OpCreate:
		return "create"
	case OpMkdir:
		return "mkdir"
	case OpMknod:
		return "mknod"
	case OpSymlink:
		return "symlink"
	case OpLink:
		return "link"
	case OpUnlink:
		return "unlink"
	case OpRmdir:
		return "rmdir"
	case OpRename:
		return "rename"
	case OpOpen:
		return "open"
	case OpRelease:
		return "release"
	case OpWrite:
		return "write"
	case OpSetattr:
		return "setattr"
	case OpSetxattr:
		return "setxattr"
	case OpRemovexattr:
		return "removexattr"
	case OpFallocate:
		return "fallocate"
	case OpSync:
		return "sync"
	case OpRunStart:
		return "run-start"
	case OpCopyRange:
		return "copy-range"
	case OpUnclean:
		return "unclean-start"
	}
	return fmt.Sprintf("op(%d)", uint8(t))
}

// Op is one mutating operation, as applied on the master.
//
// Paths are relative to the replicated root, slash-separated and clean; ""
// names the root itself. Handles are master-chosen ids of files opened for
// writing (docs/design.md, Handles): a write names the handle, not a path, so
// it lands where it landed on the master even after a rename or unlink of the
// open file. Handle 0 means "no handle".
//
// Times are the values the master's backing dir holds after the op (read
// back with stat), so the slave ends with the master's mtimes although
// applying the op moves them on the slave.
//
// Every op also names itself (String) and, through PathOp, HandleOp and
// OpenerOp, the paths and handles it acts on, so that code handling every
// op alike needs no switch over op types (op_describe.go).
type Op interface {
	Type() OpType
	// Append appends the op's payload (not its type or seq) to b.
	Append(b []byte) []byte
}

// Time is a timestamp with nanosecond precision. Omit means "leave
// unchanged" (UTIME_OMIT).
type Time struct {
	Sec  int64
	Nsec uint32 // < 1e9
	Omit bool
}

// Open flags carried in Create.Flags and Open.Flags. They are Linux's
// generic open(2) values (amd64, arm64, riscv64 ...), fixed here as part of
// the protocol so a master on an architecture with other values translates.
const (
	OpenExcl  uint32 = 0o200  // O_EXCL
	OpenTrunc uint32 = 0o1000 // O_TRUNC
)

// Create creates a regular file (open(2) with O_CREAT) and, when Handle is
// not 0, keeps it open under Handle for later writes.
type Create struct {
	Path     string
	Handle   uint64
	Flags    uint32 // OpenExcl, OpenTrunc as the master used them; other bits are ignored
	Mode     uint32 // permission bits incl. setuid/setgid/sticky, after the caller's umask
	Uid, Gid uint32 // owner of the new file on the master
	Mtime    Time   // the file's mtime after the op
	DirMtime Time   // the parent directory's mtime after the op
}

// Mkdir makes a directory.
type Mkdir struct {
	Path     string
	Mode     uint32
	Uid, Gid uint32
	Mtime    Time
	DirMtime Time
}

// Mknod makes a fifo, a socket or an empty regular file. Mode carries the
// file type bits (S_IFIFO, ...). The slave refuses character and block
// devices.
type Mknod struct {
	Path     string
	Mode     uint32
	Rdev     uint64
	Uid, Gid uint32
	Mtime    Time
	DirMtime Time
}

// Symlink makes a symbolic link at Path pointing to Target. Target is opaque
// data: the slave never resolves through it.
type Symlink struct {
	Path     string
	Target   string
	Uid, Gid uint32
	Mtime    Time
	DirMtime Time
}

// Link makes NewPath a hard link to OldPath.
type Link struct {
	OldPath  string
	NewPath  string
	DirMtime Time // NewPath's parent
}

// Unlink removes a non-directory.
type Unlink struct {
	Path     string
	DirMtime Time
}

// Rmdir removes an empty directory.
type Rmdir struct {
	Path     string
	DirMtime Time
}

// Rename flags, as renameat2(2).
const (
	RenameNoReplace uint32 = 1 // RENAME_NOREPLACE
	RenameExchange  uint32 = 2 // RENAME_EXCHANGE
)

// Rename renames OldPath to NewPath with renameat2(2) Flags.
type Rename struct {
	OldPath     string
	NewPath     string
	Flags       uint32
	OldDirMtime Time
	NewDirMtime Time
}

// Open opens the existing regular file Path for writing under Handle.
// Flags: OpenTrunc as the master used it; other bits are ignored.
type Open struct {
	Path   string
	Handle uint64
	Flags  uint32
	Mtime  Time // after the op (O_TRUNC moves it)
}

// Release closes Handle.
type Release struct {
	Handle uint64
}

// Write writes Data at Off through Handle (pwrite(2)).
type Write struct {
	Handle uint64
	Off    int64
	Data   []byte
	Mtime  Time // the file's mtime after the write
}

// Setattr valid bits: which fields of a Setattr apply.
const (
	SetMode  uint32 = 1 << 0
	SetUid   uint32 = 1 << 1
	SetGid   uint32 = 1 << 2
	SetSize  uint32 = 1 << 3
	SetAtime uint32 = 1 << 4
	SetMtime uint32 = 1 << 5
)

// Setattr changes attributes of the file at Path, or of the file open under
// Handle when Handle is not 0 (then Path is ignored). Mtime is always the
// file's mtime after the op, and the slave always sets it (unless Omit);
// Atime is applied only with SetAtime.
type Setattr struct {
	Handle   uint64
	Path     string
	Valid    uint32
	Mode     uint32 // permission bits incl. setuid/setgid/sticky
	Uid, Gid uint32
	Size     uint64
	Atime    Time
	Mtime    Time
}

// Setxattr flags, as setxattr(2).
const (
	XattrCreate  uint32 = 1 // XATTR_CREATE
	XattrReplace uint32 = 2 // XATTR_REPLACE
)

// Setxattr sets extended attribute Name of the file at Path (not following
// a final symlink).
type Setxattr struct {
	Path  string
	Name  string
	Value []byte
	Flags uint32
}

// Removexattr removes extended attribute Name of the file at Path.
type Removexattr struct {
	Path string
	Name string
}

// Fallocate calls fallocate(2) on the file open under Handle.
type Fallocate struct {
	Handle uint64
	Mode   uint32 // 0, FALLOC_FL_KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE
	Off    int64
	Len    int64
	Mtime  Time
}

// CopyRange copies Len bytes at SrcOff of a source file to Off in the file
// open under Handle (copy_file_range(2)), from the slave's own copy of the
// source: the bytes do not cross the network (docs/design.md, Performance
// model). The source is the file open under SrcHandle, or when SrcHandle is 0
// the regular file at SrcPath: exactly one of them is set. A path is safe
// because the op is numbered under the namespace lock (shared), so it names
// the source as of this op; the master names a source that has no name
// (unlinked while open) by a writable handle of it.
//
// Len is what the master copied (its copy_file_range may stop short at the
// source's end of file), at most MaxCopyLen: the slave, whose source is
// identical as of this op, copies exactly Len bytes or fails.
type CopyRange struct {
	SrcHandle uint64
	SrcPath   string
	SrcOff    int64
	Handle    uint64
	Off       int64
	Len       int64
	Mtime     Time // the destination's mtime after the copy
}

// RunStart is the first op of every master run (process start). Handles
// are ids of one run: the slave closes every handle it holds when it
// applies a RunStart, and remembers Run, so that after a crash of the
// master it can tell whether it holds ops of a run the master lost.
type RunStart struct {
	Run RunID
	// Unclean: the previous run of this master ended without a clean
	// stop (a crash, kill -9), so its last ops may have changed the
	// backing dir without being journaled. The ops of this run may then
	// depend on state no slave ever received: a slave applies them
	// tolerantly (skipping what meets a tree that differs) until a
	// comparison pass has ended, and counts itself as resyncing.
	Unclean bool
}

// Unclean follows the RunStart of a run whose predecessor ended without a
// clean stop (a crash, kill -9): the predecessor's last ops may have
// changed the backing dir without being journaled, so no slave received
// them, and the ops of this run may depend on what they did. A slave
// applies the ops after an Unclean tolerantly (skipping what meets a tree
// that differs) and counts itself as resyncing until a comparison pass
// has ended (the master runs one with every slave after such a start).
type Unclean struct{}

// Sync asks the slave to make every op up to and including this one
// durable (fsync/fdatasync on the master).
type Sync struct{}

func (*Create) Type() OpType      { return OpCreate }
func (*Mkdir) Type() OpType       { return OpMkdir }
func (*Mknod) Type() OpType       { return OpMknod }
func (*Symlink) Type() OpType     { return OpSymlink }
func (*Link) Type() OpType        { return OpLink }
func (*Unlink) Type() OpType      { return OpUnlink }
func (*Rmdir) Type() OpType       { return OpRmdir }
func (*Rename) Type() OpType      { return OpRename }
func (*Open) Type() OpType        { return OpOpen }
func (*Release) Type() OpType     { return OpRelease }
func (*Write) Type() OpType       { return OpWrite }
func (*Setattr) Type() OpType     { return OpSetattr }
func (*Setxattr) Type() OpType    { return OpSetxattr }
func (*Removexattr) Type() OpType { return OpRemovexattr }
func (*Fallocate) Type() OpType   { return OpFallocate }
func (*Sync) Type() OpType        { return OpSync }
func (*RunStart) Type() OpType    { return OpRunStart }
func (*CopyRange) Type() OpType   { return OpCopyRange }
func (*Unclean) Type() OpType     { return OpUnclean }
