package quictransport

import (
	"errors"
	"sort"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

// What the master knows of how far behind each slave is, in ops, bytes
// and seconds, and how fast it follows: for tdfs-master status and the
// metrics. Nothing here is on the replication path beyond one sample per
// clockEvery in Append.

// seqClock remembers when ops were appended and how many bytes of ops
// came before them, so that a slave's lag, known as a seq, can also be
// told in bytes and seconds. It keeps a bounded number of samples: one
// for the first op after each quiet spell of clockEvery, so an op's append
// time is known to within clockEvery; past clockSamples the history is
// thinned (every other sample kept), so old lags are coarser, never
// unknown.
type seqClock struct {
	samples []clockSample // ascending seq
	total   uint64        // bytes of all ops appended (FrameOp bodies)
	head    uint64
}

type clockSample struct {
	seq    uint64    // the op sampled
	before uint64    // bytes appended before it
	at     time.Time // when it was appended
}

const (
	clockEvery   = 10 * time.Millisecond
	clockSamples = 4096
)

// record notes op seq of size bytes, appended at now.
func (c *seqClock) record(seq uint64, size int64, now time.Time) {
	if n := len(c.samples); n == 0 || now.Sub(c.samples[n-1].at) >= clockEvery || seq <= c.samples[n-1].seq {
		if n > 0 && seq <= c.samples[n-1].seq {
			c.samples = c.samples[:0] // numbering restarted: the history means nothing
		}
		if len(c.samples) == clockSamples {
			k := 0
			for i := 0; i < len(c.samples); i += 2 {
				c.samples[k] = c.samples[i]
				k++
			}
			c.samples = c.samples[:k]
		}
		c.samples = append(c.samples, clockSample{seq: seq, before: c.total, at: now})
	}
	c.total += uint64(size)
	c.head = seq
}

// lag says how far a slave that applied every op up to seq is behind:
// the bytes of the ops after seq, and how long ago the first of them was
// appended (0, 0 when it has everything).
func (c *seqClock) lag(seq uint64, now time.Time) (bytes uint64, age time.Duration) {
	if seq >= c.head || len(c.samples) == 0 {
		return 0, 0
	}
	// The newest sample at or before op seq+1: that op was appended at
	// most clockEvery after it (or it would have been sampled).
	i := sort.Search(len(c.samples), func(i int) bool { return c.samples[i].seq > seq+1 }) - 1
	if i < 0 {
		i = 0 // older than the history kept: at least this old
	}
	s := c.samples[i]
	return c.total - s.before, max(0, now.Sub(s.at))
}

// bytesThrough is the bytes appended up to op seq, to within the ops
// appended in one clockEvery.
func (c *seqClock) bytesThrough(seq uint64) uint64 {
	b, _ := c.lag(seq, time.Time{})
	return c.total - b
}

// rateWindow measures a slave's throughput: bytes of ops applied per
// second over the last rateSpan, from samples taken as acks arrive.
type rateWindow struct {
	samples []rateSample // oldest first, at least rateGap apart
}

type rateSample struct {
	at    time.Time
	bytes uint64 // bytesThrough(applied)
}

const (
	rateSpan = 5 * time.Second
	rateGap  = 250 * time.Millisecond
)

// add records that the slave had applied bytes at now.
func (r *rateWindow) add(bytes uint64, now time.Time) {
	if n := len(r.samples); n > 0 && now.Sub(r.samples[n-1].at) < rateGap {
		r.samples[n-1].bytes = max(r.samples[n-1].bytes, bytes)
		return
	}
	r.samples = append(r.samples, rateSample{at: now, bytes: bytes})
	// Keep one sample older than the span, to measure across all of it.
	for len(r.samples) > 2 && now.Sub(r.samples[1].at) > rateSpan {
		r.samples = r.samples[1:]
	}
}

// rate is bytes per second over the last rateSpan (0 when idle).
func (r *rateWindow) rate(now time.Time) float64 {
	if len(r.samples) == 0 {
		return 0
	}
	last := r.samples[len(r.samples)-1]
	first := r.samples[0]
	if now.Sub(last.at) > rateSpan {
		return 0 // nothing applied lately
	}
	dt := now.Sub(first.at).Seconds()
	if dt <= 0 || last.bytes <= first.bytes {
		return 0
	}
	return float64(last.bytes-first.bytes) / dt
}

// reset forgets the samples (a new connection, a rebase).
func (r *rateWindow) reset() { r.samples = r.samples[:0] }

// OpCount is how many ops of one type were appended, and their bytes
// (FrameOp bodies, before compression).
type OpCount struct {
	Ops, Bytes uint64
}

// OpCounts returns the ops appended since the master started, by type
// ("write", "create", ...).
func (m *Master) OpCounts() map[string]OpCount {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]OpCount, len(m.opCounts))
	for t, c := range m.opCounts {
		out[t.String()] = c
	}
	return out
}

// countOpLocked counts op, of size bytes. m.mu is held.
func (m *Master) countOpLocked(t wire.OpType, size int64) {
	if m.opCounts == nil {
		m.opCounts = make(map[wire.OpType]OpCount)
	}
	c := m.opCounts[t]
	c.Ops++
	c.Bytes += uint64(size)
	m.opCounts[t] = c
}

// Recheck ends the connections of slaves whose certificate
// MasterConfig.CheckPeer refuses (revoked by a revocation list loaded
// since their handshake); they are redialed, and refused at the
// handshake. It returns how many it ended. A connection whose handshake
// is in flight is checked when it completes.
func (m *Master) Recheck() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, p := range m.peers {
		if p.conn == nil || p.endSession == nil {
			continue
		}
		if err := m.checkPeerLocked(p.conn); err != nil {
			p.log.Warn("closing the connection of a slave whose certificate is now refused", "err", err)
			p.endSession(err)
			n++
		}
	}
	return n
}

// checkPeerLocked runs MasterConfig.CheckPeer on the certificate the slave
// of conn presented. m.mu is held (CheckPeer must not call back).
func (m *Master) checkPeerLocked(conn *quic.Conn) error {
	if m.cfg.CheckPeer == nil {
		return nil
	}
	pc := conn.ConnectionState().TLS.PeerCertificates
	if len(pc) == 0 {
		return errors.New("the slave presented no certificate")
	}
	return m.cfg.CheckPeer(pc[0])
}
