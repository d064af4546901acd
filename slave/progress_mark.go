package slave

import (
	"bytes"
	"encoding/binary"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The page of the file "applied" in the state dir (progress.go):
//
//	magic   [8]byte  "tdfsapl1"
//	seq     uint64   the last op applied, native byte order (an aligned
//	                 word, stored atomically: a kill cannot tear it)
//	bootLen uint8
//	boot    [bootLen]byte  the boot id it was set up in
//
// It is read back only on this machine, after a restart of the process.
const (
	appliedFile     = "applied"
	appliedMagic    = "tdfsapl1"
	appliedPageSize = 4096
	appliedSeqOff   = 8
	appliedBootOff  = 17
)

// appliedMark is the mapped page.
type appliedMark struct {
	page []byte
	seq  *atomic.Uint64
}

// mapAppliedMark sets up the page at path for this boot with seq, mapped.
// nil if the state dir's filesystem cannot do that (the log's 'A' records
// serve then).
func mapAppliedMark(path, bootID string, seq uint64) *appliedMark {
	if len(bootID) > appliedPageSize-appliedBootOff {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil
	}
	defer f.Close()
	if err := f.Truncate(appliedPageSize); err != nil {
		return nil
	}
	page, err := unix.Mmap(int(f.Fd()), 0, appliedPageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil
	}
	m := &appliedMark{page: page, seq: (*atomic.Uint64)(unsafe.Pointer(&page[appliedSeqOff]))}
	// The boot id before the magic: a page whose magic is set names its
	// boot.
	copy(page, make([]byte, appliedPageSize))
	page[appliedBootOff-1] = byte(len(bootID))
	copy(page[appliedBootOff:], bootID)
	m.seq.Store(seq)
	copy(page, appliedMagic)
	return m
}

// store records seq.
func (m *appliedMark) store(seq uint64) { m.seq.Store(seq) }

// unmap lets go of the page (nil: nothing to do).
func (m *appliedMark) unmap() {
	if m != nil {
		unix.Munmap(m.page)
	}
}

// readAppliedMark returns the seq the page at path holds, if it was set up
// in boot bootID.
func readAppliedMark(path, bootID string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < appliedBootOff || !bytes.Equal(b[:8], []byte(appliedMagic)) {
		return 0, false
	}
	n := int(b[appliedBootOff-1])
	if len(b) < appliedBootOff+n || string(b[appliedBootOff:appliedBootOff+n]) != bootID {
		return 0, false
	}
	return binary.NativeEndian.Uint64(b[appliedSeqOff:]), true
}
