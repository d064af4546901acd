package daemon

import (
	"errors"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// ListenAdmin listens on the unix socket p, a daemon's admin socket in a
// directory it holds locked: mode 0600, so only the daemon's user (root)
// may talk to it. A socket left there by a daemon that was killed is
// removed first: the lock says no other daemon uses it.
func ListenAdmin(p string) (net.Listener, error) {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	// The umask makes the socket 0600 from its creation on: a chmod
	// afterwards would leave a window. It is process-wide, and the
	// daemons listen on their admin socket once, at startup.
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", p)
	unix.Umask(old)
	return ln, err
}
