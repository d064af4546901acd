// Package replayer is the slave side of tdfs: it applies the master's ops,
// one at a time and in sequence order, to an ordinary directory tree (the
// replica) beneath a root.
//
// # Contract
//
// The same op sequence applied to the same starting tree yields the same
// tree: names, types, contents (holes punched stay holes where the
// filesystem allows), sizes, modes, owners (with Options.Chown), mtimes to
// the nanosecond, symlink targets, hard links and xattrs. Every op carries
// the times the master's backing dir held after it, and the replayer sets
// them after its own changes, so applying an op cannot leave the slave's
// clocks in the tree. Umask plays no part: modes are set exactly.
//
// Writes name a handle, not a path (docs/design.md, Handles): Create and Open
// keep the file open under the master's handle id until Release, so a write
// lands in the file the master wrote to even after a rename or unlink of it.
//
// Ops that a crashed slave may see twice are idempotent where that is safe:
// Mkdir of an existing directory, Unlink and Rmdir of a missing name,
// Removexattr of a missing attribute, Symlink, Link and Mknod re-creating
// what is already there, and Create (the master's O_EXCL becomes O_TRUNC:
// the master guaranteed the file was new, so it must end empty).
//
// # Confinement
//
// Every path is confined beneath the root, even from an authenticated
// master. The parent of each path is resolved with openat2(2)
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS|RESOLVE_NO_XDEV,
// so "..", absolute paths, any symlink in an intermediate component and any
// mount crossing are refused; the final name is then acted on with *at
// system calls that never follow it. A FUSE path never has a symlink as an
// intermediate component, so refusing them costs nothing legitimate.
//
// # Refusals
//
// Apply returns an error wrapping wire.ErrRefused, and changes nothing, for: a
// path that is not a clean relative path or that leaves the root; a data op
// (Open, Create over an existing name, truncate) on anything but a regular
// file, including a final symlink, which is never followed;
// rename flags other than RENAME_NOREPLACE and RENAME_EXCHANGE; fallocate
// modes other than allocate, keep-size, punch-hole and zero-range; op
// types it does not know.
//
// # Policy
//
// What the slave holds beyond ordinary entries (Replayer.Policy, announced
// to the master, whose mount refuses the rest), checked before anything
// else (policy.go): a setuid or setgid bit on anything but a directory
// only with Options.AllowSetuid, and security.capability likewise; device
// nodes only with Options.AllowDevices; xattrs in user.* and security.*,
// trusted.* and POSIX ACLs only with Options.Chown (root); writes,
// fallocates and truncates ending up to Options.MaxFileSize. An op beyond
// it returns ErrPolicy (which wraps wire.ErrRefused) and changes nothing; the
// writes through a handle whose Create or Open it refused then change
// nothing either, and tolerant mode skips it. A resync pass leaves such an
// entry out of the replica (and an xattr out of its entry) and reports it
// as a difference, in a Verify pass too. A handle beyond
// Options.MaxHandles is wire.ErrLimit, handled the same way. Owners are not
// refused but dropped without Options.Chown, with one warning.
//
// # Catch-up and resync
//
// A slave process killed with SIGKILL leaves its tree holding ops 1..K and
// maybe part of K+1 (the page cache survives it): Reapply applies K+1 so
// that the result equals applying it once (reapply.go), and
// RestoreHandles reopens the files it held open from the file handles
// Options.OnHandle handed out (handles_persist.go). A slave whose tree is
// of unknown state is resynchronised by Resync, which applies a pass's
// positioned items between ops, in tolerant mode while a pass repairs
// (resync*.go); a Verify pass changes nothing and only reports.
//
// # Errors
//
// Every error of Apply, Reapply, Resync and Sync is in one class
// (Classify, classify.go): ClassResource (disk full, read-only, I/O error:
// retry the op with Reapply once the resource is back), ClassRefused (the
// slave's policy or bounds) or ClassDiverged (the replica is not what the
// master believes: only a comparison pass brings it back).
//
// # Files
//
// One op takes one path, applyOp in replayer.go: the policy check
// (policy.go), an op through a handle that is gone (handles.go), the
// change itself (the dispatch in replayer.go to apply_attr.go,
// apply_copy.go, apply_create.go, apply_data.go, apply_namespace.go,
// apply_xattr.go), and the handle it opened or released (handles.go). In
// tolerant mode a failure is classified (classify.go) and skipped or not
// (resync_tolerant.go), and the file it touched is noted suspect
// (suspects.go). Paths are resolved in resolve.go. The slave's side of a
// pass is ApplyItem in resync.go, with the directory, entry, attribute and
// data steps in resync_dir.go, resync_entry.go, resync_attr.go and
// resync_data.go.
//
// # What it does not do
//
// It does not order ops (the transport hands them over in sequence order
// and decides barriers), talk to the network, or keep state inside the
// replica: package slave keeps the slave's position in a state directory
// of its own. It does not strip setuid/setgid bits (it holds them or leaves the file out) or
// map owners; mount the replica nosuid,nodev if the master is not fully
// trusted. It needs Linux
// 5.6 or later (openat2) and 6.6 or later (fchmodat2) and, for xattrs on
// special files, /proc.
package replayer
