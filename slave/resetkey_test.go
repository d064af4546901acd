package slave

import (
	"os"
	"path/filepath"
	"testing"
)

func TestResetKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	k1, err := LoadResetKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadResetKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if *k1 != *k2 || *k1 == ([32]byte{}) {
		t.Fatalf("the key is not kept: %x then %x", k1, k2)
	}
	st, err := os.Stat(filepath.Join(dir, resetKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	if err := os.WriteFile(filepath.Join(dir, resetKeyFile), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadResetKey(dir); err == nil {
		t.Fatal("a damaged key file was accepted")
	}
}
