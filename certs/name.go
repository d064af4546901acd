package certs

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// ErrBadName: a certificate name or host is not acceptable.
var ErrBadName = errors.New("bad name")

// maxNameLen is the X.509 upper bound of a common name (RFC 5280
// appendix A.1, ub-common-name).
const maxNameLen = 64

// CheckName reports whether name can name a certificate and its files
// (NAME.crt, NAME.key in one directory): 1 to 64 letters, digits, '.', '-'
// and '_', starting with a letter or digit (so never "..", a hidden file or
// something a command line would take for a flag), and no '/'.
func CheckName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: the name is empty", ErrBadName)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("%w: %q is longer than %d characters", ErrBadName, name, maxNameLen)
	}
	for i, c := range name {
		if isAlnum(c) || (i > 0 && (c == '.' || c == '-' || c == '_')) {
			continue
		}
		if i == 0 {
			return fmt.Errorf("%w: %q must start with a letter or digit", ErrBadName, name)
		}
		return fmt.Errorf("%w: %q may hold only letters, digits, '.', '-' and '_'", ErrBadName, name)
	}
	return nil
}

// CheckHost reports whether h can be a subject alternative name: an IP
// address, or a DNS name of dot-separated labels of letters, digits, '-'
// and '_' (crypto/x509 verification accepts '_', common outside the web
// PKI), each 1-63 characters and not starting or ending with '-'.
func CheckHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	if h == "" || len(h) > 253 {
		return fmt.Errorf("%w: %q is not a host name or IP address", ErrBadName, h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: %q is not a host name or IP address", ErrBadName, h)
		}
		for _, c := range label {
			if !isAlnum(c) && c != '-' && c != '_' {
				return fmt.Errorf("%w: %q is not a host name or IP address", ErrBadName, h)
			}
		}
	}
	return nil
}

func isAlnum(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
