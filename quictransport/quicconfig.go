package quictransport

import (
	"io"
	"time"

	"github.com/quic-go/quic-go"
)

// QUICConfig returns a copy of the QUIC configuration both sides use, for
// tools that measure the transport's ceiling with the same settings
// (tdfs-bench).
func QUICConfig() *quic.Config { return quicConfig() }

// ctrlStream is what the control-stream code of both sides (the master's
// hello, sender and ack reader; the slave's session) needs of the stream:
// a *quic.Stream, or one end of a net.Pipe in tests of the protocol
// without QUIC.
type ctrlStream interface {
	io.ReadWriteCloser
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

var _ ctrlStream = (*quic.Stream)(nil)
