package quictransport

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/quictransport/wire"
)

// DefaultPort is the UDP port a slave listens on when its address names none.
const DefaultPort = 7430

// Defaults for the zero values of MasterConfig and ServerConfig.
const (
	DefaultSyncTimeout   = 10 * time.Second
	DefaultBacklog       = 256 << 20
	DefaultDataThreshold = 64 << 10
	DefaultDataStreams   = 8
	DefaultMaxPending    = 256 << 20
	DefaultSyncInterval  = time.Second
)

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
)

// Peer is one slave the master feeds.
type Peer struct {
	Addr string      // host:port of the slave (UDP)
	TLS  *tls.Config // from certs.ClientConfig(cert, pool, host): ServerName already set
}

// MasterConfig configures a Master. Zero values take the Default* values.
type MasterConfig struct {
	Peers []Peer
	Run   wire.RunID
	// PrevRun, PrevHead and Fresh are announced in Hello (see wire.Hello):
	// they let a slave know whether its tree is the one this run starts
	// from. Zero values mean "unknown": only a slave of this very run may
	// then follow it.
	PrevRun     wire.RunID
	PrevHead    uint64
	Fresh       bool
	Vouched     bool
	Mode        wire.SyncMode
	SyncTimeout time.Duration // how long Wait waits for a slave before marking it degraded
	Compressor  *wire.Compressor
	// Backlog is how many bytes of encoded ops the master keeps for lagging
	// or absent slaves.
	Backlog int64
	// DataThreshold: writes with len(Data) >= DataThreshold travel on their
	// own data stream.
	DataThreshold int
	// DataStreams is how many data streams may be in flight per slave.
	DataStreams int
	Logger      *slog.Logger

	// quic, when set (tests), replaces the QUIC configuration.
	quic *quic.Config
}

func (c MasterConfig) withDefaults() (MasterConfig, error) {
	for i, p := range c.Peers {
		if p.Addr == "" {
			return c, fmt.Errorf("%w: peer %d has no address", ErrConfig, i)
		}
		if p.TLS == nil {
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
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.quic == nil {
		c.quic = quicConfig()
	}
	return c, nil
}

// Handler applies ops on the slave. It is declared here, where it is
// consumed; cmd/tdfs-slave adapts the replayer and its state file to it.
// The transport calls it from one goroutine at a time.
type Handler interface {
	// Apply applies op number seq of master run run. Calls come one at a
	// time in seq order with no gaps within a run; a new run starts at seq 1.
	Apply(run wire.RunID, seq uint64, op wire.Op) error
	// Sync makes every op applied so far durable and records durably (state
	// file) that ops up to seq of run are durable. The transport passes its
	// own applied seq (which counts Sync ops, never passed to Apply).
	Sync(run wire.RunID, seq uint64) error
	// State returns the run and durable seq recorded so far (at startup:
	// from the state dir). A non-nil err says the replica's tree is in an
	// unknown state (a crash after applying ops it had not made durable,
	// say): every master is then told the slave needs a resync, with err
	// as the reason; unless err wraps ErrUnverified and the master's
	// operator vouches for the slaves' trees.
	State() (run wire.RunID, durable uint64, err error)
}

// ServerConfig configures a slave's Server. Zero values take the Default*
// values.
type ServerConfig struct {
	Listen  string      // host:port UDP; port DefaultPort when empty
	TLS     *tls.Config // from certs.ServerConfig
	Handler Handler
	// MaxPending bounds the bytes of received-but-unapplied ops buffered;
	// at least 2*wire.MaxFrameLen.
	MaxPending int64
	// SyncInterval: when idle this long with unsynced ops, sync them.
	SyncInterval time.Duration
	// ResetKey, when set, is the QUIC stateless reset key. Keep it across
	// restarts (the slave's state dir): a master still talking to the
	// previous process then gets a stateless reset and reconnects at once,
	// instead of after the idle timeout (RFC 9000 section 10.3).
	ResetKey *[32]byte
	Logger   *slog.Logger

	// quic, when set (tests), replaces the QUIC configuration.
	quic *quic.Config
}

func (c ServerConfig) withDefaults() (ServerConfig, error) {
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
	c.Listen = listenAddr(c.Listen)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.quic == nil {
		c.quic = quicConfig()
	}
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

// quicConfig is the QUIC configuration of both sides (research A.2/A.3).
// The same values serve the master, which mostly sends, and the slave,
// whose receive windows bound master->slave throughput.
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
		// bigger windows useless (research A.2).
		InitialStreamReceiveWindow:     2 << 20,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 4 << 20,
		MaxConnectionReceiveWindow:     64 << 20,
		// One control stream plus room for a replaced one; anything else
		// bidirectional is a protocol error.
		MaxIncomingStreams: 4,
		// Data streams in flight per slave (DataStreams, default 8) plus
		// headroom; a master configured with more simply waits for credit,
		// which returns as the slave reads every stream to its end.
		MaxIncomingUniStreams: 64,
		// No 0-RTT: it is replayable (research A.7). Only takes effect with
		// ListenEarly, which we do not use; set for the record.
		Allow0RTT: false,
	}
}
