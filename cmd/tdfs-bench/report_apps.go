package main

import "fmt"

// appTargets states the targets of the databases and the reads, each
// against the loopback (or the plain dir) measured in the same run.
func (b *bench) appTargets(get func(cfg, w string) *cell, verdict func(bool) string) []string {
	var out []string
	for _, db := range []struct{ w, key, unit string }{
		{"sqlite-wal", "commits_per_s", "commits/s"},
		{"sqlite-rollback", "commits_per_s", "commits/s"},
		{"pgbench", "tps", "TPS"},
	} {
		l := get("loopback", db.w)
		if l == nil || l.Extra[db.key] <= 0 {
			continue
		}
		base := l.Extra[db.key]
		for _, t := range []struct {
			cfg  string
			want float64
		}{{"async", 0.9}, {"tdfs", 0.5}, {"async-pin", 0.9}, {"tdfs-pin", 0.5}} {
			c := get(t.cfg, db.w)
			if c == nil {
				continue
			}
			lb := base
			if p := get("loopback-pin", db.w); p != nil && t.cfg != "async" && t.cfg != "tdfs" && p.Extra[db.key] > 0 {
				lb = p.Extra[db.key] // pinned against pinned
			}
			r := c.Extra[db.key] / lb
			out = append(out, fmt.Sprintf("%s, %s: %.0f %s, ≥ %.1f× the loopback's %.0f: %.2f× %s",
				db.w, t.cfg, c.Extra[db.key], db.unit, t.want, lb, r, verdict(r >= t.want)))
		}
	}
	if l, c := get("loopback", "read"), get("tdfs", "read"); l != nil && c != nil && l.Extra["read_MBps"] > 0 {
		r := c.Extra["read_MBps"] / l.Extra["read_MBps"]
		out = append(out, fmt.Sprintf("read through the master's mount: %.0f MB/s, ≥ the loopback's %.0f MB/s: %.2f× %s",
			c.Extra["read_MBps"], l.Extra["read_MBps"], r, verdict(r >= 1)))
		if p := get("plain", "read"); p != nil && p.Extra["reread_MBps"] > 0 {
			out = append(out, fmt.Sprintf("read again (cached): %.0f MB/s, plain dir %.0f MB/s, loopback %.0f MB/s",
				c.Extra["reread_MBps"], p.Extra["reread_MBps"], l.Extra["reread_MBps"]))
		}
	}
	if p, c := get("plain", "grep"), get("tdfs", "grep"); p != nil && c != nil && p.Extra["regrep_s"] > 0 {
		r := c.Extra["regrep_s"] / p.Extra["regrep_s"]
		lg := ""
		if l := get("loopback", "grep"); l != nil {
			lg = fmt.Sprintf("; loopback %.2f s, first pass %.2f s against the loopback's %.2f s", l.Extra["regrep_s"], c.Extra["grep_s"], l.Extra["grep_s"])
		}
		out = append(out, fmt.Sprintf("grep -r again (cached): %.2f s, ≤ 2× the plain dir's %.2f s: %.2f× %s%s",
			c.Extra["regrep_s"], p.Extra["regrep_s"], r, verdict(r <= 2), lg))
	}
	return out
}

// cpuTargets states the CPU a write costs: per GiB (seqwrite) and per
// 1,000 files (untar), for the loopback, the master without and with its
// slave, and the slave. The master's replication CPU is its CPU less the
// noslave configuration's (the mount and journal alone).
func (b *bench) cpuTargets(get func(cfg, w string) *cell, verdict func(bool) string) []string {
	var out []string
	for _, suffix := range []string{"", "-pin"} {
		for _, w := range []struct {
			name, unit string
			per        func(c *cell) float64 // units in the workload
		}{
			{"seqwrite", "GiB", func(*cell) float64 { return float64(b.sz.seqBytes) / (1 << 30) }},
			{"untar", "1,000 files", func(c *cell) float64 { return float64(c.Files) / 1000 }},
		} {
			l, n, c := get("loopback"+suffix, w.name), get("noslave"+suffix, w.name), get("tdfs"+suffix, w.name)
			if l == nil || c == nil || l.ServerCPU <= 0 {
				continue
			}
			u := w.per(c)
			line := fmt.Sprintf("%s%s, CPU-seconds per %s: loopback %.2f, master %.2f, slave %.2f", w.name, suffix, w.unit,
				l.ServerCPU/u, c.ServerCPU/u, c.SlaveCPU/u)
			if n != nil {
				repl := c.ServerCPU - n.ServerCPU
				line += fmt.Sprintf(", master without its slave %.2f; replication on the master %.2f, ≤ 0.3× the loopback's: %.2f× %s",
					n.ServerCPU/u, repl/u, repl/l.ServerCPU, verdict(repl <= 0.3*l.ServerCPU))
			}
			line += fmt.Sprintf("; slave ≤ the loopback's: %.2f× %s", c.SlaveCPU/l.ServerCPU, verdict(c.SlaveCPU <= l.ServerCPU))
			out = append(out, line)
		}
	}
	return out
}
