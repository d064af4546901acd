// Package udprelay is a userspace UDP relay for tests: it forwards
// datagrams between clients and one target address with a configurable
// one-way delay, random loss, and partitions. It stands in for netem,
// which the test kernels lack.
//
// Each client address gets its own upstream socket, so the target sees one
// peer per client, as through a NAT. Datagrams keep their order within a
// direction (a FIFO per direction, each datagram released once its delay
// has passed); a direction whose queue is full drops, like a router.
//
// It is not a network simulator: no bandwidth limit, no reordering, no
// duplication, and the OOB optimisations of quic-go (GSO, ECN) do not cross
// it.
package udprelay

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// queueLen bounds the datagrams waiting in one direction of one flow. The
// queue is the delay line: it must hold a bandwidth-delay product, or the
// relay drops what a real path would carry. 32,768 datagrams of ~1,400
// bytes are 45 MB: 100 ms one way at 450 MB/s. (4,096 capped raw QUIC at
// 43 MB/s over a 100 ms round trip.)
const queueLen = 32768

// Relay forwards datagrams between its clients and a target.
type Relay struct {
	conn   *net.UDPConn // clients send here
	target *net.UDPAddr

	delay       atomic.Int64  // one-way, nanoseconds
	loss        atomic.Uint64 // math.Float64bits of the drop probability
	partitioned atomic.Bool

	forwarded, dropped atomic.Uint64
	// UDP payload bytes forwarded towards the target and back.
	bytesUp, bytesDown atomic.Uint64

	mu     sync.Mutex
	flows  map[string]*flow
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup
}

type flow struct {
	client   *net.UDPAddr
	up       *net.UDPConn // connected to the target
	toTarget chan packet
	toClient chan packet
}

type packet struct {
	due  time.Time
	data []byte
}

// New starts a relay on 127.0.0.1 (a free port) forwarding to target
// (host:port, UDP).
func New(target string) (*Relay, error) {
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, fmt.Errorf("relay target %q: %w", target, err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("relay listen: %w", err)
	}
	bigBuffers(conn)
	r := &Relay{conn: conn, target: taddr, flows: make(map[string]*flow), done: make(chan struct{})}
	r.wg.Go(r.readClients)
	return r, nil
}

// Addr is where clients should send (host:port).
func (r *Relay) Addr() string { return r.conn.LocalAddr().String() }

// SetDelay sets the one-way delay applied in each direction.
func (r *Relay) SetDelay(d time.Duration) { r.delay.Store(int64(d)) }

// SetLoss drops each datagram, in each direction, with probability p.
func (r *Relay) SetLoss(p float64) { r.loss.Store(math.Float64bits(p)) }

// SetPartition drops every datagram in both directions while on.
func (r *Relay) SetPartition(on bool) { r.partitioned.Store(on) }

// Stats returns how many datagrams were forwarded and dropped so far.
func (r *Relay) Stats() (forwarded, dropped uint64) { return r.forwarded.Load(), r.dropped.Load() }

// Bytes returns the UDP payload bytes forwarded so far towards the target
// (from the clients) and towards the clients, IP and UDP headers not
// counted.
func (r *Relay) Bytes() (toTarget, toClients uint64) { return r.bytesUp.Load(), r.bytesDown.Load() }

// Close stops the relay and closes its sockets.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.done)
	err := r.conn.Close()
	for _, f := range r.flows {
		f.up.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return err
}

// admit decides whether a datagram goes through, and when.
func (r *Relay) admit(b []byte) (packet, bool) {
	if r.partitioned.Load() {
		r.dropped.Add(1)
		return packet{}, false
	}
	if p := math.Float64frombits(r.loss.Load()); p > 0 && rand.Float64() < p {
		r.dropped.Add(1)
		return packet{}, false
	}
	return packet{due: time.Now().Add(time.Duration(r.delay.Load())), data: append([]byte(nil), b...)}, true
}

func enqueue(r *Relay, q chan packet, p packet) {
	select {
	case q <- p:
	default:
		r.dropped.Add(1) // queue full
	}
}

func (r *Relay) readClients() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			return // closed
		}
		f, err := r.flowFor(from)
		if err != nil {
			continue
		}
		if p, ok := r.admit(buf[:n]); ok {
			enqueue(r, f.toTarget, p)
		}
	}
}

func (r *Relay) flowFor(client *net.UDPAddr) (*flow, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("relay closed")
	}
	if f, ok := r.flows[client.String()]; ok {
		return f, nil
	}
	up, err := net.DialUDP("udp", nil, r.target)
	if err != nil {
		return nil, err
	}
	bigBuffers(up)
	f := &flow{client: client, up: up, toTarget: make(chan packet, queueLen), toClient: make(chan packet, queueLen)}
	r.flows[client.String()] = f
	r.wg.Go(func() {
		r.deliver(f.toTarget, &r.bytesUp, func(b []byte) error { _, err := f.up.Write(b); return err })
	})
	r.wg.Go(func() {
		r.deliver(f.toClient, &r.bytesDown, func(b []byte) error { _, err := r.conn.WriteToUDP(b, f.client); return err })
	})
	r.wg.Go(func() { r.readTarget(f) })
	return f, nil
}

func (r *Relay) readTarget(f *flow) {
	buf := make([]byte, 64<<10)
	for {
		n, err := f.up.Read(buf)
		if err != nil {
			select {
			case <-r.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ECONNREFUSED from an absent target: keep reading
		}
		if p, ok := r.admit(buf[:n]); ok {
			enqueue(r, f.toClient, p)
		}
	}
}

// slack is how early deliver may send a datagram: a timer wake-up per
// datagram costs more than the ~10 us between datagrams at 100 MB/s.
const slack = 250 * time.Microsecond

// deliver sends the datagrams of one direction in order, each once its
// delay has passed (up to slack early), and counts their bytes in sent.
func (r *Relay) deliver(q chan packet, sent *atomic.Uint64, send func([]byte) error) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		var p packet
		select {
		case p = <-q:
		case <-r.done:
			return
		}
		// A datagram due within slack goes now: with a delay, nearly
		// every datagram would otherwise park this goroutine on the timer,
		// and that, not the path, would bound the throughput.
		if wait := time.Until(p.due); wait > slack {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-r.done:
				return
			}
		}
		if r.partitioned.Load() {
			r.dropped.Add(1) // partitioned while in flight
			continue
		}
		// Counted before sending, so a receiver that got the datagram
		// sees it counted.
		r.forwarded.Add(1)
		sent.Add(uint64(len(p.data)))
		send(p.data)
	}
}

// bigBuffers gives a relay socket buffers large enough for QUIC's bursts:
// with the kernel's default (208 KiB) the relay itself would drop packets,
// and an early loss costs quic-go's NewReno many round trips. Best effort:
// the kernel caps it at net.core.[rw]mem_max.
func bigBuffers(c *net.UDPConn) {
	c.SetReadBuffer(16 << 20)
	c.SetWriteBuffer(16 << 20)
}
