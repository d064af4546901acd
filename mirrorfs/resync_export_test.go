package mirrorfs

// Test hooks for the external tests of resync (package mirrorfs_test).

import "testing"

// SetResyncWalkHook makes every pass started afterwards call fn after
// each directory's Final item (outside every lock); nil removes it.
func SetResyncWalkHook(fn func(dir string)) {
	passHooks.Lock()
	defer passHooks.Unlock()
	passHooks.walk = fn
}

// SetResyncChunkHook makes every pass started afterwards call fn between
// the items of a directory listed in several (outside every lock).
func SetResyncChunkHook(fn func(dir string)) {
	passHooks.Lock()
	defer passHooks.Unlock()
	passHooks.chunk = fn
}

// SetResyncNoFileHandles makes passes hold descriptors instead of file
// handles, as on a filesystem without them.
func SetResyncNoFileHandles(on bool) {
	passHooks.Lock()
	defer passHooks.Unlock()
	passHooks.noFH = on
}

// SetResyncMaxEntries bounds the entries of one ResyncDir (0: the wire's
// bound), so small directories are listed in several items.
func SetResyncMaxEntries(n int) {
	passHooks.Lock()
	defer passHooks.Unlock()
	passHooks.maxEntries = n
}

// SetResyncNoWatch makes passes blind to live ops (tests show what goes
// wrong without the watch).
func SetResyncNoWatch(on bool) {
	passHooks.Lock()
	defer passHooks.Unlock()
	passHooks.noWatch = on
}

// RequireFUSE lets the external tests skip or fail like the internal ones.
func RequireFUSE(t *testing.T) { requireFUSE(t) }
