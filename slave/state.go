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

	"golang.org/x/sys/unix"

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
	// Dirty: the replica may hold applied ops beyond Durable (recorded
	// before the first such op changes the tree, cleared at the next
	// Sync).
	Dirty bool

	gen uint64 // the record's generation in the file (stateStore)
}

// ErrBadState is wrapped by LoadState's error when the state file exists
// but is not a state file this version wrote.
var ErrBadState = errors.New("slave: bad state file")

// stateFile is the file's name in the state directory.
const stateFile = "state"

// The file is two slots of stateSlotSize bytes, each a record of lines of
// text padded with newlines, so an operator can read it:
//
//	tdfs-slave-state 3
//	gen <decimal: which slot is newer>
//	epoch <32 hex digits>
//	lineage <32 hex digits>,... (or -)
//	run <32 hex digits>
//	durable <decimal>
//	resyncing <0 or 1>
//	dirty <0 or 1>
//	crc32c <8 hex digits of the CRC-32C of the lines above>
//
// Record gen g lives in slot g%2. The file is created whole (temporary
// file, fsync, rename, fsync of the dir); after that a save overwrites the
// older slot in place and fdatasyncs (stateStore): two syscalls per save
// instead of a new file and two fsyncs. A save torn by a crash leaves the
// other slot, the previous state, which the reader then takes. The
// checksum catches a torn slot or a hand-edited file, which must not
// silently become "durable up to some other seq". A file of version 2 (one
// record, no gen, no dirty line, and a separate dirty marker file) is read
// too, and replaced by the next save.
const (
	stateMagic    = "tdfs-slave-state 3\n"
	stateMagicV2  = "tdfs-slave-state 2\n"
	stateSlotSize = 1024
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// stateKeys are the lines between the magic and the checksum, in order.
var (
	stateKeys   = []string{"gen", "epoch", "lineage", "run", "durable", "resyncing", "dirty"}
	stateKeysV2 = []string{"epoch", "lineage", "run", "durable", "resyncing"}
)

// encodeState returns s's record (without padding).
func encodeState(s State) []byte {
	lin := "-"
	if len(s.Lineage) > 0 {
		var parts []string
		for _, e := range s.Lineage {
			parts = append(parts, hex.EncodeToString(e[:]))
		}
		lin = strings.Join(parts, ",")
	}
	body := fmt.Sprintf("%sgen %d\nepoch %s\nlineage %s\nrun %s\ndurable %d\nresyncing %d\ndirty %d\n", stateMagic,
		s.gen, hex.EncodeToString(s.Epoch[:]), lin, hex.EncodeToString(s.Run[:]), s.Durable, bit(s.Resyncing), bit(s.Dirty))
	return fmt.Appendf(nil, "%scrc32c %08x\n", body, crc32.Checksum([]byte(body), castagnoli))
}

func bit(b bool) int {
	if b {
		return 1
	}
	return 0
}

// encodeSlot returns s's record padded to a slot.
func encodeSlot(s State) ([]byte, error) {
	rec := encodeState(s)
	if len(rec) > stateSlotSize {
		return nil, fmt.Errorf("state record of %d bytes, at most %d", len(rec), stateSlotSize)
	}
	return append(rec, bytes.Repeat([]byte("\n"), stateSlotSize-len(rec))...), nil
}

func decodeID(v string, id []byte) error {
	if len(v) != 2*len(id) {
		return fmt.Errorf("want %d hex digits", 2*len(id))
	}
	_, err := hex.Decode(id, []byte(v))
	return err
}

// decodeFile decodes a whole state file: the newer of its two valid slots,
// or a version 2 record.
func decodeFile(b []byte) (State, error) {
	if bytes.HasPrefix(b, []byte(stateMagicV2)) {
		return decodeRecord(b, stateMagicV2, stateKeysV2)
	}
	if len(b) != 2*stateSlotSize {
		if len(b) > 0 && !bytes.HasPrefix(b, []byte(stateMagic)) {
			return State{}, fmt.Errorf("%w: first line %q, want %q (a state dir of another tdfs version: remove it, "+
				"and the replica is compared with its master and repaired)", ErrBadState, firstLine(b), stateMagic)
		}
		return State{}, fmt.Errorf("%w: %d bytes, want %d", ErrBadState, len(b), 2*stateSlotSize)
	}
	var best State
	var errs []error
	found := false
	for i := range 2 {
		slot := bytes.TrimRight(b[i*stateSlotSize:(i+1)*stateSlotSize], "\n")
		if len(slot) == 0 {
			continue // never written (a new file fills one slot)
		}
		s, err := decodeRecord(append(slot, '\n'), stateMagic, stateKeys)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("slot %d: %w", i, err))
		case s.gen%2 != uint64(i):
			errs = append(errs, fmt.Errorf("%w: slot %d holds gen %d", ErrBadState, i, s.gen))
		case !found || s.gen > best.gen:
			best, found = s, true
		}
	}
	if !found {
		if len(errs) == 0 {
			return State{}, fmt.Errorf("%w: both slots empty", ErrBadState)
		}
		return State{}, errors.Join(errs...)
	}
	return best, nil
}

func firstLine(b []byte) []byte {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return line
}

// decodeRecord decodes one record: magic, the lines keys names, checksum.
func decodeRecord(b []byte, magic string, keys []string) (State, error) {
	vals, err := recordFields(b, magic, keys)
	if err != nil {
		return State{}, err
	}
	return stateFromFields(vals)
}

// recordFields checks a record's magic, line count and checksum, and
// returns its values by key (gen and dirty default to 0: version 2 has
// neither).
func recordFields(b []byte, magic string, keys []string) (map[string]string, error) {
	lines := bytes.SplitAfter(b, []byte("\n"))
	n := len(keys) + 2
	if len(lines) > 0 && string(lines[0]) != magic {
		return nil, fmt.Errorf("%w: first line %q, want %q", ErrBadState, lines[0], magic)
	}
	if len(lines) != n+1 || len(lines[n]) != 0 {
		return nil, fmt.Errorf("%w: want %d lines", ErrBadState, n)
	}
	body := bytes.Join(lines[:n-1], nil)
	sum, ok := field(lines[n-1], "crc32c")
	if !ok || len(sum) != 8 {
		return nil, fmt.Errorf("%w: bad checksum line %q", ErrBadState, lines[n-1])
	}
	want, err := strconv.ParseUint(sum, 16, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: bad checksum %q", ErrBadState, sum)
	}
	if got := crc32.Checksum(body, castagnoli); uint32(want) != got {
		return nil, fmt.Errorf("%w: checksum %08x, contents sum to %08x", ErrBadState, want, got)
	}
	vals := map[string]string{"gen": "0", "dirty": "0"}
	for i, k := range keys {
		v, ok := field(lines[i+1], k)
		if !ok {
			return nil, fmt.Errorf("%w: bad %s line %q", ErrBadState, k, lines[i+1])
		}
		vals[k] = v
	}
	return vals, nil
}

// stateFromFields parses a record's values.
func stateFromFields(vals map[string]string) (State, error) {
	var s State
	var err error
	if s.gen, err = strconv.ParseUint(vals["gen"], 10, 64); err != nil {
		return s, fmt.Errorf("%w: gen: %w", ErrBadState, err)
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
	for _, f := range []struct {
		key string
		to  *bool
	}{{"resyncing", &s.Resyncing}, {"dirty", &s.Dirty}} {
		switch vals[f.key] {
		case "0":
		case "1":
			*f.to = true
		default:
			return s, fmt.Errorf("%w: %s %q", ErrBadState, f.key, vals[f.key])
		}
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
	s, err := decodeFile(b)
	if err != nil {
		return State{}, fmt.Errorf("load state %s: %w", p, err)
	}
	return s, nil
}

// SaveState replaces the state file in dir atomically: it writes a
// temporary file holding s in its slot, fsyncs it, renames it over the old
// one and fsyncs the directory, so after a crash the file holds either the
// old state or the new one. It creates dir (0700) if missing.
func SaveState(dir string, s State) (err error) {
	slot, err := encodeSlot(s)
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	file := bytes.Repeat([]byte("\n"), 2*stateSlotSize)
	copy(file[(s.gen%2)*stateSlotSize:], slot)
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
	if _, err := f.Write(file); err != nil {
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

// stateStore saves a replica's state, once per Sync and once before the
// first op after it: the first save of a process makes the file whole
// (SaveState), every later one overwrites the older slot in place and
// fdatasyncs. A failed save leaves gen where it was, so the retry writes
// the same slot again and never the one holding the last good record.
type stateStore struct {
	dir string
	gen uint64   // of the last record saved or loaded
	f   *os.File // the file, once this process made it whole
}

// save records s durably.
func (st *stateStore) save(s State) error {
	s.gen = st.gen + 1
	if st.f == nil {
		if err := SaveState(st.dir, s); err != nil {
			return err
		}
		f, err := os.OpenFile(filepath.Join(st.dir, stateFile), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("save state: %w", err)
		}
		st.f, st.gen = f, s.gen
		return nil
	}
	slot, err := encodeSlot(s)
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if _, err := st.f.WriteAt(slot, int64(s.gen%2)*stateSlotSize); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := unix.Fdatasync(int(st.f.Fd())); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	st.gen = s.gen
	return nil
}

// close closes the file (nil: nothing to do).
func (st *stateStore) close() error {
	if st.f == nil {
		return nil
	}
	err := st.f.Close()
	st.f = nil
	return err
}
