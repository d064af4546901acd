package quictransport

import (
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/tdfs/tdfs/wire"
)

func TestListenAddrDefaultPort(t *testing.T) {
	for in, want := range map[string]string{
		"":               ":7430",
		"0.0.0.0":        "0.0.0.0:7430",
		"slave1:":        "slave1:7430",
		"127.0.0.1:9000": "127.0.0.1:9000",
		"::1":            "[::1]:7430",
		"[::1]":          "[::1]:7430",
		"[::1]:8000":     "[::1]:8000",
	} {
		if got := listenAddr(in); got != want {
			t.Errorf("listenAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMasterConfigDefaultsAndErrors(t *testing.T) {
	c, err := MasterConfig{Peers: []Peer{{Addr: "a:1", TLS: &tls.Config{}}}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.SyncTimeout != 10*time.Second || c.Backlog != 64<<20 || c.DataThreshold != 64<<10 || c.DataStreams != 8 || c.Logger == nil || c.quic == nil {
		t.Fatalf("defaults not applied: %+v", c)
	}
	for name, bad := range map[string]MasterConfig{
		"no address": {Peers: []Peer{{TLS: &tls.Config{}}}},
		"no TLS":     {Peers: []Peer{{Addr: "a:1"}}},
		"bad mode":   {Mode: wire.SyncMode(9)},
		"negative":   {Backlog: -1},
	} {
		if _, err := NewMaster(bad); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: NewMaster = %v, want ErrConfig", name, err)
		}
	}
}

func TestServerConfigDefaultsAndErrors(t *testing.T) {
	c, err := SlaveConfig{TLS: &tls.Config{}, Handler: newFakeHandler()}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":7430" || c.MaxPending != 256<<20 || c.SyncInterval != time.Second || c.Logger == nil || c.quic == nil {
		t.Fatalf("defaults not applied: %+v", c)
	}
	for name, bad := range map[string]SlaveConfig{
		"no TLS":        {Handler: newFakeHandler()},
		"no handler":    {TLS: &tls.Config{}},
		"tiny pending":  {TLS: &tls.Config{}, Handler: newFakeHandler(), MaxPending: 1000},
		"negative sync": {TLS: &tls.Config{}, Handler: newFakeHandler(), SyncInterval: -1},
	} {
		if _, err := NewSlave(bad); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: NewSlave = %v, want ErrConfig", name, err)
		}
	}
}

// The QUIC settings the design relies on (docs/design.md, Implementation
// traps): no 0-RTT, keep-alives well within the idle timeout, windows and
// stream limits that leave room for the data streams.
func TestQUICConfig(t *testing.T) {
	c := quicConfig()
	if c.Allow0RTT || c.KeepAlivePeriod == 0 || c.KeepAlivePeriod >= c.MaxIdleTimeout/2 {
		t.Fatalf("keep-alive/0-RTT settings: %+v", c)
	}
	if c.MaxConnectionReceiveWindow < c.MaxStreamReceiveWindow || c.MaxIncomingUniStreams < DefaultDataStreams+8 {
		t.Fatalf("windows/streams: %+v", c)
	}
}
