package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/wire"
)

// The master's journal dir (outside the backing dir and the mount) holds
// the op journal (ops/) and master.state: the epoch, its lineage, and the
// runs of this epoch, so that seqs continue across restarts and a slave
// can tell this master from another one (fencing).

const (
	stateFile          = "master.state"
	stateVersion       = 2
	defaultJournalRoot = "/var/lib/tdfs/master"
	// maxRuns bounds the runs remembered: a slave whose last run is older
	// is resynchronised by comparison.
	maxRuns = 64
)

type masterState struct {
	Version int        `json:"version"`
	Epoch   string     `json:"epoch"`   // hex wire.Epoch
	Lineage []string   `json:"lineage"` // hex, newest first
	Runs    []runState `json:"runs"`    // oldest first
}

type runState struct {
	Run   string `json:"run"`
	Start uint64 `json:"start"`
	End   uint64 `json:"end"`
	Clean bool   `json:"clean"`
}

// loadState reads the journal dir's state; found is false when there is
// none (a new epoch).
func loadState(dir string) (st masterState, found bool, err error) {
	p := filepath.Join(dir, stateFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, false, fmt.Errorf("%s is damaged (%v): move the journal dir away to start a new epoch "+
			"(every slave will then refuse this master until its state is reset)", p, err)
	}
	if st.Version != stateVersion {
		return st, false, fmt.Errorf("%s has version %d, this tdfs-master reads version %d", p, st.Version, stateVersion)
	}
	if _, err := decodeID(st.Epoch); err != nil {
		return st, false, fmt.Errorf("%s: epoch: %w", p, err)
	}
	return st, true, nil
}

// saveState records st durably: atomically replaced, file and directory
// synced.
func saveState(dir string, st masterState) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	st.Version = stateVersion
	if len(st.Runs) > maxRuns {
		st.Runs = st.Runs[len(st.Runs)-maxRuns:]
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeDurable(dir, stateFile, append(data, '\n'))
}

// writeDurable replaces dir/name with data atomically, file and directory
// synced.
func writeDurable(dir, name string, data []byte) error {
	p := filepath.Join(dir, name)
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// newID returns a random 16-byte id.
func newID() ([16]byte, error) {
	var id [16]byte
	_, err := rand.Read(id[:])
	return id, err
}

func decodeID(s string) ([16]byte, error) {
	var id [16]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("bad id %q", s)
	}
	copy(id[:], b)
	return id, nil
}

func encodeID(id [16]byte) string { return hex.EncodeToString(id[:]) }

// epochs decodes st's epoch and lineage.
func (st masterState) epochs() (wire.Epoch, []wire.Epoch, error) {
	e, err := decodeID(st.Epoch)
	if err != nil {
		return wire.Epoch{}, nil, err
	}
	var lin []wire.Epoch
	for _, s := range st.Lineage {
		l, err := decodeID(s)
		if err != nil {
			return wire.Epoch{}, nil, err
		}
		lin = append(lin, l)
	}
	return e, lin, nil
}

// runRecords converts the remembered runs for the transport.
func (st masterState) runRecords() ([]quictransport.RunRecord, error) {
	var out []quictransport.RunRecord
	for _, r := range st.Runs {
		id, err := decodeID(r.Run)
		if err != nil {
			return nil, err
		}
		out = append(out, quictransport.RunRecord{Run: id, Start: r.Start, End: r.End, Clean: r.Clean})
	}
	return out, nil
}
