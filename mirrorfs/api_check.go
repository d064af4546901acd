package mirrorfs

import "github.com/hanwen/go-fuse/v2/fs"

// What node implements itself: every node method *fs.LoopbackNode has
// (pathmax_test.go checks that none is left to promotion), since those
// reach the backing dir by a path that starts with its own
// (backing.go).
var (
	_ = (fs.NodeWrapChilder)((*node)(nil))
	_ = (fs.NodeOpener)((*node)(nil))
	_ = (fs.NodeCreater)((*node)(nil))
	_ = (fs.NodeMkdirer)((*node)(nil))
	_ = (fs.NodeMknoder)((*node)(nil))
	_ = (fs.NodeSymlinker)((*node)(nil))
	_ = (fs.NodeLinker)((*node)(nil))
	_ = (fs.NodeUnlinker)((*node)(nil))
	_ = (fs.NodeRmdirer)((*node)(nil))
	_ = (fs.NodeRenamer)((*node)(nil))
	_ = (fs.NodeSetattrer)((*node)(nil))
	_ = (fs.NodeSetxattrer)((*node)(nil))
	_ = (fs.NodeRemovexattrer)((*node)(nil))
	_ = (fs.NodeGetxattrer)((*node)(nil))
	_ = (fs.NodeListxattrer)((*node)(nil))
	_ = (fs.NodeStatfser)((*node)(nil))
	_ = (fs.NodeStatxer)((*node)(nil))
	_ = (fs.NodeGetattrer)((*node)(nil))
	_ = (fs.NodeLookuper)((*node)(nil))
	_ = (fs.NodeReadlinker)((*node)(nil))
	_ = (fs.NodeOpendirHandler)((*node)(nil))
	_ = (fs.NodeReaddirer)((*node)(nil))
	_ = (fs.NodeTmpfiler)((*node)(nil))
	_ = (fs.NodeIoctler)((*node)(nil))
	_ = (fs.NodeCopyFileRanger)((*node)(nil))
)

// What file implements. It must not implement fs.FilePassthroughFder
// (file_test.go checks that) nor fs.FileIoctler.
var (
	_ = (fs.FileHandle)((*file)(nil))
	_ = (fs.FileReader)((*file)(nil))
	_ = (fs.FileWriter)((*file)(nil))
	_ = (fs.FileWritever)((*file)(nil))
	_ = (fs.FileAllocater)((*file)(nil))
	_ = (fs.FileReleaser)((*file)(nil))
	_ = (fs.FileGetattrer)((*file)(nil))
	_ = (fs.FileStatxer)((*file)(nil))
	_ = (fs.FileLseeker)((*file)(nil))
	_ = (fs.FileFlusher)((*file)(nil))
	_ = (fs.FileFsyncer)((*file)(nil))
	_ = (fs.FileGetlker)((*file)(nil))
	_ = (fs.FileSetlker)((*file)(nil))
	_ = (fs.FileSetlkwer)((*file)(nil))
)
