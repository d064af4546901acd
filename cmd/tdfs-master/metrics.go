package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tdfs/tdfs/mirrorfs"
	"github.com/tdfs/tdfs/quictransport"
)

// The master's Prometheus metrics (--metrics-addr). Everything but the
// wait histogram is read from the transport's status when scraped.

var peerStates = []string{"connecting", "streaming", "catching-up", "degraded", "refused", "resyncing", "checking",
	"verifying", "fenced", "needs-resync", "stopped"}

type masterCollector struct {
	m   *quictransport.Master
	hub *progressHub

	opsTotal, opBytesTotal                    *prometheus.Desc
	head, journalBytes                        *prometheus.Desc
	state, applied, durable                   *prometheus.Desc
	lagOps, lagBytes, lagSeconds, applyRate   *prometheus.Desc
	rtt, packetsSent, packetsLost             *prometheus.Desc
	passEntries, passTotal, passBytes, passOn *prometheus.Desc
	fuseRequests                              *prometheus.Desc
}

func newMasterCollector(m *quictransport.Master, hub *progressHub) *masterCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tdfs_master_"+name, help, labels, nil)
	}
	return &masterCollector{
		m: m, hub: hub,
		opsTotal:     d("ops_total", "Operations numbered and replicated, by type.", "type"),
		opBytesTotal: d("op_bytes_total", "Bytes of operations (encoded, before compression), by type.", "type"),
		head:         d("head_seq", "Sequence number of the newest operation."),
		journalBytes: d("journal_bytes", "Size of the on-disk operation journal."),
		state:        d("slave_state", "1 for the slave's current state.", "slave", "state"),
		applied:      d("slave_applied_seq", "Highest sequence the slave applied.", "slave"),
		durable:      d("slave_durable_seq", "Highest sequence the slave made durable.", "slave"),
		lagOps:       d("slave_lag_ops", "Operations numbered that the slave has not applied.", "slave"),
		lagBytes:     d("slave_lag_bytes", "Bytes of the operations the slave has not applied.", "slave"),
		lagSeconds:   d("slave_lag_seconds", "Age of the oldest operation the slave has not applied.", "slave"),
		applyRate:    d("slave_apply_bytes_per_second", "Bytes of operations the slave applied per second, last seconds.", "slave"),
		rtt:          d("slave_rtt_seconds", "Smoothed QUIC round-trip time to the slave.", "slave"),
		packetsSent:  d("slave_packets_sent_total", "QUIC packets sent to the slave on the current connection.", "slave"),
		packetsLost:  d("slave_packets_lost_total", "QUIC packets declared lost on the current connection.", "slave"),
		passOn:       d("resync_running", "1 while a resync, check, verify or repair pass runs for the slave.", "slave", "kind"),
		passEntries:  d("resync_entries", "Entries the running pass has listed.", "slave"),
		passTotal:    d("resync_entries_estimate", "Entries the running pass expects to list (0 if unknown).", "slave"),
		passBytes:    d("resync_sent_bytes", "Bytes of contents the running pass has sent.", "slave"),
		fuseRequests: d("fuse_requests_total", "FUSE requests the mount received from the kernel, by opcode.", "op"),
	}
}

func (c *masterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.opsTotal, c.opBytesTotal, c.head, c.journalBytes, c.state, c.applied,
		c.durable, c.lagOps, c.lagBytes, c.lagSeconds, c.applyRate, c.rtt, c.packetsSent, c.packetsLost,
		c.passOn, c.passEntries, c.passTotal, c.passBytes, c.fuseRequests} {
		ch <- d
	}
}

func (c *masterCollector) Collect(ch chan<- prometheus.Metric) {
	gauge, counter := prometheus.GaugeValue, prometheus.CounterValue
	for t, n := range c.m.OpCounts() {
		ch <- prometheus.MustNewConstMetric(c.opsTotal, counter, float64(n.Ops), t)
		ch <- prometheus.MustNewConstMetric(c.opBytesTotal, counter, float64(n.Bytes), t)
	}
	ch <- prometheus.MustNewConstMetric(c.journalBytes, gauge, float64(c.m.JournalBytes()))
	// The collector is registered before the mount exists, so it reads
	// the process-wide counts; the master has one mount.
	for op, n := range mirrorfs.ProcessRequests() {
		ch <- prometheus.MustNewConstMetric(c.fuseRequests, counter, float64(n), op)
	}
	var head uint64
	for _, p := range c.m.Status() {
		head = max(head, p.Head)
		s := p.Addr
		for _, st := range peerStates {
			v := 0.0
			if st == p.State {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.state, gauge, v, s, st)
		}
		ch <- prometheus.MustNewConstMetric(c.applied, gauge, float64(p.Applied), s)
		ch <- prometheus.MustNewConstMetric(c.durable, gauge, float64(p.Durable), s)
		ch <- prometheus.MustNewConstMetric(c.lagOps, gauge, float64(p.LagOps), s)
		ch <- prometheus.MustNewConstMetric(c.lagBytes, gauge, float64(p.LagBytes), s)
		ch <- prometheus.MustNewConstMetric(c.lagSeconds, gauge, p.LagSeconds, s)
		ch <- prometheus.MustNewConstMetric(c.applyRate, gauge, p.Rate, s)
		ch <- prometheus.MustNewConstMetric(c.rtt, gauge, p.RTT.Seconds(), s)
		ch <- prometheus.MustNewConstMetric(c.packetsSent, counter, float64(p.PacketsSent), s)
		ch <- prometheus.MustNewConstMetric(c.packetsLost, counter, float64(p.PacketsLost), s)
	}
	ch <- prometheus.MustNewConstMetric(c.head, gauge, float64(head))
	for _, l := range c.hub.running() {
		ch <- prometheus.MustNewConstMetric(c.passOn, gauge, 1, l.Slave, l.Kind)
		ch <- prometheus.MustNewConstMetric(c.passEntries, gauge, float64(l.Entries), l.Slave)
		ch <- prometheus.MustNewConstMetric(c.passTotal, gauge, float64(l.TotalEntries), l.Slave)
		ch <- prometheus.MustNewConstMetric(c.passBytes, gauge, float64(l.BytesSent), l.Slave)
	}
}

// newWaitHistogram is the fsync wait histogram: how long fsync (or, in
// sync mode, every op) waited for the slaves.
func newWaitHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tdfs_master_sync_wait_seconds",
		Help:    "How long an fsync (sync mode: every operation) waited for the slaves to make it durable.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14), // 100us .. ~15s (the default --sync-timeout is 10s)
	})
}
