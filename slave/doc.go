// Package slave is a tdfs slave's replica and its state dir: it applies
// the master's ops through the replayer, and it alone knows where the
// replica stands and what it takes to bring it back after anything
// happened to either side. The transport (quictransport.Slave) calls it
// through quictransport.Handler and asks it, never itself, how far the
// replica got.
//
// # Where the replica stands
//
// Replica owns, for one replica:
//
//   - applied: the last op applied (in memory; after a kill, recovered
//     from the progress log);
//   - durable: every op up to it is on disk (the state file, saved with
//     fdatasync at each Sync: state.go);
//   - resyncing: the tree is of unknown state until a comparison pass
//     ends (the state file, written with fsync the moment it becomes
//     true);
//   - dirty: the replica holds applied ops that are not yet recorded
//     durable (in the state file: saved before the first such op,
//     cleared at the next Sync);
//   - the progress log: the handles the master holds open, and applied
//     (a word in the mapped page "applied"), written without fsync
//     (progress.go, progress_mark.go);
//   - the suspect log: the files whose contents a pass must compare
//     whatever their size and mtime say (suspects.go).
//
// # The recovery contract
//
// At startup (New), from what the state dir holds:
//
//   - not dirty: the tree is as of durable; the files the master
//     held open are reopened (progress log);
//   - dirty, and the host has not restarted since (the progress log's boot
//     id): the page cache kept every op applied, so the tree holds ops up
//     to the progress log's applied, plus maybe part of the next one: it
//     resumes there, and that op is applied again idempotently
//     (replayer.Reapply);
//   - dirty after a crash of the host, or a progress log that cannot be
//     believed: the tree holds an unknown part of the ops after durable:
//     resyncing, every file's contents suspect.
//
// While serving, every error of an op is sorted (replayer.Classify):
//
//   - a missing resource (disk full, read-only, I/O error): the op is
//     kept and applied again through Reapply once the transport retries
//     it (wire.ResourceError); nothing else changes;
//   - proof of divergence (a name missing or of another type, a handle
//     never opened, a half-done op that cannot be told done): resyncing is
//     recorded durably, then the transport is told the slave needs a
//     resync (wire.ErrNeedsResync), and the master starts a
//     comparison pass at once;
//   - a refusal (the slave's policy does not hold what the op makes, or
//     the op is one no master should send): nothing changed; it is
//     handled as divergence, so what the op touches is left out of the
//     replica by the pass and reported, and no op ever halts a replica.
//     The policy (Replica.Policy) is announced to the master, whose mount
//     refuses what it would leave out, so this happens only for a tree
//     made before the slave connected.
//
// A failed Sync may have lost data the kernel had accepted: resyncing,
// every file suspect. An op skipped by the replayer's tolerant mode (the
// tree met a difference while a pass runs, or after the master's unclean
// restart: wire.Unclean) records resyncing durably before the op is
// acknowledged, so that a restart never resumes from a tree the op stream
// no longer describes. The end of a pass that repairs (not a Verify)
// clears resyncing; the Sync the transport makes right after records it.
//
// # What it does not do
//
// It does not talk to the network, order ops or decide what the master
// sends (quictransport), or apply ops itself (replayer); it keeps nothing
// inside the replica.
package slave
