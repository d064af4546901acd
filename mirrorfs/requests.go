package mirrorfs

import (
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// reqOp numbers the FUSE requests a RequestCounter tells apart.
type reqOp int

const (
	reqLookup reqOp = iota
	reqForget
	reqGetattr
	reqSetattr
	reqMknod
	reqMkdir
	reqUnlink
	reqRmdir
	reqRename
	reqLink
	reqSymlink
	reqReadlink
	reqAccess
	reqGetxattr
	reqListxattr
	reqSetxattr
	reqRemovexattr
	reqCreate
	reqTmpfile
	reqOpen
	reqRead
	reqLseek
	reqGetlk
	reqSetlk
	reqSetlkw
	reqRelease
	reqWrite
	reqCopyFileRange
	reqIoctl
	reqFlush
	reqFsync
	reqFallocate
	reqOpendir
	reqReaddir
	reqReaddirplus
	reqReleasedir
	reqFsyncdir
	reqStatfs
	reqStatx
	numReqOps
)

// reqNames are the kernel's opcode names (include/uapi/linux/fuse.h
// without the FUSE_ prefix), as go-fuse's debug log prints them.
var reqNames = [numReqOps]string{
	reqLookup: "LOOKUP", reqForget: "FORGET", reqGetattr: "GETATTR", reqSetattr: "SETATTR",
	reqMknod: "MKNOD", reqMkdir: "MKDIR", reqUnlink: "UNLINK", reqRmdir: "RMDIR",
	reqRename: "RENAME", reqLink: "LINK", reqSymlink: "SYMLINK", reqReadlink: "READLINK",
	reqAccess: "ACCESS", reqGetxattr: "GETXATTR", reqListxattr: "LISTXATTR", reqSetxattr: "SETXATTR",
	reqRemovexattr: "REMOVEXATTR", reqCreate: "CREATE", reqTmpfile: "TMPFILE", reqOpen: "OPEN",
	reqRead: "READ", reqLseek: "LSEEK", reqGetlk: "GETLK", reqSetlk: "SETLK", reqSetlkw: "SETLKW",
	reqRelease: "RELEASE", reqWrite: "WRITE", reqCopyFileRange: "COPY_FILE_RANGE", reqIoctl: "IOCTL",
	reqFlush: "FLUSH", reqFsync: "FSYNC", reqFallocate: "FALLOCATE", reqOpendir: "OPENDIR",
	reqReaddir: "READDIR", reqReaddirplus: "READDIRPLUS", reqReleasedir: "RELEASEDIR",
	reqFsyncdir: "FSYNCDIR", reqStatfs: "STATFS", reqStatx: "STATX",
}

// requestCounts is one atomic counter per request type.
type requestCounts [numReqOps]atomic.Uint64

// snapshot returns the non-zero counts by opcode name.
func (c *requestCounts) snapshot() map[string]uint64 {
	out := make(map[string]uint64)
	for i := range c {
		if n := c[i].Load(); n != 0 {
			out[reqNames[i]] = n
		}
	}
	return out
}

// processRequests sums the requests of every mirror mount of this process
// (ProcessRequests): the master's metrics collector is registered before
// its mount exists.
var processRequests requestCounts

// ProcessRequests returns how many FUSE requests every mirror mount of this
// process has received so far, by opcode name (LOOKUP, GETATTR, WRITE,
// ...; types never seen are left out). The counts only grow.
func ProcessRequests() map[string]uint64 { return processRequests.snapshot() }

// RequestCounter wraps a fuse.RawFileSystem and counts the requests that
// reach it, by opcode, with one atomic add each. It is exported so that a
// benchmark can count a bare go-fuse loopback (MountBareLoopback) exactly
// as the mirror counts itself (Server.Requests).
//
// go-fuse v2.12.1 has no per-opcode statistics of its own
// (Server.RecordLatencies is a no-op), and fuse.Server does not
// type-assert the RawFileSystem it serves, so a wrapper sees every request
// the kernel sends but INIT, INTERRUPT and the NOTIFY replies, which go-fuse
// answers itself. BATCH_FORGET is counted once per node, as FORGET (go-fuse
// calls Forget for each). WRITE counts both Write and Writev: go-fuse
// enters through Writev.
type RequestCounter struct {
	fuse.RawFileSystem
	n   requestCounts
	sum *requestCounts // also counted here when non-nil (processRequests)
}

// NewRequestCounter wraps fs.
func NewRequestCounter(fs fuse.RawFileSystem) *RequestCounter {
	return &RequestCounter{RawFileSystem: fs}
}

// Counts returns the requests seen so far by opcode name; types never
// seen are left out.
func (c *RequestCounter) Counts() map[string]uint64 { return c.n.snapshot() }

// Total returns the number of requests seen so far.
func (c *RequestCounter) Total() uint64 {
	var t uint64
	for i := range c.n {
		t += c.n[i].Load()
	}
	return t
}

func (c *RequestCounter) count(op reqOp) {
	c.n[op].Add(1)
	if c.sum != nil {
		c.sum[op].Add(1)
	}
}

func (c *RequestCounter) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	c.count(reqLookup)
	return c.RawFileSystem.Lookup(cancel, h, name, out)
}

func (c *RequestCounter) Forget(nodeid, nlookup uint64) {
	c.count(reqForget)
	c.RawFileSystem.Forget(nodeid, nlookup)
}

func (c *RequestCounter) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	c.count(reqGetattr)
	return c.RawFileSystem.GetAttr(cancel, in, out)
}

func (c *RequestCounter) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	c.count(reqSetattr)
	return c.RawFileSystem.SetAttr(cancel, in, out)
}

func (c *RequestCounter) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	c.count(reqMknod)
	return c.RawFileSystem.Mknod(cancel, in, name, out)
}

func (c *RequestCounter) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	c.count(reqMkdir)
	return c.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (c *RequestCounter) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	c.count(reqUnlink)
	return c.RawFileSystem.Unlink(cancel, h, name)
}

func (c *RequestCounter) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	c.count(reqRmdir)
	return c.RawFileSystem.Rmdir(cancel, h, name)
}

func (c *RequestCounter) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	c.count(reqRename)
	return c.RawFileSystem.Rename(cancel, in, oldName, newName)
}

func (c *RequestCounter) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	c.count(reqLink)
	return c.RawFileSystem.Link(cancel, in, name, out)
}

func (c *RequestCounter) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	c.count(reqSymlink)
	return c.RawFileSystem.Symlink(cancel, h, target, name, out)
}

func (c *RequestCounter) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	c.count(reqReadlink)
	return c.RawFileSystem.Readlink(cancel, h)
}

func (c *RequestCounter) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	c.count(reqAccess)
	return c.RawFileSystem.Access(cancel, in)
}

func (c *RequestCounter) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	c.count(reqGetxattr)
	return c.RawFileSystem.GetXAttr(cancel, h, attr, dest)
}

func (c *RequestCounter) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	c.count(reqListxattr)
	return c.RawFileSystem.ListXAttr(cancel, h, dest)
}

func (c *RequestCounter) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	c.count(reqSetxattr)
	return c.RawFileSystem.SetXAttr(cancel, in, attr, data)
}

func (c *RequestCounter) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	c.count(reqRemovexattr)
	return c.RawFileSystem.RemoveXAttr(cancel, h, attr)
}

func (c *RequestCounter) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	c.count(reqCreate)
	return c.RawFileSystem.Create(cancel, in, name, out)
}

func (c *RequestCounter) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	c.count(reqTmpfile)
	return c.RawFileSystem.Tmpfile(cancel, in, out)
}

func (c *RequestCounter) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	c.count(reqOpen)
	return c.RawFileSystem.Open(cancel, in, out)
}

func (c *RequestCounter) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	c.count(reqRead)
	return c.RawFileSystem.Read(cancel, in, buf)
}

func (c *RequestCounter) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	c.count(reqLseek)
	return c.RawFileSystem.Lseek(cancel, in, out)
}

func (c *RequestCounter) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	c.count(reqGetlk)
	return c.RawFileSystem.GetLk(cancel, in, out)
}

func (c *RequestCounter) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	c.count(reqSetlk)
	return c.RawFileSystem.SetLk(cancel, in)
}

func (c *RequestCounter) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	c.count(reqSetlkw)
	return c.RawFileSystem.SetLkw(cancel, in)
}

func (c *RequestCounter) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	c.count(reqRelease)
	c.RawFileSystem.Release(cancel, in)
}

func (c *RequestCounter) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	c.count(reqWrite)
	return c.RawFileSystem.Write(cancel, in, data)
}

func (c *RequestCounter) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	c.count(reqWrite)
	return c.RawFileSystem.Writev(cancel, in, data)
}

func (c *RequestCounter) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	c.count(reqCopyFileRange)
	return c.RawFileSystem.CopyFileRange(cancel, in)
}

func (c *RequestCounter) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	c.count(reqIoctl)
	return c.RawFileSystem.Ioctl(cancel, in, inbuf, out, outbuf)
}

func (c *RequestCounter) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	c.count(reqFlush)
	return c.RawFileSystem.Flush(cancel, in)
}

func (c *RequestCounter) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	c.count(reqFsync)
	return c.RawFileSystem.Fsync(cancel, in)
}

func (c *RequestCounter) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	c.count(reqFallocate)
	return c.RawFileSystem.Fallocate(cancel, in)
}

func (c *RequestCounter) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	c.count(reqOpendir)
	return c.RawFileSystem.OpenDir(cancel, in, out)
}

func (c *RequestCounter) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c.count(reqReaddir)
	return c.RawFileSystem.ReadDir(cancel, in, out)
}

func (c *RequestCounter) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c.count(reqReaddirplus)
	return c.RawFileSystem.ReadDirPlus(cancel, in, out)
}

func (c *RequestCounter) ReleaseDir(in *fuse.ReleaseIn) {
	c.count(reqReleasedir)
	c.RawFileSystem.ReleaseDir(in)
}

func (c *RequestCounter) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	c.count(reqFsyncdir)
	return c.RawFileSystem.FsyncDir(cancel, in)
}

func (c *RequestCounter) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	c.count(reqStatfs)
	return c.RawFileSystem.StatFs(cancel, h, out)
}

func (c *RequestCounter) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	c.count(reqStatx)
	return c.RawFileSystem.Statx(cancel, in, out)
}
