package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/urfave/cli/v2"

	"github.com/tdfs/tdfs/certs"
	"github.com/tdfs/tdfs/internal/udprelay"
	"github.com/tdfs/tdfs/quictransport"
)

// The transport ceiling: raw quic-go between two processes, with the TLS
// (mutual, the same certificates) and QUIC settings of tdfs, data sent as
// tdfs sends large writes (1 MiB per unidirectional stream, 8 streams in
// flight per connection).

const (
	quicChunk   = 1 << 20
	quicStreams = 8
)

// quicSink is the receiving process: it counts the bytes of every data
// stream; a bidirectional stream asks "tell me when you have N bytes".
func quicSink(c *cli.Context) error {
	pki := c.Args().First()
	cert, err := certs.LoadKeyPair(filepath.Join(pki, "slave1.crt"), filepath.Join(pki, "slave1.key"))
	if err != nil {
		return err
	}
	pool, err := certs.LoadPool(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return err
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(certs.ServerConfig(cert, pool, nil), quictransport.QUICConfig())
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "quic-sink listening addr=%s\n", udp.LocalAddr())
	for {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			return err
		}
		go sinkConn(conn)
	}
}

func sinkConn(conn *quic.Conn) {
	var got atomic.Int64
	go func() {
		for {
			s, err := conn.AcceptUniStream(context.Background())
			if err != nil {
				return
			}
			go func() {
				n, _ := io.Copy(io.Discard, s)
				got.Add(n)
			}()
		}
	}()
	for {
		s, err := conn.AcceptStream(context.Background())
		if err != nil {
			return
		}
		var want [8]byte
		if _, err := io.ReadFull(s, want[:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint64(want[:]))
		waitFor(60*time.Second, func() (bool, error) { return got.Load() >= n, nil })
		binary.BigEndian.PutUint64(want[:], uint64(got.Load()))
		s.Write(want[:])
		s.Close()
	}
}

var sinkRE = regexp.MustCompile(`addr=(\S+)`)

// quicCeiling measures what conns connections carry together through a
// relay with the given round-trip time and loss (none at 0, 0: direct),
// sending for about d.
func (b *bench) quicCeiling(ctx context.Context, conns int, rtt time.Duration, loss float64, d time.Duration) (float64, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	sink, err := startProc("quic-sink", filepath.Join(b.root, "quic-sink.log"), self, "quic-sink", b.pki)
	if err != nil {
		return 0, err
	}
	defer sink.stop(10 * time.Second)
	m, err := sink.waitLog(sinkRE, 30*time.Second)
	if err != nil {
		return 0, err
	}
	addr := m[1]
	if rtt > 0 || loss > 0 {
		r, err := udprelay.New(addr)
		if err != nil {
			return 0, err
		}
		defer r.Close()
		r.SetDelay(rtt / 2)
		r.SetLoss(loss)
		addr = r.Addr()
	}
	cert, err := certs.LoadKeyPair(filepath.Join(b.pki, "master.crt"), filepath.Join(b.pki, "master.key"))
	if err != nil {
		return 0, err
	}
	pool, err := certs.LoadPool(filepath.Join(b.pki, "ca.crt"))
	if err != nil {
		return 0, err
	}
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return 0, err
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64
		first error
	)
	start := time.Now()
	for range conns {
		wg.Go(func() {
			n, err := b.quicSend(ctx, raddr, cert, pool, start.Add(d))
			mu.Lock()
			defer mu.Unlock()
			total += n
			if err != nil && first == nil {
				first = err
			}
		})
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

// quicSend sends until deadline on one connection, then waits until the
// sink has it all, and returns the bytes sent.
func (b *bench) quicSend(ctx context.Context, raddr *net.UDPAddr, cert tls.Certificate, pool *x509.CertPool, deadline time.Time) (int64, error) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	conn, err := tr.Dial(ctx, raddr, certs.ClientConfig(cert, pool, "127.0.0.1"), quictransport.QUICConfig())
	if err != nil {
		return 0, err
	}
	defer conn.CloseWithError(0, "")
	var sent atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, quicStreams)
	for i := range quicStreams {
		wg.Go(func() {
			for j := 0; time.Now().Before(deadline); j++ {
				s, err := conn.OpenUniStreamSync(ctx)
				if err != nil {
					errs <- err
					return
				}
				off := (i*7919 + j*4099) % (len(b.random) - quicChunk)
				if _, err := s.Write(b.random[off : off+quicChunk]); err != nil {
					errs <- err
					return
				}
				s.Close()
				sent.Add(quicChunk)
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return 0, err
	default:
	}
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return 0, err
	}
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(sent.Load()))
	if _, err := s.Write(buf[:]); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(s, buf[:]); err != nil {
		return 0, fmt.Errorf("quic sink: %w", err)
	}
	return int64(binary.BigEndian.Uint64(buf[:])), nil
}
