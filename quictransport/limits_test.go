package quictransport

import (
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

// TestServerBoundsConnectionsAwaitingHello: a holder of a master
// certificate cannot pin goroutines by opening connections that never say
// Hello: beyond maxAwaitingHello they are closed at once (CodeLimit), and
// a master that says Hello is served once the others go.
func TestServerBoundsConnectionsAwaitingHello(t *testing.T) {
	p := newPKI(t, "hello-slots")
	run := newRun(t)
	h := newStateHandler(SlaveState{Epoch: testEpoch, Run: run})
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, quic: fastQUIC()})
	addr := srv.Addr().String()
	var silent []*quic.Conn
	for range maxAwaitingHello {
		silent = append(silent, rawMaster(t, p, addr))
	}
	// The server accepts connections one at a time: wait until every
	// silent one holds its slot.
	eventually(t, 10*time.Second, "every slot taken", func() bool { return len(srv.helloSlots) == maxAwaitingHello })
	extra := rawMaster(t, p, addr)
	cause := closeCause(t, extra, 30*time.Second)
	if code, ok := appErrorCode(cause); !ok || code != wire.CodeLimit {
		t.Fatalf("connection closed by %v, want the slave's %v", cause, wire.CodeLimit)
	}
	for _, c := range silent {
		c.CloseWithError(0, "")
	}
	eventually(t, 10*time.Second, "slots released", func() bool { return len(srv.helloSlots) == 0 })
	good := rawMaster(t, p, addr)
	if _, _, err := tryHello(good, hello(run)); err != nil {
		t.Fatal(err)
	}
}
