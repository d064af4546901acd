package quictransport

import (
	"context"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// Tree is the master's backing dir as a resync pass sees it (mirrorfs's
// Server is one): a pass compares the tree with one slave, sends it
// positioned items (wire/resync.go) through sink, and reads the slave's
// replies from replies.
type Tree interface {
	RunPass(ctx context.Context, o wire.PassOptions, sink wire.PassSink, replies <-chan wire.ResyncReply) (wire.PassResult, error)
}

// PassReport is a pass's progress as MasterConfig.OnProgress receives it.
type PassReport struct {
	Slave   string // the slave's address, as configured
	Pass    uint64
	Kind    string // "resync", "check", "verify" or "repair"
	Started time.Time
	// Done: the pass ended, and this is its last report (Err says
	// whether it failed).
	Done bool
	Err  error
	wire.PassProgress
}
