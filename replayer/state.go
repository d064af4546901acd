package replayer

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/tdfs/tdfs/quictransport/wire"
)

// State is the slave's persistent position, kept in a state directory
// outside the replica (DESIGN.md item 6: neither side keeps state inside
// the replicated tree).
type State struct {
	Run     wire.RunID // the master run Durable refers to; zero: none
	Durable uint64     // every op of Run up to this seq is durable in the replica
}

// ErrBadState is wrapped by LoadState's error when the state file exists
// but is not a state file this version wrote.
var ErrBadState = errors.New("replayer: bad state file")

// stateFile is the file's name in the state directory.
const stateFile = "state"

// The file is four lines of text, so an operator can read it:
//
//	tdfs-slave-state 1
//	run <32 hex digits>
//	durable <decimal>
//	crc32c <8 hex digits of the CRC-32C of the three lines above>
//
// The checksum catches a torn or hand-edited file, which must not silently
// become "durable up to some other seq".
const stateMagic = "tdfs-slave-state 1\n"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeState(s State) []byte {
	body := fmt.Sprintf("%srun %s\ndurable %d\n", stateMagic, hex.EncodeToString(s.Run[:]), s.Durable)
	return fmt.Appendf(nil, "%scrc32c %08x\n", body, crc32.Checksum([]byte(body), castagnoli))
}

func decodeState(b []byte) (State, error) {
	var s State
	lines := bytes.SplitAfter(b, []byte("\n"))
	// Four lines, each ending in "\n", then the empty remainder.
	if len(lines) != 5 || len(lines[4]) != 0 {
		return s, fmt.Errorf("%w: want 4 lines", ErrBadState)
	}
	if string(lines[0]) != stateMagic {
		return s, fmt.Errorf("%w: first line %q, want %q", ErrBadState, lines[0], stateMagic)
	}
	body := bytes.Join(lines[:3], nil)
	sum, ok := field(lines[3], "crc32c")
	if !ok || len(sum) != 8 {
		return s, fmt.Errorf("%w: bad checksum line %q", ErrBadState, lines[3])
	}
	want, err := strconv.ParseUint(sum, 16, 32)
	if err != nil {
		return s, fmt.Errorf("%w: bad checksum %q", ErrBadState, sum)
	}
	if got := crc32.Checksum(body, castagnoli); uint32(want) != got {
		return s, fmt.Errorf("%w: checksum %08x, contents sum to %08x", ErrBadState, want, got)
	}
	run, ok := field(lines[1], "run")
	if !ok || len(run) != 2*len(s.Run) {
		return s, fmt.Errorf("%w: bad run line %q", ErrBadState, lines[1])
	}
	if _, err := hex.Decode(s.Run[:], []byte(run)); err != nil {
		return s, fmt.Errorf("%w: run: %w", ErrBadState, err)
	}
	durable, ok := field(lines[2], "durable")
	if !ok {
		return s, fmt.Errorf("%w: bad durable line %q", ErrBadState, lines[2])
	}
	if s.Durable, err = strconv.ParseUint(durable, 10, 64); err != nil {
		return s, fmt.Errorf("%w: durable: %w", ErrBadState, err)
	}
	return s, nil
}

// field returns the value of a "key value\n" line.
func field(line []byte, key string) (string, bool) {
	v, ok := bytes.CutPrefix(line, []byte(key+" "))
	if !ok {
		return "", false
	}
	v, ok = bytes.CutSuffix(v, []byte("\n"))
	return string(v), ok
}

// LoadState reads the state saved in dir. A missing file (or directory)
// yields the zero State and no error: a new slave. A corrupt file yields an
// error wrapping ErrBadState.
func LoadState(dir string) (State, error) {
	p := filepath.Join(dir, stateFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("load state: %w", err)
	}
	s, err := decodeState(b)
	if err != nil {
		return State{}, fmt.Errorf("load state %s: %w", p, err)
	}
	return s, nil
}

// SaveState replaces the state in dir atomically: it writes a temporary
// file, fsyncs it, renames it over the old one and fsyncs the directory, so
// after a crash the file holds either the old state or the new one. It
// creates dir (0700) if missing.
func SaveState(dir string, s State) (err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+stateFile+"-*.tmp")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(encodeState(s)); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}
