package quictransport

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

func TestCodeOf(t *testing.T) {
	for err, want := range map[error]wire.ErrorCode{
		fmt.Errorf("x: %w", wire.ErrLimit):     wire.CodeLimit,
		fmt.Errorf("x: %w", ErrFenced):         wire.CodeFenced,
		&resyncError{"slave x needs resync"}:   wire.CodeNeedsResync,
		fmt.Errorf("x: %w", ErrApply):          wire.CodeApply,
		fmt.Errorf("x: %w", ErrProtocol):       wire.CodeProtocol,
		fmt.Errorf("x: %w", wire.ErrMalformed): wire.CodeProtocol,
		errors.New("connection lost"):          wire.CodeShutdown,
	} {
		if got := codeOf(err); got != want {
			t.Errorf("codeOf(%v) = %v, want %v", err, got, want)
		}
	}
	if !errors.Is(&resyncError{"m"}, wire.ErrNeedsResync) {
		t.Error("resyncError is not wire.ErrNeedsResync")
	}
}

func TestExplain(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&quic.TransportError{Remote: true, ErrorCode: 0x12a, ErrorMessage: "tls: bad certificate"}, "the slave refused our certificate"},
		{&quic.TransportError{Remote: true, ErrorCode: 0x174}, "ours is missing or from another CA"},
		{&quic.ApplicationError{Remote: true, ErrorCode: quic.ApplicationErrorCode(wire.CodeLimit), ErrorMessage: "too much"}, "the slave closed the connection (limit exceeded): too much"},
		{fmt.Errorf("dial: %w", &quic.HandshakeTimeoutError{}), "no answer from the slave"},
		{&quic.IdleTimeoutError{}, "the slave went silent"},
		{&quic.ApplicationError{Remote: true, ErrorCode: quic.ApplicationErrorCode(wire.CodeFenced), ErrorMessage: "epoch"}, "the slave closed the connection (fenced): epoch"},
		{errors.New("plain"), "plain"},
	} {
		if got := explain(tc.err); !strings.Contains(got, tc.want) {
			t.Errorf("explain(%v) = %q, want it to contain %q", tc.err, got, tc.want)
		}
	}
	if explain(nil) != "" {
		t.Error("explain(nil) not empty")
	}
}

func TestPeerError(t *testing.T) {
	e := wire.Error{Code: wire.CodeApply, Seq: 7, Msg: "disk full"}
	err := peerError(e.Append(nil))
	var pe *PeerError
	if !errors.As(err, &pe) || pe.Code != wire.CodeApply || pe.Seq != 7 || !strings.Contains(err.Error(), "apply failed at seq 7: disk full") {
		t.Fatalf("peerError = %v", err)
	}
	if err := peerError([]byte{0xff}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("garbage error frame: %v", err)
	}
}

// A master and a slave of different protocol versions (the ALPN carries
// it) refuse each other at the handshake, and the master says why.
func TestProtocolVersionMismatch(t *testing.T) {
	p := newPKI(t, "version")
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: newFakeHandler()})
	old := p.clientTLS()
	old.NextProtos = []string{"tdfs/1"}
	m := startMaster(t, MasterConfig{Peers: []Peer{{Addr: srv.Addr().String(), TLS: old}}, Epoch: testEpoch, Run: newRun(t)})
	eventually(t, 30*time.Second, "the version named", func() bool {
		return strings.Contains(m.status(0).LastError, "another tdfs protocol version")
	})
}
