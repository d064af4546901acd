package slave

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestSuspectLog(t *testing.T) {
	dir := t.TempDir()
	l, inos, all, err := OpenSuspects(dir)
	if err != nil || len(inos) != 0 || all {
		t.Fatalf("new log: %v %v %v", inos, all, err)
	}
	want := [][2]uint64{{1, 2}, {3, 4}}
	for _, ino := range want {
		if err := l.Add(ino); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	// A kill mid-record leaves a torn tail: ignored.
	f, _ := os.OpenFile(filepath.Join(dir, suspectsFile), os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{9, 9, 9})
	f.Close()
	l, inos, all, err = OpenSuspects(dir)
	if err != nil || !slices.Equal(inos, want) || all {
		t.Fatalf("reloaded: %v %v %v, want %v", inos, all, err, want)
	}
	if err := l.All(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, inos, all, err = OpenSuspects(dir)
	if err != nil || !all || inos != nil {
		t.Fatalf("after All: %v %v %v", inos, all, err)
	}
	if err := l.Clear(); err != nil {
		t.Fatal(err)
	}
	if err := l.Add([2]uint64{5, 6}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, inos, all, err = OpenSuspects(dir); err != nil || all || !slices.Equal(inos, [][2]uint64{{5, 6}}) {
		t.Fatalf("after Clear and Add: %v %v %v", inos, all, err)
	}
}
