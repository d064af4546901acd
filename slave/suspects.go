package slave

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/tdfs/tdfs/replayer"
)

// The suspect log: the files a resync pass must compare in full
// (replayer/suspects.go), kept in the state dir so that they survive a
// kill of the slave in the middle of a resync.
//
// Records are 16 bytes, device and inode (u64 each, little-endian),
// appended with one write(2) each (O_APPEND) and never fsynced: like the
// progress log, the file shares the page cache with the tree, so both
// survive a kill of the process, and a crash of the host makes every file
// suspect instead (Replica.recover). A record of all ones says every file
// is suspect. A torn last record (a kill mid-write) is ignored: the op it
// announced had not started.

const (
	suspectsFile = "resync-suspects"
	suspectLen   = 16
	// suspectsMaxRead bounds what loading reads: a little more than the
	// replayer keeps.
	suspectsMaxRead = (1<<20 + 1) * suspectLen
)

var allSuspect = [2]uint64{^uint64(0), ^uint64(0)}

type SuspectFile struct{ f *os.File }

var _ replayer.SuspectLog = (*SuspectFile)(nil)

// OpenSuspects opens the suspect log in stateDir and returns what it
// holds.
func OpenSuspects(stateDir string) (*SuspectFile, [][2]uint64, bool, error) {
	f, err := os.OpenFile(filepath.Join(stateDir, suspectsFile), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, false, err
	}
	b, err := io.ReadAll(io.LimitReader(f, suspectsMaxRead+1))
	if err != nil {
		f.Close()
		return nil, nil, false, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	all := len(b) > suspectsMaxRead
	if torn := len(b) % suspectLen; !all && torn != 0 {
		// Cut the torn record, so that the next ones stay aligned.
		if err := f.Truncate(int64(len(b) - torn)); err != nil {
			f.Close()
			return nil, nil, false, fmt.Errorf("truncate %s: %w", f.Name(), err)
		}
	}
	var inos [][2]uint64
	for ; !all && len(b) >= suspectLen; b = b[suspectLen:] {
		ino := [2]uint64{binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])}
		if ino == allSuspect {
			all = true
			break
		}
		inos = append(inos, ino)
	}
	if all {
		inos = nil
	}
	return &SuspectFile{f: f}, inos, all, nil
}

func (l *SuspectFile) write(ino [2]uint64) error {
	var b [suspectLen]byte
	binary.LittleEndian.PutUint64(b[:], ino[0])
	binary.LittleEndian.PutUint64(b[8:], ino[1])
	if _, err := l.f.Write(b[:]); err != nil {
		return fmt.Errorf("suspect log: %w", err)
	}
	return nil
}

func (l *SuspectFile) Add(ino [2]uint64) error { return l.write(ino) }

func (l *SuspectFile) All() error { return l.write(allSuspect) }

func (l *SuspectFile) Clear() error {
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("suspect log: %w", err)
	}
	return nil
}

func (l *SuspectFile) Close() error { return l.f.Close() }
