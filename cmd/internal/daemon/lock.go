package daemon

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Lock takes an exclusive advisory lock (flock) on directory dir for the
// life of the process, so two daemons never serve the same directory or
// state dir at once: their op streams would interleave in one tree. The
// returned function releases it.
func Lock(what, dir string) (func(), error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, dir, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s %s is in use by another tdfs process", what, dir)
		}
		return nil, fmt.Errorf("lock %s %s: %w", what, dir, err)
	}
	return func() { unix.Close(fd) }, nil
}
