package slave

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
	"strings"

	"github.com/tdfs/tdfs/wire"
)

// State is the slave's persistent position, kept in a state directory
// outside the replica (neither side keeps state inside
// the replicated tree).
type State struct {
	Epoch   wire.Epoch   // the master epoch followed; zero: none yet
	Lineage []wire.Epoch // the epochs Epoch succeeded (fencing), newest first
	Run     wire.RunID   // the run of the last RunStart applied
	Durable uint64       // every op up to this seq is durable in the replica
	// Resyncing: the replica is of unknown state until a resync pass
	// ends (it was adopted, or a pass was interrupted).
	Resyncing bool
}

// ErrBadState is wrapped by LoadState's error when the state file exists
// but is not a state file this version wrote.
var ErrBadState = errors.New("slave: bad state file")

// stateFile is the file's name in the state directory.
const stateFile = "state"

// The file is lines of text, so an operator can read it:
//
//	tdfs-slave-state 2
//	epoch <32 hex digits>
//	lineage <32 hex digits>,... (or -)
//	run <32 hex digits>
//	durable <decimal>
//	resyncing <0 or 1>
//	crc32c <8 hex digits of the CRC-32C of the lines above>
//
// The checksum catches a torn or hand-edited file, which must not silently
// become "durable up to some other seq".
const stateMagic = "tdfs-slave-state 2\n"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var stateKeys = []string{"epoch", "lineage", "run", "durable", "resyncing"}

func encodeState(s State) []byte {
	lin := "-"
	if len(s.Lineage) > 0 {
		var parts []string
		for _, e := range s.Lineage {
			parts = append(parts, hex.EncodeToString(e[:]))
		}
		lin = strings.Join(parts, ",")
	}
	resync := 0
	if s.Resyncing {
		resync = 1
	}
	body := fmt.Sprintf("%sepoch %s\nlineage %s\nrun %s\ndurable %d\nresyncing %d\n", stateMagic,
		hex.EncodeToString(s.Epoch[:]), lin, hex.EncodeToString(s.Run[:]), s.Durable, resync)
	return fmt.Appendf(nil, "%scrc32c %08x\n", body, crc32.Checksum([]byte(body), castagnoli))
}

func decodeID(v string, id []byte) error {
	if len(v) != 2*len(id) {
		return fmt.Errorf("want %d hex digits", 2*len(id))
	}
	_, err := hex.Decode(id, []byte(v))
	return err
}

func decodeState(b []byte) (State, error) {
	var s State
	lines := bytes.SplitAfter(b, []byte("\n"))
	n := len(stateKeys) + 2
	if len(lines) > 0 && string(lines[0]) != stateMagic {
		return s, fmt.Errorf("%w: first line %q, want %q (a state dir of another tdfs version: remove it, "+
			"and the replica is compared with its master and repaired)", ErrBadState, lines[0], stateMagic)
	}
	if len(lines) != n+1 || len(lines[n]) != 0 {
		return s, fmt.Errorf("%w: want %d lines", ErrBadState, n)
	}
	body := bytes.Join(lines[:n-1], nil)
	sum, ok := field(lines[n-1], "crc32c")
	if !ok || len(sum) != 8 {
		return s, fmt.Errorf("%w: bad checksum line %q", ErrBadState, lines[n-1])
	}
	want, err := strconv.ParseUint(sum, 16, 32)
	if err != nil {
		return s, fmt.Errorf("%w: bad checksum %q", ErrBadState, sum)
	}
	if got := crc32.Checksum(body, castagnoli); uint32(want) != got {
		return s, fmt.Errorf("%w: checksum %08x, contents sum to %08x", ErrBadState, want, got)
	}
	vals := map[string]string{}
	for i, k := range stateKeys {
		v, ok := field(lines[i+1], k)
		if !ok {
			return s, fmt.Errorf("%w: bad %s line %q", ErrBadState, k, lines[i+1])
		}
		vals[k] = v
	}
	if err := decodeID(vals["epoch"], s.Epoch[:]); err != nil {
		return s, fmt.Errorf("%w: epoch: %w", ErrBadState, err)
	}
	if v := vals["lineage"]; v != "-" {
		for _, part := range strings.Split(v, ",") {
			var e wire.Epoch
			if err := decodeID(part, e[:]); err != nil || len(s.Lineage) >= wire.MaxLineage {
				return s, fmt.Errorf("%w: lineage %q", ErrBadState, v)
			}
			s.Lineage = append(s.Lineage, e)
		}
	}
	if err := decodeID(vals["run"], s.Run[:]); err != nil {
		return s, fmt.Errorf("%w: run: %w", ErrBadState, err)
	}
	if s.Durable, err = strconv.ParseUint(vals["durable"], 10, 64); err != nil {
		return s, fmt.Errorf("%w: durable: %w", ErrBadState, err)
	}
	switch vals["resyncing"] {
	case "0":
	case "1":
		s.Resyncing = true
	default:
		return s, fmt.Errorf("%w: resyncing %q", ErrBadState, vals["resyncing"])
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
