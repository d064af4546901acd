package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestState(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "journal")
	if _, found, err := loadState(dir); err != nil || found {
		t.Fatalf("no state: found %v, %v", found, err)
	}
	e, err := newID()
	if err != nil {
		t.Fatal(err)
	}
	st := masterState{Epoch: encodeID(e), Lineage: []string{encodeID([16]byte{1})},
		Runs: []runState{{Run: encodeID([16]byte{2}), Start: 1, End: 40, Clean: true}, {Run: encodeID([16]byte{3}), Start: 41}}}
	if err := saveState(dir, st); err != nil {
		t.Fatal(err)
	}
	got, found, err := loadState(dir)
	st.Version = stateVersion
	if err != nil || !found || !reflect.DeepEqual(got, st) {
		t.Fatalf("loadState = %+v, %v, %v; want %+v", got, found, err, st)
	}
	epoch, lineage, err := got.epochs()
	if err != nil || epoch != e || len(lineage) != 1 || lineage[0] != ([16]byte{1}) {
		t.Fatalf("epochs: %x %x %v", epoch, lineage, err)
	}
	runs, err := got.runRecords()
	if err != nil || len(runs) != 2 || runs[0].End != 40 || !runs[0].Clean || runs[1].Start != 41 {
		t.Fatalf("runs: %+v %v", runs, err)
	}
	for i := 0; i < maxRuns+5; i++ {
		st.Runs = append(st.Runs, runState{Run: encodeID([16]byte{byte(i)}), Start: uint64(i)})
	}
	if err := saveState(dir, st); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := loadState(dir); len(got.Runs) != maxRuns {
		t.Fatalf("%d runs kept, want %d", len(got.Runs), maxRuns)
	}
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadState(dir); err == nil {
		t.Fatal("a damaged state file was accepted")
	}
}
