package quictransport

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/journal"
	"github.com/tdfs/tdfs/wire"
)

// DefaultPort is the UDP port a slave listens on when its address names none.
const DefaultPort = 7430

// Defaults for the zero values of MasterConfig and SlaveConfig.
const (
	DefaultSyncTimeout = 10 * time.Second
	// DefaultBacklog is small on purpose: the journal holds every op
	// anyway, and a backlog the size of a burst makes the heap grow and
	// shrink by as much, each fresh page a fault (a 1 GiB write cost the
	// master 4.2 CPU-seconds with 256 MiB, 1.8 with 64 MiB).
	DefaultBacklog       = 64 << 20
	DefaultDataThreshold = 64 << 10
	DefaultDataStreams   = 8
	DefaultMaxPending    = 256 << 20
	DefaultSyncInterval  = time.Second
	DefaultResyncWindow  = 8 << 20
	// DefaultMaxStreams is how many data streams a master may have open
	// on a slave at once: its DataStreams plus headroom.
	DefaultMaxStreams = 64
	// DefaultMaxLanes is how many connections a slave accepts per master
	// session (the primary one and its lanes), when MaxStreams leaves
	// room for them (maxMaxStreams).
	DefaultMaxLanes = 8
)

// maxMaxStreams bounds SlaveConfig.MaxStreams, and MaxStreams times
// MaxLanes (the streams of a session): each open stream costs a goroutine
// and a frame buffer on the slave.
const maxMaxStreams = 4096

// minPending is the smallest MaxPending a slave may announce: one op body can
// be as large as a frame, and the master must be able to send it.
const minPending = 2 * wire.MaxFrameLen

// Timeouts of the protocol's own exchanges.
const (
	// helloTimeout bounds the wait for Hello (slave) and HelloAck (master).
	// The slave answers only after the connection it replaces has finished
	// the op in hand, so give a slow handler some room.
	helloTimeout = 30 * time.Second
	// dialTimeout bounds one dial attempt; quic-go gives up earlier on its
	// own (HandshakeIdleTimeout) when nothing answers.
	dialTimeout = 15 * time.Second
	// writeTimeout bounds a write of a control frame by the slave (acks,
	// errors): the master always reads its control stream, so a write
	// blocked this long means the connection is dead.
	writeTimeout = 15 * time.Second
	// closeGrace is how long a slave shutting down waits for the master to
	// read its final ack before closing the connection (CloseWithError does
	// not deliver pending stream data).
	closeGrace = 2 * time.Second
	// minBackoff and maxBackoff bound the master's redial delay.
	minBackoff = 200 * time.Millisecond
	maxBackoff = 5 * time.Second
	// divergedRedial: a slave reporting divergence is redialed at once
	// unless it did so less than this long ago.
	divergedRedial = time.Minute
)

// Peer is one slave the master feeds.
type Peer struct {
	Addr string      // host:port of the slave (UDP)
	TLS  *tls.Config // from certs.ClientConfig(cert, pool, host): ServerName already set
	// TLSFunc, when set, is called before every dial for the
	// configuration to use, instead of TLS: certificates, CA and
	// revocation list reloaded since take effect at the next connection.
	TLSFunc func() *tls.Config
}

// MasterConfig configures a Master. Zero values take the Default* values.
type MasterConfig struct {
	Peers []Peer
	// Epoch and Lineage identify the master (wire.Hello): slaves refuse
	// a master of another epoch unless it descends from theirs.
	Epoch   wire.Epoch
	Lineage []wire.Epoch
	// Run is this process's run; its RunStart op is the first op numbered
	// after Head.
	Run wire.RunID
	// Head is the last seq numbered before this run (the journal's last
	// record), 0 for a new epoch. The first Append is Head+1.
	Head uint64
	// Runs are earlier runs of this epoch (newest last): a slave whose last
	// RunStart was one of them, and which applied beyond its End, holds
	// ops that run numbered but never journaled (it crashed): such a
	// slave is resynchronised, not resumed.
	Runs []RunRecord
	// Journal, when set, keeps every op on disk: a slave that lags beyond
	// Backlog, or comes back after a restart of the master, is replayed
	// from it. The Master appends, flushes and truncates it; the caller
	// opens it and closes it after Run returns.
	Journal *journal.Journal
	// CheckAll asks for one comparison pass with every slave after it
	// connects: the previous run crashed, so its last ops may have reached
	// the backing dir without being journaled or sent.
	CheckAll    bool
	Mode        wire.SyncMode
	SyncTimeout time.Duration // how long Wait waits for a slave before marking it degraded
	// MinSlaves: Wait and WaitSynced succeed only once at least this many
	// slaves made the ops durable; when fewer do within SyncTimeout they
	// fail (ErrTooFewSlaves, ErrNotSynced) instead of pretending. 0: any
	// number, none connected included.
	MinSlaves  int
	Compressor *wire.Compressor
	// Backlog is how many bytes of encoded ops the master keeps in memory
	// for lagging or absent slaves (beyond it: the journal). It also caps
	// the bytes in flight to any slave (at least two frames).
	Backlog int64
	// DataThreshold: writes with len(Data) >= DataThreshold travel on their
	// own data stream.
	DataThreshold int
	// DataStreams is how many data streams may be in flight per slave, in
	// total over its lanes.
	DataStreams int
	// Lanes is how many QUIC connections carry each slave's data streams (0
	// or 1: one, the primary connection, which alone carries the control
	// stream; at most wire.MaxLanes). Each connection has its own congestion
	// window: quic-go's NewReno collapses on a lossy or long link, and
	// several windows recover faster than one (docs/design.md, Lanes). The
	// slave may grant fewer (its MaxLanes).
	Lanes int
	// ResyncWindow bounds the bytes of resync items in flight per slave.
	ResyncWindow int64
	// OnProgress, when set, is called with a pass's progress about once a
	// second, and once more when it ends (Done). The log says it too,
	// every few seconds once a pass has run for a few. It must not block.
	OnProgress func(PassReport)
	// OnWait, when set, learns how long each Wait (an fsync in fsync
	// mode, every op in sync mode) waited for the slaves.
	OnWait func(time.Duration)
	// OnPolicy, when set, learns the policy a slave announces in its
	// HelloAck (what it holds beyond ordinary entries), at its first
	// connection and whenever it changes: the master's mount refuses what
	// the strictest slave would. Called with the Master's lock held: it
	// must not block or call into the Master.
	OnPolicy func(peer string, p wire.Policy)
	// CheckPeer, when set, checks a slave's certificate once more when
	// its HelloAck arrives, just before the connection streams, and in
	// Recheck (see SlaveConfig.CheckPeer).
	CheckPeer func(*x509.Certificate) error
	Logger    *slog.Logger

	// quic, when set (tests), replaces the QUIC configuration.
	quic *quic.Config
}

// RunRecord is an earlier run of the master's epoch.
type RunRecord struct {
	Run   wire.RunID
	Start uint64 // seq of its RunStart
	End   uint64 // last seq it numbered (as far as the journal knows, if it crashed)
	Clean bool
}

func (c MasterConfig) withDefaults() (MasterConfig, error) {
	for i, p := range c.Peers {
		if p.Addr == "" {
			return c, fmt.Errorf("%w: peer %d has no address", ErrConfig, i)
		}
		if p.TLS == nil && p.TLSFunc == nil {
			return c, fmt.Errorf("%w: peer %s has no TLS configuration", ErrConfig, p.Addr)
		}
	}
	if c.Mode > wire.ModeSync {
		return c, fmt.Errorf("%w: unknown sync mode %v", ErrConfig, c.Mode)
	}
	if c.SyncTimeout < 0 || c.Backlog < 0 || c.DataThreshold < 0 || c.DataStreams < 0 {
		return c, fmt.Errorf("%w: negative timeout, backlog or data stream setting", ErrConfig)
	}
	if c.SyncTimeout == 0 {
		c.SyncTimeout = DefaultSyncTimeout
	}
	if c.Backlog == 0 {
		c.Backlog = DefaultBacklog
	}
	if c.DataThreshold == 0 {
		c.DataThreshold = DefaultDataThreshold
	}
	if c.DataStreams == 0 {
		c.DataStreams = DefaultDataStreams
	}
	if c.Lanes == 0 {
		c.Lanes = 1
	}
	if c.Lanes < 1 || c.Lanes > wire.MaxLanes {
		return c, fmt.Errorf("%w: %d lanes, want 1 to %d", ErrConfig, c.Lanes, wire.MaxLanes)
	}
	if c.ResyncWindow <= 0 {
		c.ResyncWindow = DefaultResyncWindow
	}
	if len(c.Lineage) > wire.MaxLineage {
		c.Lineage = c.Lineage[:wire.MaxLineage]
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.quic == nil {
		c.quic = quicConfig()
	}
	return c, nil
}

// SlaveState is where a slave stands, as its Handler records it.
type SlaveState struct {
	Epoch   wire.Epoch // the master epoch it follows; zero: none yet
	Lineage []wire.Epoch
	Run     wire.RunID // the run of the last RunStart op applied
	Applied uint64     // last op applied (after a restart: as recovered)
	Durable uint64     // last op made durable
	// Resyncing: the tree is of unknown state until a resync pass ends
	// (a new replica, an interrupted pass, a crash of the slave's host).
	Resyncing bool
}

// Handler applies ops on the slave. It is declared here, where it is
// consumed; package slave adapts the replayer and its state dir to it.
// The transport calls it from one goroutine at a time.
type Handler interface {
	// State returns where the slave stands.
	State() SlaveState
	// Follow records, durably, that the slave now follows epoch (a new
	// replica adopting its first master, or the successor of its master
	// after a promotion) and that its tree needs a resync.
	Follow(epoch wire.Epoch, lineage []wire.Epoch) error
	// Apply applies op number seq. Calls come in seq order without gaps,
	// except for Sync ops (never passed to Apply: Sync counts them, at
	// once, or in async mode with a later call that covers them) and where
	// a rebasing ResyncBegin moves the stream. A
	// *wire.ResourceError from Apply (disk full, read-only...) stalls the
	// session: the transport tells the master (wire.Stall) and calls
	// Apply again with the same op, with backoff, until it applies; the
	// connection stays up and nothing is sent twice. Any other error of
	// Apply or Resync closes the connection: with CodeRefused if it wraps
	// wire.ErrRefused (the op is forbidden and changed nothing), CodeLimit for
	// wire.ErrLimit, CodeProtocol for ErrProtocol, CodeNeedsResync for
	// wire.ErrNeedsResync (the master then resynchronises the slave), else
	// CodeApply.
	Apply(seq uint64, op wire.Op) error
	// Sync makes every op applied so far durable and records durably that
	// ops up to seq are. The transport passes its own applied seq (which
	// counts Sync ops, never passed to Apply). In async mode the Sync ops
	// of a burst make one call, once the burst is applied.
	Sync(seq uint64) error
	// ApplyItem applies a resync item, positioned after op number at; reply
	// sends a reply to the master (from the calling goroutine). A
	// *wire.ResourceError stalls the session as for Apply, and the item is
	// applied again: return one only for an item that may be (its data).
	ApplyItem(at uint64, it wire.ResyncItem, reply func(wire.ResyncReply) error) error
}

// SlaveConfig configures a Slave. Zero values take the Default*
// values.
type SlaveConfig struct {
	Listen  string      // host:port UDP; port DefaultPort when empty
	TLS     *tls.Config // from certs.ServerConfig
	Handler Handler
	// CheckPeer, when set, checks a master's certificate once more when
	// its Hello arrives, just before its connection becomes the one
	// served: a revocation list loaded since its handshake applies (a
	// connection may wait for its Hello for a while). Recheck uses the
	// same function on the connection served.
	CheckPeer func(*x509.Certificate) error
	// Policy is what the slave holds beyond ordinary entries (its
	// replayer's), announced to the master in the HelloAck so that its
	// mount refuses the rest before it reaches any slave; nil: everything
	// the protocol carries.
	Policy *wire.Policy
	// MaxPending bounds the bytes of received-but-unapplied ops buffered;
	// at least 2*wire.MaxFrameLen.
	MaxPending int64
	// SyncInterval: when idle this long with unsynced ops, sync them.
	SyncInterval time.Duration
	// MaxStreams bounds the data streams a master may have open at once
	// on each of its connections (QUIC MaxIncomingUniStreams); 0:
	// DefaultMaxStreams.
	MaxStreams int
	// MaxLanes bounds the connections of one master session: the primary
	// one and its lanes (wire.LaneHello), each with up to MaxStreams data
	// streams, so a session has at most MaxLanes*MaxStreams streams open
	// (at most maxMaxStreams), and their ops share one MaxPending. 0:
	// DefaultMaxLanes, lowered if MaxStreams leaves no room; 1: no lanes.
	MaxLanes int
	// ResetKey, when set, is the QUIC stateless reset key. Keep it across
	// restarts (the slave's state dir): a master still talking to the
	// previous process then gets a stateless reset and reconnects at once,
	// instead of after the idle timeout (RFC 9000 section 10.3).
	ResetKey *[32]byte
	Logger   *slog.Logger

	// quic, when set (tests), replaces the QUIC configuration.
	quic *quic.Config
}

func (c SlaveConfig) withDefaults() (SlaveConfig, error) {
	if c.TLS == nil {
		return c, fmt.Errorf("%w: no TLS configuration", ErrConfig)
	}
	if c.Handler == nil {
		return c, fmt.Errorf("%w: no handler", ErrConfig)
	}
	if c.MaxPending < 0 || c.SyncInterval < 0 {
		return c, fmt.Errorf("%w: negative MaxPending or SyncInterval", ErrConfig)
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.MaxPending < minPending {
		return c, fmt.Errorf("%w: MaxPending %d is below %d (two frames)", ErrConfig, c.MaxPending, minPending)
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = DefaultSyncInterval
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.MaxStreams < 1 || c.MaxStreams > maxMaxStreams {
		return c, fmt.Errorf("%w: MaxStreams %d is not between 1 and %d", ErrConfig, c.MaxStreams, maxMaxStreams)
	}
	if c.MaxLanes == 0 {
		c.MaxLanes = max(1, min(DefaultMaxLanes, maxMaxStreams/c.MaxStreams))
	}
	if c.MaxLanes < 1 || c.MaxLanes > wire.MaxLanes {
		return c, fmt.Errorf("%w: MaxLanes %d is not between 1 and %d", ErrConfig, c.MaxLanes, wire.MaxLanes)
	}
	if c.MaxLanes*c.MaxStreams > maxMaxStreams {
		return c, fmt.Errorf("%w: MaxLanes %d times MaxStreams %d is above %d streams per session",
			ErrConfig, c.MaxLanes, c.MaxStreams, maxMaxStreams)
	}
	c.Listen = listenAddr(c.Listen)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.quic == nil {
		c.quic = quicConfig()
	}
	c.quic = c.quic.Clone()
	c.quic.MaxIncomingUniStreams = int64(c.MaxStreams)
	return c, nil
}

// listenAddr fills in DefaultPort: "" -> ":7430", "host" or "host:" ->
// "host:7430".
func listenAddr(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port at all: the whole string is the host (an IPv6 address
		// with or without brackets too).
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), ""
	}
	if port == "" {
		port = strconv.Itoa(DefaultPort)
	}
	return net.JoinHostPort(host, port)
}

// quicConfig is the QUIC configuration of both sides (docs/design.md,
// Implementation traps). The same values serve the master, which mostly
// sends, and the slave, whose receive windows bound master->slave throughput.
func quicConfig() *quic.Config {
	return &quic.Config{
		// A handshake that makes no progress for 5 s fails, so a dial to an
		// absent slave returns and is retried with backoff.
		HandshakeIdleTimeout: 5 * time.Second,
		// Dead peer detection: a peer silent this long (keep-alives
		// included) is gone; the master redials, the slave frees the
		// connection. The effective value is the min of both peers'.
		MaxIdleTimeout: 15 * time.Second,
		// The control stream sits idle between bursts; PINGs keep a healthy
		// connection (and NAT bindings) alive well within MaxIdleTimeout.
		KeepAlivePeriod: 5 * time.Second,
		// Generous receive windows: they must cover the bandwidth-delay
		// product (1 Gbit/s x 50 ms = 6.25 MB) or latency bounds throughput.
		// Memory stays bounded by the slave's MaxPending, which the master
		// honours; above ~16 MB per connection NewReno's cwnd cap makes
		// bigger windows useless (hence lanes: docs/design.md, Lanes).
		InitialStreamReceiveWindow:     2 << 20,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 4 << 20,
		MaxConnectionReceiveWindow:     64 << 20,
		// One control stream plus room for a replaced one; anything else
		// bidirectional is a protocol error.
		MaxIncomingStreams: 4,
		// Data streams in flight per slave (DataStreams, default 8) plus
		// headroom; a master configured with more simply waits for credit,
		// which returns as the slave reads every stream to its end. A
		// slave sets its own (SlaveConfig.MaxStreams).
		MaxIncomingUniStreams: DefaultMaxStreams,
		// No 0-RTT: it is replayable. Only takes effect with ListenEarly,
		// which we do not use; set for the record.
		Allow0RTT: false,
	}
}
