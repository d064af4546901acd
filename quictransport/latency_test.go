package quictransport

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tdfs/tdfs/internal/udprelay"
	"github.com/tdfs/tdfs/wire"
)

// latencyWorkload is a fixed op stream: small ops (namespace ops, setattrs,
// small writes on the control stream) with large writes of 256 KiB..1 MiB
// (data streams) spread evenly among them, about bigBytes in all.
func latencyWorkload(small int, bigBytes int) (ops []wire.Op, total int64, nbig int) {
	g := newOpGen(77)
	var sizes []int
	for sum := 0; sum < bigBytes; {
		n := 256<<10 + g.r.IntN(768<<10+1)
		sizes = append(sizes, n)
		sum += n
	}
	nbig = len(sizes)
	for i := range small {
		_, op := g.next(0, 0) // no large writes from opGen
		ops = append(ops, op)
		// large write j goes after small op (j+1)*small/(nbig+1)
		for len(sizes) > 0 && i+1 == (nbig-len(sizes)+1)*small/(nbig+1) {
			mt := wire.Time{Sec: int64(len(ops)), Nsec: 1}
			ops = append(ops, &wire.Write{Handle: 9, Off: int64(len(ops)) << 20, Data: g.data(sizes[0]), Mtime: mt})
			sizes = sizes[1:]
		}
	}
	for _, op := range ops {
		total += int64(len(wire.AppendOp(nil, 1, op)))
	}
	return ops, total, nbig
}

type latencyResult struct {
	elapsed            time.Duration
	waits              int
	forwarded, dropped uint64 // by the relay, while measuring
	kernelDrops        string // UDP receive-buffer drops, while measuring
}

// replicateThrough replicates ops to a fresh slave through a relay with
// the given one-way delay and returns the time from the first Append until
// the handler applied the last op (async) or the last Wait returned
// (fsync, which then Waits after every waitEvery ops and at the end).
func replicateThrough(t *testing.T, ops []wire.Op, oneWay time.Duration, mode wire.SyncMode, waitEvery int) latencyResult {
	t.Helper()
	p := newPKI(t, "latency")
	h := newFakeHandler()
	srv := startServer(t, SlaveConfig{TLS: p.serverTLS(), Handler: h, SyncInterval: time.Hour})
	r, err := udprelay.New(srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// Runs after the master stopped (cleanups run last first): stop the
	// slave while the relay still carries the master's close, or the
	// slave's session waits closeGrace for it.
	t.Cleanup(func() {
		srv.stop(t)
		r.Close()
	})
	r.SetDelay(oneWay)
	run := newRun(t)
	m := startMaster(t, MasterConfig{
		Peers: []Peer{{Addr: r.Addr(), TLS: p.clientTLS()}},
		Run:   run, Mode: mode, SyncTimeout: 2 * time.Minute,
	})
	// The handshake's round trips are not what is measured.
	eventually(t, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })
	fwd0, drop0 := r.Stats()
	k0, kok := kernelUDPDrops()

	want := map[uint64][]byte{}
	var seq uint64
	add := func(op wire.Op) {
		seq++
		want[seq] = wire.AppendOp(nil, seq, op)
		m.Append(seq, op)
	}
	res := latencyResult{}
	wait := func() {
		add(&wire.Sync{})
		m.Wait(seq)
		res.waits++
		// A degraded slave would let Wait return early and fake the timing.
		if _, durable, _ := h.snapshot(); durable < seq {
			t.Fatalf("Wait(%d) returned with the slave durable at %d (status %+v)", seq, durable, m.status(0))
		}
	}

	start := time.Now()
	for i, op := range ops {
		add(op)
		if mode != wire.ModeAsync && (i+1)%waitEvery == 0 {
			wait()
		}
	}
	if mode != wire.ModeAsync && len(ops)%waitEvery != 0 {
		wait()
	}
	waitApplied(t, h, seq, time.Minute)
	res.elapsed = time.Since(start)

	fwd1, drop1 := r.Stats()
	res.forwarded, res.dropped = fwd1-fwd0, drop1-drop0
	res.kernelDrops = "kernel UDP receive-buffer drops unknown"
	if k1, ok := kernelUDPDrops(); ok && kok {
		res.kernelDrops = fmt.Sprintf("%d kernel UDP receive-buffer drops system-wide", k1-k0)
	}
	checkRecords(t, h, want, seq)
	if st := m.status(0); st.State != "streaming" {
		t.Fatalf("slave %s at the end, want streaming", st.State)
	}
	return res
}

// Replicating a workload must cost about bytes/bandwidth plus a few round
// trips, never one round trip per op (docs/design.md, Performance model): the
// master pipelines ops, batches small ones on the control stream and sends
// large writes on parallel data streams. The bounds are structural: a design
// paying a round trip per op or per batch would exceed them by orders of
// magnitude, a slow or loaded machine does not (it slows both runs alike).
//
// What can exceed them without any such design flaw is packet loss early in
// the 100 ms run: quic-go's congestion control is NewReno, which after a
// loss grows its window by one datagram per round trip, so the rest of the
// transfer runs at cwnd/RTT. The relay's sockets keep the kernel's default
// receive buffer and drop bursts on a busy machine (-race). A run over the
// bound is therefore measured again, at most twice, with the losses logged;
// a design that pays round trips per op fails every attempt.
func TestLatencyDoesNotBoundThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test: skipped under -short")
	}
	const (
		oneWay    = 50 * time.Millisecond
		rtt       = 2 * oneWay
		small     = 3000
		waitEvery = 100
		attempts  = 3
	)
	ops, bytes, nbig := latencyWorkload(small, 16<<20)
	t.Logf("workload: %d ops (%d small, %d writes of 256 KiB..1 MiB), %.1f MiB encoded",
		len(ops), small, nbig, float64(bytes)/(1<<20))

	run := func(t *testing.T, name string, oneWay time.Duration, mode wire.SyncMode) latencyResult {
		var res latencyResult
		// A subtest of its own, so its server, master and relay are gone
		// before the next run starts.
		if !t.Run(name, func(t *testing.T) { res = replicateThrough(t, ops, oneWay, mode, waitEvery) }) {
			t.FailNow()
		}
		t.Logf("%v, RTT %v: %v (%.1f MiB/s; %d datagrams through the relay, %d dropped by it, %s)",
			mode, 2*oneWay, res.elapsed.Round(time.Millisecond), float64(bytes)/(1<<20)/res.elapsed.Seconds(),
			res.forwarded, res.dropped, res.kernelDrops)
		return res
	}

	// check measures the RTT 0 run once and the RTT 100 ms run until it
	// spends fewer than limit(result) round trips, at most attempts times.
	check := func(t *testing.T, mode wire.SyncMode, limit func(latencyResult) float64, what string) {
		r0 := run(t, "rtt0", 0, mode)
		var rts, lim float64
		for attempt := 1; attempt <= attempts; attempt++ {
			r100 := run(t, fmt.Sprintf("rtt%dms", rtt.Milliseconds()), oneWay, mode)
			rts, lim = float64(r100.elapsed-r0.elapsed)/float64(rtt), limit(r100)
			t.Logf("%v: ratio t100/t0 = %.2f; round trips spent = (t100 - t0) / %v = %.1f for %d ops (bound %.0f)",
				mode, float64(r100.elapsed)/float64(r0.elapsed), rtt, rts, len(ops), lim)
			if r100.waits > 0 {
				t.Logf("%v: %d Waits, %.2f round trips per Wait", mode, r100.waits, rts/float64(r100.waits))
			}
			if rts < lim {
				return
			}
			t.Logf("attempt %d of %d over the bound (see the datagram and drop counts above): measuring again", attempt, attempts)
		}
		t.Errorf("%d ops spent %.1f round trips of %v in each of %d attempts, want fewer than %.0f: %s",
			len(ops), rts, rtt, attempts, lim, what)
	}

	t.Run("async", func(t *testing.T) {
		// One round trip per op would be len(ops) (3000+) round trips; one per
		// 64 KiB control batch or per data stream slot still hundreds. Slow
		// start from quic-go's initial window to ~18 MiB takes ~9.
		check(t, wire.ModeAsync, func(latencyResult) float64 { return 60 },
			"latency bounds throughput")
	})

	t.Run("fsync", func(t *testing.T) {
		// Each Wait needs the Sync op to reach the slave and its ack to come
		// back: one round trip, plus the data sent since the last Wait. One
		// round trip per op would be len(ops).
		check(t, wire.ModeFsync, func(r latencyResult) float64 { return float64(4*r.waits + 20) },
			"more than a few round trips per Wait")
	})
}

// kernelUDPDrops reads the kernel's count of UDP datagrams dropped for a
// full socket receive buffer (Linux, system-wide; ok false elsewhere).
func kernelUDPDrops() (n uint64, ok bool) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0, false
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "Udp: ") || !strings.HasPrefix(lines[i+1], "Udp: ") {
			continue
		}
		names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for j, name := range names {
			if name == "RcvbufErrors" && j < len(vals) {
				v, err := strconv.ParseUint(vals[j], 10, 64)
				return v, err == nil
			}
		}
	}
	return 0, false
}
