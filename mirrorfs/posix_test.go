package mirrorfs

import (
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"

	"github.com/tdfs/tdfs/wire"
)

// posixSkip lists the posixtest cases that do not apply to the mirror, and
// why. (posixtest.Tmpfile skips itself on EOPNOTSUPP, our answer to
// O_TMPFILE, so it is not listed.)
var posixSkip = map[string]string{
	// It expects two descriptors of one process to hold conflicting
	// fcntl locks, which is what go-fuse's loopback does when locks are
	// forwarded to it (EnableLocks: it maps them to OFD locks). The mirror
	// leaves locks to the kernel (all access goes through this one mount),
	// and POSIX record locks of one process never conflict with each other.
	"FcntlFlockLocksFile": "needs EnableLocks; the mirror keeps POSIX locking in the kernel",
}

// TestPosix runs go-fuse's POSIX conformance tests against the mirror,
// each on a fresh mount, and checks that what the sink saw is dense and
// decodes (newEnv's cleanup).
func TestPosix(t *testing.T) {
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, ok := posixSkip[name]; ok {
				t.Skip(why)
			}
			e := newEnv(t, wire.ModeFsync)
			posixtest.All[name](t, e.mnt)
		})
	}
}
