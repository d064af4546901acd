package mirrorfs

import (
	"encoding/binary"

	"github.com/tdfs/tdfs/wire"
)

// Upper bounds of the encoded size of resync items, for wire.PassSink.Reserve
// (the sink's contract: an item's encoded size is at most what was
// reserved for it). They assume nothing of the codec beyond the wire
// package's vocabulary: a varint per integer, a length varint before each
// string or byte slice, a presence byte and two varints per time, and they
// allow for the frame header and the item's kind.

const (
	sizeVarint = binary.MaxVarintLen64
	sizeTime   = 1 + 2*sizeVarint
	sizeAttr   = 4*sizeVarint + sizeTime
	// sizeItem covers what every item carries besides its fields: the
	// frame header, the kind byte and the pass number.
	sizeItem = 32 + sizeVarint

	// maxDirItem bounds the encoded size of one ResyncDir: well below
	// 512 KiB, and far below the frame limit.
	maxDirItem = 480 << 10
	// maxEntryXattrs bounds the xattr bytes of one entry (or of a
	// directory's own), so that any entry fits in a ResyncDir. Beyond it
	// the remaining xattrs are not replicated (logged).
	maxEntryXattrs = 256 << 10
)

func sizeString(s string) int64 { return sizeVarint + int64(len(s)) }

func sizeXattrs(xs []wire.Xattr) int64 {
	n := int64(sizeVarint)
	for _, x := range xs {
		n += sizeString(x.Name) + sizeVarint + int64(len(x.Value))
	}
	return n
}

// sizeEntry bounds one wire.Entry.
func sizeEntry(e *wire.Entry) int64 {
	return sizeString(e.Name) + 1 + sizeAttr + sizeString(e.Target) + sizeXattrs(e.Xattrs) + 2*sizeVarint
}

// sizeDirHead bounds a ResyncDir without its entries: ids, path, count,
// final flag, and the directory's own attributes and xattrs.
func sizeDirHead(path string, own []wire.Xattr) int64 {
	return sizeItem + sizeVarint + sizeString(path) + sizeVarint + 1 + sizeAttr + sizeXattrs(own)
}

// sizeHandleRef bounds one wire.HandleRef.
func sizeHandleRef(path string) int64 { return sizeVarint + sizeString(path) }

// sizeHandlesHead bounds a ResyncHandles without its refs.
const sizeHandlesHead = sizeItem + sizeVarint

// sizeData bounds a ResyncData carrying n bytes (or a hole).
func sizeData(n int) int64 { return sizeItem + 4*sizeVarint + int64(n) }

// Bounds of the fixed-size items.
const (
	sizeBegin int64 = sizeItem + 2 + 16 // 16: wire.RunID
	sizeClose       = sizeItem + 2*sizeVarint + sizeTime
	sizeEnd         = sizeItem
)
