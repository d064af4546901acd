package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tdfs/tdfs/quictransport/wire"
)

// The master's state dir (outside the backing dir and the mount) records
// each run: its id, and, once it ended cleanly, its last seq. The next run
// announces that in Hello, so a slave durable at exactly that point follows
// the new run instead of being refused (wire.Hello).

const (
	stateFile        = "master.state"
	defaultStateRoot = "/var/lib/tdfs/master"
)

type masterState struct {
	Version int    `json:"version"`
	Run     string `json:"run"`   // hex RunID
	Head    uint64 `json:"head"`  // last seq of the run, when Clean
	Clean   bool   `json:"clean"` // the run ended through unmount and drain, not a crash
}

// loadState returns the previous run and its last seq if it ended cleanly
// (zero values otherwise, and when there was none).
func loadState(dir string) (prev wire.RunID, head uint64, clean bool, err error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return prev, 0, false, nil
	}
	if err != nil {
		return prev, 0, false, err
	}
	var st masterState
	if err := json.Unmarshal(data, &st); err != nil || st.Version != 1 {
		return prev, 0, false, fmt.Errorf("%s is damaged (delete it: slaves will then need a resync): %v",
			filepath.Join(dir, stateFile), err)
	}
	b, err := hex.DecodeString(st.Run)
	if err != nil || len(b) != len(prev) {
		return prev, 0, false, fmt.Errorf("%s: bad run id %q", filepath.Join(dir, stateFile), st.Run)
	}
	copy(prev[:], b)
	return prev, st.Head, st.Clean, nil
}

// saveState records run durably: atomically replaced, file and directory
// synced.
func saveState(dir string, run wire.RunID, head uint64, clean bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	data, err := json.Marshal(masterState{Version: 1, Run: hex.EncodeToString(run[:]), Head: head, Clean: clean})
	if err != nil {
		return err
	}
	p := filepath.Join(dir, stateFile)
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(append(data, '\n'))
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

// isEmpty reports whether dir has no entries.
func isEmpty(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	return len(entries) == 0, err
}
