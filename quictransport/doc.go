// Package quictransport carries numbered ops from the tdfs master to its
// slaves over QUIC with mutual TLS: a Master (QUIC client, one connection
// per slave) fans out what mirrorfs emits, a Slave (QUIC server, on each
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
// # Lanes
//
// quic-go's congestion control is NewReno, one window per connection,
// shared by all its streams: on a lossy or long link every loss halves the
// window of all the data in flight. With MasterConfig.Lanes > 1 a session
// spans several connections: the primary one above, and lanes that carry
// only data streams (lanes.go, session_lanes.go):
//
//	Hello{..., Lanes: N}                 the master asks for N connections
//	HelloAck{..., Lanes: G, LaneToken}   the slave grants G <= min(N, MaxLanes)
//	lane i (1..G-1), a new mTLS connection, first bidirectional stream:
//	  master -> slave: LaneHello{Version, LaneToken, Lane: i}
//	  slave -> master: LaneAck, or Error{CodeLane} and a close
//	then master -> slave data streams, as on the primary connection
//
// The slave binds a lane to its current session only if the token is
// that session's (a random 16-byte value, compared in constant time), the
// lane's certificate is byte for byte the one of the session's connection,
// CheckPeer accepts it, and its number is free and below the grant;
// anything else is refused with CodeLane and a log line, and leaves the
// session alone. A lane's data streams feed the session's reorder buffer
// like the primary's: barriers, flow control (MaxPending, the master's
// limit and inflight) and acks are the session's, whatever connection an
// op travels on. The master spreads data streams over its connections,
// least busy first; DataStreams bounds them in total. Each connection
// admits MaxStreams data streams (QUIC's own limit), so a session has at
// most MaxLanes*MaxStreams open. Lifetime: lanes close when their session
// ends, and a lane that ends ends its session on both sides (writes in
// flight on it are lost; the next session resends from the slave's
// applied seq). A lane that cannot be connected is logged and the session
// goes on with the others. Older peers: a master with Lanes <= 1 sends the
// Hello an older slave expects; a master asking for lanes is refused by
// an older slave as a malformed Hello (the master's log suggests --lanes
// 1); a slave grants lanes only to a Hello that asks for them.
//
// # Handshake, fencing and resumption
//
// The master sends Hello{Epoch, Lineage, Run, Mode, First: lowest seq it
// holds, Head}; the slave checks it may follow that master (fence): a
// slave follows one epoch; it adopts a master when it has none, or when
// the master's Lineage holds its epoch (a promoted successor), through
// Handler.Follow; it refuses (CodeFenced) an epoch in its own lineage (an
// old master: split brain) and an unrelated one. It answers
// HelloAck{Epoch, Run, Applied, Durable, MaxPending, Resyncing}. The
// master resumes it at Applied+1 when it can (rebaseReasonLocked):
// same epoch, tree not of unknown state, no op the master lost in a crash
// (Runs), and every op from Applied+1 held in memory or in the journal.
// Otherwise it runs a rebase pass.
//
// # Resync passes
//
// A pass (peer_resync.go) is run by the Tree (mirrorfs): it emits
// positioned items (wire/resync.go) into the slave's queue while holding
// the tree's locks; Emit tags each with the master's head, and the sender
// sends it between ops at that position. While items are in flight every
// op goes on the control stream, so items and ops reach the slave in one
// order. A rebasing ResyncBegin restarts the slave's op stream after its
// position. Replies (FrameResyncReply) go to the pass; Ack.Items counts
// the items applied, which bounds the bytes in flight (ResyncWindow).
// Passes also serve Master.Verify, and the check of every slave after the
// master crashed (CheckAll).
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
// that exceeds it is disconnected (CodeLimit). The master keeps every op
// until every slave known this run made it durable: in memory up to
// MasterConfig.Backlog, and in the Journal, which it appends and flushes
// a few ms behind Append, on the flusher's and the senders' goroutines
// (journaler.go; an op is sent only once the journal has it), and
// truncates; a slave the journal no longer covers gets a rebase pass.
//
// # Durability
//
// Acks carry Applied and Durable. Durability is decided here, not in the
// Handler: a wire.Sync op makes the slave call Handler.Sync at once (in
// async mode, where no writer waits for it, once it has applied every op
// that arrived with it, or within 10 ms under a stream that never
// drains: one sync per burst); in sync mode the slave syncs whenever it
// drained what had arrived (group commit); in every mode it syncs when
// idle for SyncInterval. Master.Wait
// blocks writers (fsync and sync modes) until every streaming slave is
// durable at the seq, for at most SyncTimeout: a slower slave is marked
// degraded and stops holding writers back until it catches up.
//
// # When the slave cannot apply an op
//
// A Handler's error says which of three things happened. A
// *wire.ResourceError (disk full, read-only...) stalls the session: the slave
// sends a wire.Stall, keeps the op and everything after it, and calls
// Apply again with backoff; the master shows it degraded with the cause,
// stops waiting for it at once, and clears both when an ack covers the
// op. wire.ErrNeedsResync closes the connection with CodeNeedsResync: the
// master redials at once and runs a rebase pass (catchup.go). wire.ErrRefused
// and wire.ErrLimit close it with their codes. The slave announces its policy
// (wire.Policy) in its HelloAck, and the master hands it to
// MasterConfig.OnPolicy, so that its mount refuses what a slave would
// leave out. Where the
// slave stands (Applied, Durable) is the Handler's alone: acks read
// Handler.State.
//
// # Files
//
// Master side: master.go (Master: Append, Wait, Drain, Status), backlog.go
// (the ops held in memory), journaler.go (writing and truncating the
// Journal), peer.go (one slave: its state, grouped by owner, and its dial
// loop), peer_dial.go (a connection: dial, handshake, session),
// catchup.go (resume or rebase, decided once), peer_send.go (the sender),
// peer_ack.go (the ack reader), peer_journal.go (reading ops back from the
// Journal), peer_resync.go and resync.go (passes), lanes.go, synced.go
// (the fence), peers_live.go (AddPeer, RemovePeer), stats.go (lags,
// rates, Recheck). Slave side: slave.go (Slave: listening, fencing,
// sessions), session.go (one master's session: its life and its end),
// session_hello.go (Hello, fencing, HelloAck), session_read.go (the
// control and data stream readers), session_apply.go (the applier: ops and
// items in order, stalls, idle syncs), session_ack.go (acks and frames
// back), session_lanes.go, reorder.go (the reorder buffer). Shared:
// config.go, errors.go (sentinels, and what a peer's close means),
// quicconfig.go (QUIC settings, and ctrlStream: what the control-stream
// code of both sides needs of a stream).
//
// # What it does not do
//
// It does not apply ops (the Handler does), number them (mirrorfs does),
// compare trees (the Tree does), or keep the slave's state (its Handler
// does; the master's epoch and runs are its caller's). It uses no 0-RTT.
package quictransport
