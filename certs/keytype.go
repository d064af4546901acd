package certs

import (
	"fmt"
	"strings"
)

// String returns the name ParseKeyType accepts.
func (k KeyType) String() string {
	switch k {
	case Ed25519:
		return "ed25519"
	case ECDSAP256:
		return "p256"
	}
	return fmt.Sprintf("KeyType(%d)", int(k))
}

// ParseKeyType parses "ed25519" or "p256" (any case).
func ParseKeyType(s string) (KeyType, error) {
	switch strings.ToLower(s) {
	case "ed25519":
		return Ed25519, nil
	case "p256":
		return ECDSAP256, nil
	}
	return 0, fmt.Errorf("unknown key type %q (want ed25519 or p256)", s)
}
