package slave

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
)

// resetKeyFile holds the QUIC stateless reset key in the state dir, so a
// restarted slave can tell a master still talking to its previous process
// to reconnect at once.
const resetKeyFile = "reset.key"

// LoadResetKey reads the key from the state dir, or makes and saves a new
// one.
func LoadResetKey(stateDir string) (*[32]byte, error) {
	p := filepath.Join(stateDir, resetKeyFile)
	var k [32]byte
	data, err := os.ReadFile(p)
	switch {
	case err == nil && len(data) == len(k):
		copy(k[:], data)
		return &k, nil
	case err == nil:
		return nil, fmt.Errorf("%s: %d bytes, want %d (delete it to make a new one)", p, len(data), len(k))
	case !os.IsNotExist(err):
		return nil, err
	}
	if _, err := rand.Read(k[:]); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, k[:], 0o600); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	return &k, nil
}
