package wire

import (
	"errors"
	"fmt"
	"strings"
)

// CheckPath reports whether p is a valid replicated path: relative,
// slash-separated, no empty, "." or ".." component, no NUL, each component
// at most MaxNameLen bytes, the whole at most MaxPathLen bytes. The empty
// path names the root and is valid only when root is true.
func CheckPath(p string, root bool) error {
	if p == "" {
		if root {
			return nil
		}
		return errors.New("empty path (the root) not allowed here")
	}
	if len(p) > MaxPathLen {
		return fmt.Errorf("path of %d bytes exceeds %d", len(p), MaxPathLen)
	}
	if strings.IndexByte(p, 0) >= 0 {
		return errors.New("path contains NUL")
	}
	if p[0] == '/' {
		return fmt.Errorf("absolute path %q", p)
	}
	for c := range strings.SplitSeq(p, "/") {
		switch {
		case c == "":
			return fmt.Errorf("path %q has an empty component", p)
		case c == "." || c == "..":
			return fmt.Errorf("path %q has a %q component", p, c)
		case len(c) > MaxNameLen:
			return fmt.Errorf("path component of %d bytes exceeds %d", len(c), MaxNameLen)
		}
	}
	return nil
}
