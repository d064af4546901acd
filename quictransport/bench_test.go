package quictransport

import (
	"sync"
	"testing"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// BenchmarkAppendWhileAcking appends small writes from several goroutines
// (numbered one at a time, as mirrorfs's sequencer does) while a real
// in-process slave applies and acknowledges them, so that Append, the
// sender's nextAction and the ack reader's onAck all take Master.mu. Run
// it with -mutexprofile to see whether the FUSE path waits on acks:
//
//	go test -run '^$' -bench AppendWhileAcking -mutexprofile mutex.out ./quictransport
//	go tool pprof -top -lines mutex.out
func BenchmarkAppendWhileAcking(b *testing.B) {
	p := newPKI(b, "bench")
	h := newFakeHandler()
	srv := startServer(b, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	m := startMaster(b, MasterConfig{
		Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
		Run:   newRun(b), Mode: wire.ModeAsync, quic: fastQUIC(),
		Backlog: 1 << 30, // no op dropped: the slave must get them all
	})
	eventually(b, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })
	data := make([]byte, 512)
	var seqMu sync.Mutex // the mount numbers ops one at a time
	var seq uint64
	b.SetParallelism(4)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			seqMu.Lock()
			seq++
			m.Append(seq, &wire.Write{Handle: 7, Off: int64(seq) << 9, Data: data})
			seqMu.Unlock()
		}
	})
	b.StopTimer()
	eventually(b, 60*time.Second, "the slave applied every op", func() bool { return h.state().Applied == seq })
}

// BenchmarkSyncRoundTrip is a database's commit seen from the transport:
// a 4 KiB write and a Sync appended, then Wait until a real in-process
// slave (over QUIC on loopback) made them durable: the master's and the
// slave's share of an fsync's latency, without FUSE or a disk.
//
//	go test -run '^$' -bench SyncRoundTrip ./quictransport
func BenchmarkSyncRoundTrip(b *testing.B) {
	p := newPKI(b, "bench")
	h := newFakeHandler()
	srv := startServer(b, SlaveConfig{TLS: p.serverTLS(), Handler: h})
	m := startMaster(b, MasterConfig{
		Peers: []Peer{{Addr: srv.Addr().String(), TLS: p.clientTLS()}},
		Run:   newRun(b), Mode: wire.ModeFsync, quic: fastQUIC(),
	})
	eventually(b, 30*time.Second, "streaming", func() bool { return m.status(0).State == "streaming" })
	data := make([]byte, 4096)
	var seq uint64
	b.ResetTimer()
	for b.Loop() {
		seq++
		m.Append(seq, &wire.Write{Handle: 7, Off: int64(seq) << 12, Data: data})
		seq++
		m.Append(seq, &wire.Sync{})
		if err := m.Wait(seq); err != nil {
			b.Fatal(err)
		}
	}
}
