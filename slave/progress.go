package slave

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tdfs/tdfs/replayer"
)

// The progress log: how far this slave process got, for the next one.
//
// A slave killed with kill -9 loses nothing it wrote, because the page
// cache outlives the process: its tree holds exactly ops 1..K (plus maybe
// part of K+1), and the files it held open are still there. If it knows K
// and its handles, the next process resumes at K+1 (replayer.Reapply for
// that one op, replayer.RestoreHandles for the handles) instead of asking
// for a resync. The progress log records both, in the state dir, without
// fsync: it lives in the same page cache as the tree, so the two survive
// or perish together. A crash of the host loses the page cache, and the
// log says so: its first record holds the boot id, and a log of another
// boot is not believed (the caller falls back to the durable state).
//
// Each record is appended with one write(2) (O_APPEND) and carries its own
// CRC-32C, so a record torn by the kill is detected and recovery stops
// before it. The log is rewritten compactly (temporary file, rename) at
// a durable point once it grew by progressResetSize, and whenever it grows
// past progressMaxSize.
//
// The last op applied, recorded after every op, is not a record: it is a
// word in a page of the state dir's file "applied", mapped into the
// process (MAP_SHARED), so recording it is one store to memory rather than
// a write(2) per op. The page is in the same page cache as the log and the
// tree; it names the boot it was set up in, and recovery believes it only
// with a log of this boot. Stored after the op's handle records are
// written, it never runs ahead of them, as the 'A' record never did. Where
// the state dir cannot be mapped, the 'A' records of the log serve.
//
// Record: u32 length of body | body | u32 CRC-32C of length and body,
// little-endian; body: a type byte and its fields:
//
//	'B' version (u8, 1), boot id (the rest)           first record only
//	'A' seq (u64)                                     ops up to seq are applied
//	'O' handle (u64), fh type (i32), gone (u8), fh    handle opened
//	'R' handle (u64)                                  handle released

const (
	progressFile    = "progress"
	progressVersion = 1
	// progressMaxSize triggers a compaction: about 240,000 applied
	// records.
	progressMaxSize = 4 << 20
	// progressResetSize: a durable point compacts the log once it grew
	// by this much since it was last rewritten (about 1,000 handle
	// records).
	progressResetSize = 32 << 10
	// progressMaxRead bounds what recovery reads.
	progressMaxRead = 64 << 20
	// progressMaxBody bounds one record's body: the largest is an 'O'
	// with a MAX_HANDLE_SZ file handle.
	progressMaxBody = 1 + 8 + 4 + 1 + replayer.MaxFileHandleLen
)

const (
	recBoot     = 'B'
	recApplied  = 'A'
	recOpened   = 'O'
	recReleased = 'R'
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// bootIDFile names this boot of the kernel.
const bootIDFile = "/proc/sys/kernel/random/boot_id"

// progressState is what openProgress found in the log.
type progressState struct {
	BootID   string // the boot the log was written in ("" if none)
	SameBoot bool   // this boot: Applied and Handles can be believed
	Valid    bool   // the log exists and starts with a boot record
	Applied  uint64 // the last op recorded applied; 0 if none
	Handles  map[uint64]replayer.HandleRecord
}

// HandleList returns Handles as a slice, sorted by handle, for
// replayer.RestoreHandles.
func (s progressState) HandleList() []replayer.HandleRecord {
	recs := make([]replayer.HandleRecord, 0, len(s.Handles))
	for _, rec := range s.Handles {
		recs = append(recs, rec)
	}
	slices.SortFunc(recs, func(a, b replayer.HandleRecord) int { return cmp.Compare(a.Handle, b.Handle) })
	return recs
}

// progress appends to the log. Its methods are called from the goroutine
// that applies ops; they are not safe for concurrent use.
type progress struct {
	dir     string
	bootID  string
	f       *os.File
	size    int64
	maxSize int64
	// compacted is size right after the last rewrite.
	compacted int64
	last      uint64 // the last seq recorded applied
	handles   map[uint64]replayer.HandleRecord
	buf       []byte
	mark      *appliedMark // nil: applied ops are 'A' records
}

// openProgress recovers the log in stateDir and starts a new one for this
// process, carrying over what was recovered if it is of this boot.
func openProgress(stateDir string) (*progress, progressState, error) {
	b, err := os.ReadFile(bootIDFile)
	if err != nil {
		return nil, progressState{}, fmt.Errorf("progress log: boot id: %w", err)
	}
	return openProgressAt(stateDir, strings.TrimSpace(string(b)))
}

// openProgressAt is openProgress with the current boot id given.
func openProgressAt(stateDir, bootID string) (*progress, progressState, error) {
	if bootID == "" {
		return nil, progressState{}, errors.New("progress log: empty boot id")
	}
	st, err := recoverProgress(filepath.Join(stateDir, progressFile), bootID)
	if err != nil {
		return nil, progressState{}, err
	}
	if st.Valid {
		// The mark of the log's boot: believed with the log, or reported
		// with it.
		if seq, ok := readAppliedMark(filepath.Join(stateDir, appliedFile), st.BootID); ok {
			st.Applied = max(st.Applied, seq)
		}
	}
	p := &progress{dir: stateDir, bootID: bootID, maxSize: progressMaxSize, handles: make(map[uint64]replayer.HandleRecord)}
	var carried []replayer.HandleRecord
	if st.SameBoot {
		p.last = st.Applied
		carried = st.HandleList()
	}
	// The mark first: killed before the log is rewritten, the next process
	// finds the old log, of another boot (not believed) or of this one
	// (whose applied the mark now holds).
	p.mark = mapAppliedMark(filepath.Join(stateDir, appliedFile), bootID, p.last)
	if err := p.rewrite(p.last, carried); err != nil {
		p.mark.unmap()
		return nil, progressState{}, err
	}
	return p, st, nil
}

// recoverProgress reads the log at path up to its first torn or corrupt
// record. A missing log yields the zero state.
func recoverProgress(path, bootID string) (progressState, error) {
	var st progressState
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("progress log: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, progressMaxRead))
	if err != nil {
		return st, fmt.Errorf("progress log: %w", err)
	}
	for first := true; ; first = false {
		body, n, ok := nextRecord(b)
		if !ok {
			break
		}
		b = b[n:]
		if first {
			if len(body) < 2 || body[0] != recBoot || body[1] != progressVersion {
				break
			}
			st.Valid, st.BootID = true, string(body[2:])
			st.SameBoot = st.BootID == bootID
			st.Handles = make(map[uint64]replayer.HandleRecord)
			continue
		}
		if !st.apply(body) {
			break
		}
	}
	return st, nil
}

// nextRecord splits the first intact record off b.
func nextRecord(b []byte) (body []byte, n int, ok bool) {
	if len(b) < 4 {
		return nil, 0, false
	}
	l := binary.LittleEndian.Uint32(b)
	if l == 0 || l > progressMaxBody || uint64(len(b)) < 8+uint64(l) {
		return nil, 0, false
	}
	end := 4 + int(l)
	if crc32.Checksum(b[:end], crc32c) != binary.LittleEndian.Uint32(b[end:]) {
		return nil, 0, false
	}
	return b[4:end], end + 4, true
}

// apply replays one record (not the boot record) onto the state; false
// for a record it does not understand, which ends recovery.
func (st *progressState) apply(body []byte) bool {
	typ, f := body[0], body[1:]
	switch {
	case typ == recApplied && len(f) == 8:
		st.Applied = binary.LittleEndian.Uint64(f)
	case typ == recOpened && len(f) >= 13:
		h := binary.LittleEndian.Uint64(f)
		rec := replayer.HandleRecord{
			Handle: h,
			FHType: int32(binary.LittleEndian.Uint32(f[8:])),
			Gone:   f[12] != 0,
			FH:     bytes.Clone(f[13:]),
		}
		if len(rec.FH) == 0 {
			rec.FH = nil
		}
		st.Handles[h] = rec
	case typ == recReleased && len(f) == 8:
		delete(st.Handles, binary.LittleEndian.Uint64(f))
	default:
		return false
	}
	return true
}

// appendRecord appends one framed record with body to b.
func appendRecord(b, body []byte) []byte {
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, body...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], crc32c))
}

func bootBody(bootID string) []byte {
	return append([]byte{recBoot, progressVersion}, bootID...)
}

func appliedBody(b []byte, seq uint64) []byte {
	return binary.LittleEndian.AppendUint64(append(b, recApplied), seq)
}

func openedBody(b []byte, rec replayer.HandleRecord) []byte {
	b = binary.LittleEndian.AppendUint64(append(b, recOpened), rec.Handle)
	b = binary.LittleEndian.AppendUint32(b, uint32(rec.FHType))
	gone := byte(0)
	if rec.Gone {
		gone = 1
	}
	return append(append(b, gone), rec.FH...)
}

func releasedBody(b []byte, h uint64) []byte {
	return binary.LittleEndian.AppendUint64(append(b, recReleased), h)
}

// write appends one record with a single write(2).
func (p *progress) write(body []byte) error {
	if p.f == nil {
		return errors.New("progress log: closed")
	}
	p.buf = appendRecord(p.buf[:0], body)
	n, err := p.f.Write(p.buf)
	p.size += int64(n)
	if err != nil {
		return fmt.Errorf("progress log: %w", err)
	}
	if p.size > p.maxSize {
		return p.rewrite(p.last, p.handleList())
	}
	return nil
}

// applied records that every op up to seq is applied.
func (p *progress) applied(seq uint64) error {
	if p.f == nil {
		return errors.New("progress log: closed")
	}
	// State first: a compaction inside write rewrites from it.
	p.last = seq
	if p.mark != nil {
		p.mark.store(seq)
		return nil
	}
	var body [9]byte
	return p.write(appliedBody(body[:0], seq))
}

// handleOpened records a handle the replayer opened.
func (p *progress) handleOpened(rec replayer.HandleRecord) error {
	if len(rec.FH) > replayer.MaxFileHandleLen {
		return fmt.Errorf("progress log: file handle of %d bytes", len(rec.FH))
	}
	p.handles[rec.Handle] = rec
	return p.write(openedBody(make([]byte, 0, progressMaxBody), rec))
}

// handleReleased records a handle the replayer released.
func (p *progress) handleReleased(h uint64) error {
	delete(p.handles, h)
	var body [9]byte
	return p.write(releasedBody(body[:0], h))
}

// reset is called at a durable point: durable must be the last op applied
// (nothing beyond it yet), handles return every open handle
// (replayer.HandleRecords). The log needs no rewrite to stay true (its
// records replay to the same handles, the mark holds applied), so it is
// compacted only once it grew past progressResetSize since the last
// rewrite: a durable point costs no syscall.
func (p *progress) reset(durable uint64, handles func() []replayer.HandleRecord) error {
	if p.f == nil {
		return errors.New("progress log: closed")
	}
	switch {
	case p.size > p.compacted+progressResetSize:
		return p.rewrite(durable, handles())
	case p.last == durable:
		return nil
	case p.mark != nil:
		p.last = durable
		p.mark.store(durable)
		return nil
	}
	return p.rewrite(durable, handles())
}

// rewrite replaces the log with one holding the boot record, applied and
// handles: a temporary file renamed over it, so a kill at any moment
// leaves the old log or the new one. No fsync: see above.
func (p *progress) rewrite(applied uint64, handles []replayer.HandleRecord) (err error) {
	b := appendRecord(nil, bootBody(p.bootID))
	if applied > 0 {
		b = appendRecord(b, appliedBody(nil, applied))
	}
	m := make(map[uint64]replayer.HandleRecord, len(handles))
	for _, rec := range handles {
		if len(rec.FH) > replayer.MaxFileHandleLen {
			return fmt.Errorf("progress log: handle %d: file handle of %d bytes", rec.Handle, len(rec.FH))
		}
		b = appendRecord(b, openedBody(nil, rec))
		m[rec.Handle] = rec
	}
	tmp, err := os.CreateTemp(p.dir, "."+progressFile+"-*.tmp")
	if err != nil {
		return fmt.Errorf("progress log: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("progress log: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(p.dir, progressFile)); err != nil {
		return fmt.Errorf("progress log: %w", err)
	}
	// The temporary file's fd is the log's now; O_APPEND for what follows.
	f, err := os.OpenFile(filepath.Join(p.dir, progressFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("progress log: %w", err)
	}
	tmp.Close()
	if p.f != nil {
		p.f.Close()
	}
	p.f, p.size, p.compacted, p.last, p.handles = f, int64(len(b)), int64(len(b)), applied, m
	return nil
}

func (p *progress) handleList() []replayer.HandleRecord {
	return progressState{Handles: p.handles}.HandleList()
}

// close closes the log; it stays on disk for the next process.
func (p *progress) close() error {
	if p.f == nil {
		return nil
	}
	err := p.f.Close()
	p.f = nil
	p.mark.unmap()
	p.mark = nil
	return err
}
