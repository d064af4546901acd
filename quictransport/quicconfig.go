package quictransport

import "github.com/quic-go/quic-go"

// QUICConfig returns a copy of the QUIC configuration both sides use, for
// tools that measure the transport's ceiling with the same settings
// (tdfs-bench).
func QUICConfig() *quic.Config { return quicConfig() }
