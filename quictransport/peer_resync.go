package quictransport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// A pass is one resync (or verify) of one slave, run by the Tree while
// the slave's connection lasts. Its items are positioned by Emit and sent
// by the peer's sender in order with ops; the slave's replies are routed
// to it by the ack reader.

// maxReplyBytes bounds the replies a slave may have queued for a pass
// that has not read them yet.
const maxReplyBytes = 256 << 20

type pass struct {
	n    uint64
	opts wire.PassOptions
	// rebaseItem is the number (1-based, on this connection) of the
	// rebasing ResyncBegin: acks of items before it still describe the
	// slave's old op stream.
	rebaseItem uint64

	mu      sync.Mutex
	queue   []queuedReply
	bytes   int64
	signal  chan struct{}
	replies chan wire.ResyncReply
}

type queuedReply struct {
	r    wire.ResyncReply
	size int64
}

func newPass(n uint64, o wire.PassOptions) *pass {
	return &pass{n: n, opts: o, signal: make(chan struct{}, 1), replies: make(chan wire.ResyncReply)}
}

// push queues a reply without blocking (the ack reader must keep reading
// acks, which free the window the pass may be waiting for).
func (ps *pass) push(r wire.ResyncReply, size int) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.bytes+int64(size) > maxReplyBytes {
		return fmt.Errorf("%w: the slave sent more than %d bytes of resync replies ahead of the pass", wire.ErrLimit, maxReplyBytes)
	}
	ps.queue = append(ps.queue, queuedReply{r, int64(size)})
	ps.bytes += int64(size)
	select {
	case ps.signal <- struct{}{}:
	default:
	}
	return nil
}

// forward hands queued replies to the Tree until ctx ends.
func (ps *pass) forward(ctx context.Context) {
	for {
		ps.mu.Lock()
		var r wire.ResyncReply
		if len(ps.queue) > 0 {
			r = ps.queue[0].r
			ps.bytes -= ps.queue[0].size
			ps.queue[0] = queuedReply{}
			ps.queue = ps.queue[1:]
		}
		ps.mu.Unlock()
		if r == nil {
			select {
			case <-ps.signal:
				continue
			case <-ctx.Done():
				return
			}
		}
		select {
		case ps.replies <- r:
		case <-ctx.Done():
			return
		}
	}
}

func replyPass(r wire.ResyncReply) uint64 {
	switch r := r.(type) {
	case *wire.ResyncHashes:
		return r.Pass
	case *wire.ResyncDirDone:
		return r.Pass
	}
	return 0
}

// onReply routes a reply to the running pass; replies of a pass that
// ended are dropped.
func (p *peer) onReply(r wire.ResyncReply, size int) error {
	p.m.mu.Lock()
	ps := p.pass
	p.m.mu.Unlock()
	if ps == nil || replyPass(r) != ps.n {
		return nil
	}
	return ps.push(r, size)
}

// verifyReq is a Verify (or repair) asked of one peer.
type verifyReq struct {
	repair bool
	done   chan struct{}
	res    wire.PassResult
	err    error
}

// runPasses runs the passes the slave needs while its connection lasts:
// a rebase pass when its tree is of unknown state, verify passes asked
// for, and the check owed after a crash of the master.
//
// A rebase or check pass that fails ends the connection (end): the slave
// reconnects and the pass starts over. A failed verify only fails the
// verify.
func (p *peer) runPasses(ctx context.Context, end context.CancelCauseFunc) {
	m := p.m
	defer p.dropVerifies()
	for {
		m.mu.Lock()
		ps, vr := p.nextPassLocked()
		ch, tree := m.changed, m.tree
		m.mu.Unlock()
		if ps == nil {
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return
			}
		}
		res, err := p.runPass(ctx, tree, ps)
		p.passEnded(ps.opts, err)
		if vr != nil {
			vr.res, vr.err = res, err
			close(vr.done)
		}
		if err != nil && !ps.opts.Verify {
			if ctx.Err() == nil {
				p.log.Warn("resync pass failed: reconnecting to start over", "pass", ps.opts.Pass, "err", err)
			}
			end(err)
			return
		}
	}
}

// nextPassLocked starts the pass the slave needs next, if any: a rebase,
// then the verifies asked for (vr, the first of them), then the check
// owed. There is none without a tree or a streaming slave.
func (p *peer) nextPassLocked() (*pass, *verifyReq) {
	if p.m.tree == nil || p.state != stateStreaming {
		return nil, nil
	}
	var o wire.PassOptions
	var vr *verifyReq
	switch {
	case p.rebase:
		o.Rebase, o.Full = true, p.fullNext
		p.fullNext = false
	case len(p.verifies) > 0:
		vr = p.verifies[0]
		p.verifies = p.verifies[1:]
		o.Verify, o.Full = !vr.repair, vr.repair
	case p.check:
	default:
		return nil, nil
	}
	p.passes++
	o.Pass = p.passes
	o.Progress = p.progressLogger(o)
	p.pass = newPass(o.Pass, o)
	return p.pass, vr
}

// passEnded books the end of the pass run with o, which returned err.
func (p *peer) passEnded(o wire.PassOptions, err error) {
	m := p.m
	m.mu.Lock()
	p.pass = nil
	if err == nil {
		if o.Rebase {
			p.rebase = false
		}
		p.recheckDegradedLocked()
		if !o.Verify {
			p.check, p.checked = false, true
		}
		p.passErr = ""
	} else {
		p.passErr = err.Error()
	}
	m.broadcastLocked()
	m.mu.Unlock()
	p.poke()
}

// dropVerifies fails the verifies asked for that no pass started: the
// connection ended.
func (p *peer) dropVerifies() {
	p.m.mu.Lock()
	vs := p.verifies
	p.verifies = nil
	p.m.mu.Unlock()
	for _, v := range vs {
		v.err = errors.New("the slave's connection ended before the verify started")
		close(v.done)
	}
}

// passKind names a pass in the log and in progress reports.
func passKind(o wire.PassOptions) string {
	switch {
	case o.Verify:
		return "verify"
	case o.Rebase:
		return "resync"
	case o.Full:
		return "repair"
	}
	return "check"
}

func (p *peer) runPass(ctx context.Context, tree Tree, ps *pass) (wire.PassResult, error) {
	o := ps.opts
	kind := passKind(o)
	start := time.Now()
	p.log.Info(kind+" pass starting", "pass", o.Pass)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go ps.forward(fctx)
	res, err := tree.RunPass(ctx, o, &passSink{p: p, ps: ps}, ps.replies)
	if err != nil {
		err = fmt.Errorf("%s pass %d: %w", kind, o.Pass, err)
	}
	if f := p.m.cfg.OnProgress; f != nil {
		f(PassReport{Slave: p.addr, Pass: o.Pass, Kind: kind, Started: start, Done: true, Err: err,
			PassProgress: res.PassProgress})
	}
	if err != nil {
		return res, err
	}
	p.log.Info(kind+" pass done", "pass", o.Pass, "entries", res.Entries, "files_sent", res.FilesSent,
		"bytes_sent", res.BytesSent, "bytes_compared", res.BytesCompared, "differences", res.Differences,
		"took", time.Since(start).Round(time.Millisecond))
	return res, nil
}

// progressLogger passes a pass's progress on to OnProgress, and logs it
// every few seconds once the pass has run for a few: files, bytes, rate,
// ETA.
func (p *peer) progressLogger(o wire.PassOptions) func(wire.PassProgress) {
	start := time.Now()
	kind := passKind(o)
	var last time.Time
	return func(pp wire.PassProgress) {
		if f := p.m.cfg.OnProgress; f != nil {
			f(PassReport{Slave: p.addr, Pass: o.Pass, Kind: kind, Started: start, PassProgress: pp})
		}
		now := time.Now()
		if now.Sub(start) < 3*time.Second || now.Sub(last) < 5*time.Second {
			return
		}
		last = now
		secs := now.Sub(start).Seconds()
		rate := float64(pp.BytesSent) / secs
		eta := "unknown"
		if pp.TotalEntries > pp.Entries && pp.Entries > 0 {
			left := time.Duration(float64(now.Sub(start)) * float64(pp.TotalEntries-pp.Entries) / float64(pp.Entries))
			eta = left.Round(time.Second).String()
		}
		p.log.Info(kind+" progress", "pass", o.Pass, "entries", pp.Entries, "of", pp.TotalEntries,
			"files_sent", pp.FilesSent, "bytes_sent", pp.BytesSent, "rate_MBps", fmt.Sprintf("%.1f", rate/1e6), "eta", eta)
	}
}

// passSink is a pass's wire.PassSink: the peer's item queue.
type passSink struct {
	p  *peer
	ps *pass
}

var _ wire.PassSink = (*passSink)(nil)

func (s *passSink) Reserve(ctx context.Context, n int64) error {
	m := s.p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	for s.p.itemsReserved > 0 && s.p.itemsReserved+n > m.cfg.ResyncWindow {
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			m.mu.Lock()
			return context.Cause(ctx)
		}
		m.mu.Lock()
	}
	if s.p.pass != s.ps {
		return errors.New("the pass was abandoned")
	}
	s.p.itemsReserved += n
	return nil
}

func (s *passSink) Release(n int64) {
	m := s.p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.p.pass != s.ps {
		return
	}
	s.p.itemsReserved -= n
	m.broadcastLocked()
}

func (s *passSink) Emit(it wire.ResyncItem, n int64) {
	p, m := s.p, s.p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.pass != s.ps {
		return // the connection ended; the pass is being abandoned
	}
	after := m.bl.head
	if b, ok := it.(*wire.ResyncBegin); ok {
		c := *b
		c.Run, c.Full = m.cfg.Run, s.ps.opts.Full
		it = &c
	}
	if b, ok := it.(*wire.ResyncBegin); ok && b.Rebase {
		// The slave's op stream restarts after this item: it drops what
		// it buffered, and applies ops after+1... in order.
		s.ps.rebaseItem = p.itemsSent + uint64(len(p.items)) + 1
		p.next, p.sent = after+1, after
		p.applied, p.durable = after, after
		p.inflight, p.inflightBytes = nil, 0
		p.jr.pending = nil
		p.waitBegin = false
		// A stall was on an op of the old stream.
		p.stall, p.cannotApply = "", false
	}
	p.items = append(p.items, queuedItem{after: after, body: wire.AppendResyncItem(nil, after, it), size: n})
	p.poke()
}

// ErrNoSuchSlave: Resync was given a name no configured slave has.
var ErrNoSuchSlave = errors.New("no such slave")

// StartResync makes the slave named name (the name its certificate must carry,
// the common name of the certificate it presented, or the address it is
// dialed at) be compared with the backing dir and repaired by a
// rebase pass, whatever its state: at once if it is connected (after the
// pass running now, if any), else when it connects. full: compare every
// file's contents, not only those whose size or mtime differ. It returns
// the slave's address.
func (m *Master) StartResync(name string, full bool) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var names []string
	for _, p := range m.peers {
		if !p.named(name) {
			if p.tls != nil && p.tls.ServerName != "" {
				names = append(names, p.tls.ServerName)
			} else {
				names = append(names, p.addr)
			}
			continue
		}
		if m.tree == nil {
			return p.addr, errors.New("the master has no tree to compare")
		}
		if p.state == stateNeedsResync || p.state == stateFenced {
			return p.addr, fmt.Errorf("slave is %s", p.stateName())
		}
		p.rebase = true
		p.fullNext = p.fullNext || full
		p.log.Warn("resync requested: the slave will be compared with this master's tree and repaired", "full", full)
		m.broadcastLocked()
		p.poke()
		return p.addr, nil
	}
	return "", fmt.Errorf("%w %q (configured: %s)", ErrNoSuchSlave, name, strings.Join(names, ", "))
}

// VerifyResult is one slave's answer to Verify.
type VerifyResult struct {
	Addr   string
	Result wire.PassResult
	Err    error
}

// Verify compares the backing dir with every connected slave (repair:
// and fixes what differs), while ops keep flowing. It returns one result
// per configured slave; a slave that is not streaming, or that cannot
// apply ops (its disk full), gets an error at once. A slave being
// resynchronised is verified once its resync pass has ended.
func (m *Master) Verify(ctx context.Context, repair bool) []VerifyResult {
	m.mu.Lock()
	reqs := make([]*verifyReq, len(m.peers))
	out := make([]VerifyResult, len(m.peers))
	for i, p := range m.peers {
		out[i].Addr = p.addr
		switch {
		case m.tree == nil:
			out[i].Err = errors.New("the master has no tree to compare")
		case p.state != stateStreaming:
			out[i].Err = fmt.Errorf("slave is %s: not connected", p.stateName())
		case p.stall != "":
			// Its pass would wait behind the op it cannot apply.
			out[i].Err = fmt.Errorf("slave cannot apply ops (%s): verify it once it can", p.stall)
		default:
			reqs[i] = &verifyReq{repair: repair, done: make(chan struct{})}
			p.verifies = append(p.verifies, reqs[i])
		}
	}
	m.broadcastLocked()
	m.mu.Unlock()
	for i, r := range reqs {
		if r == nil {
			continue
		}
		select {
		case <-r.done:
			out[i].Result, out[i].Err = r.res, r.err
		case <-ctx.Done():
			out[i].Err = context.Cause(ctx)
		}
	}
	return out
}
