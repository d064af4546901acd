package main

import (
	"context"

	"github.com/tdfs/tdfs/mirrorfs"
	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/wire"
)

// tree adapts the mount to quictransport.Tree: the two packages may not
// import each other, so their resync types are converted here.
type tree struct{ srv *mirrorfs.Server }

var _ quictransport.Tree = tree{}

func (t tree) Resync(ctx context.Context, o quictransport.PassOptions, sink quictransport.ResyncSink,
	replies <-chan wire.ResyncReply) (quictransport.PassResult, error) {
	mo := mirrorfs.ResyncOptions{Pass: o.Pass, Rebase: o.Rebase, Verify: o.Verify, Full: o.Full}
	if o.Progress != nil {
		mo.Progress = func(p mirrorfs.ResyncProgress) { o.Progress(passProgress(p)) }
	}
	res, err := t.srv.Resync(ctx, mo, sink, replies)
	return quictransport.PassResult{PassProgress: passProgress(res.ResyncProgress), Diffs: res.Diffs,
		Truncated: res.Truncated}, err
}

func passProgress(p mirrorfs.ResyncProgress) quictransport.PassProgress {
	return quictransport.PassProgress{Dirs: p.Dirs, Files: p.Files, Entries: p.Entries, TotalEntries: p.TotalEntries,
		FilesSent: p.FilesSent, BytesSent: p.BytesSent, BytesCompared: p.BytesCompared, Differences: p.Differences}
}
