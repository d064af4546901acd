// Package quictransport carries numbered ops from the tdfs master to its
// slaves over QUIC with mutual TLS: a Master (QUIC client, one connection
// per slave) fans out what mirrorfs emits, a Server (QUIC server, on each
// slave) hands the ops to a Handler in seq order and acknowledges them.
//
// # Streams
//
// Each connection carries one bidirectional control stream, opened by the
// master with the highest send priority (urgency 0, non-incremental), and
// any number of unidirectional data streams:
//
//	control, master -> slave: Hello, then ops in seq order, Bye, Error
//	control, slave -> master: HelloAck, then Acks, Error
//	data, master -> slave:    one FrameOp (a write of DataThreshold bytes
//	                          or more), then the stream's end
//
// Frames and bodies are those of package wire; the seq in each op body is
// the only ordering header, because QUIC does not order streams against
// each other (RFC 9000 section 2.2). Writes on data streams run in parallel
// (DataStreams per slave) so one lost packet stalls one write, not all.
//
// # Handshake and resumption
//
// The master sends Hello{Run, Mode, First: lowest seq it holds, PrevRun and
// PrevHead: its previous run on this backing dir if that ended cleanly,
// Fresh: the backing dir was empty, Vouched: its operator vouches for the
// slaves' trees}; the slave answers HelloAck{Run, Applied, Durable,
// MaxPending}. Both sides compute where to start the same way: Applied+1
// when the runs match, 1 otherwise. The slave follows a new run only if
// its tree is the one that run starts from: it is durable at exactly
// PrevRun/PrevHead, or it has no state and both trees are new (Fresh, and
// the Handler finds its tree empty), or the operator vouched for a slave
// without state; otherwise, and whenever its Handler reports its tree in
// an unknown state, it answers CodeNeedsResync. If the master no longer
// holds the op a slave needs it says CodeNeedsResync itself. Either way the
// master logs it once and stops dialing that slave: it never lets a slave
// silently diverge. With QUIC mTLS the master's dial succeeds before the
// slave checked its certificate, so the master treats a slave as connected
// only once HelloAck arrived.
//
// # Ordering, flow control, memory
//
// The slave reads every stream to its end as soon as it is accepted, each
// in its own goroutine, into a reorder buffer keyed by seq; one applier
// takes ops from it strictly in seq order. A stream left unread while the
// applier waits for a missing op would pin QUIC's connection window and
// deadlock the connection, control stream included. Memory stays bounded
// because the master never has more than the slave's announced MaxPending
// bytes of op bodies beyond the slave's acknowledged Applied seq; a master
// that exceeds it is disconnected (CodeLimit). The master's own backlog of
// ops kept for lagging or absent slaves is bounded by MasterConfig.Backlog:
// beyond it the oldest ops are dropped, and slaves that needed them need a
// resync.
//
// # Durability
//
// Acks carry Applied and Durable. Durability is decided here, not in the
// Handler: a wire.Sync op makes the slave call Handler.Sync at once; in
// sync mode the slave syncs whenever it drained what had arrived (group
// commit); in every mode it syncs when idle for SyncInterval. Master.Wait
// blocks writers (fsync and sync modes) until every streaming slave is
// durable at the seq, for at most SyncTimeout: a slower slave is marked
// degraded and stops holding writers back until it catches up.
//
// # What it does not do
//
// It does not apply ops (the Handler does), number them (mirrorfs does),
// persist anything (the master's backlog is in memory; the slave's state
// file is the Handler's), or resynchronise a slave by comparing trees: a
// slave that needs a resync is reported, not repaired. It uses no 0-RTT.
package quictransport
