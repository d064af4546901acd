package main

import (
	"encoding/json"
	"fmt"
	"html"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// cell is the median over rounds of one configuration x workload.
type cell struct {
	result
	rounds int
	errs   []string
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// cells aggregates the results by configuration and workload, in run
// order.
func (b *bench) cells() (keys [][2]string, by map[[2]string]*cell) {
	by = map[[2]string]*cell{}
	groups := map[[2]string][]result{}
	for _, r := range b.results {
		k := [2]string{r.Config, r.Workload}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	for _, k := range keys {
		rs := groups[k]
		c := &cell{result: rs[0]}
		var ok []result
		for _, r := range rs {
			if r.Err != "" {
				c.errs = append(c.errs, r.Err)
				continue
			}
			if r.Verify != "" {
				c.errs = append(c.errs, "verify: "+r.Verify)
			}
			ok = append(ok, r)
		}
		c.rounds = len(ok)
		if len(ok) > 0 {
			f := func(get func(result) float64) float64 {
				var v []float64
				for _, r := range ok {
					v = append(v, get(r))
				}
				return median(v)
			}
			c.result = ok[0]
			c.MasterSec = f(func(r result) float64 { return r.MasterSec })
			c.ReplSec = f(func(r result) float64 { return r.ReplSec })
			c.WireBytes = f(func(r result) float64 { return r.WireBytes })
			c.FuseReqs = f(func(r result) float64 { return r.FuseReqs })
			c.ServerCPU = f(func(r result) float64 { return r.ServerCPU })
			c.SlaveCPU = f(func(r result) float64 { return r.SlaveCPU })
			c.ServerRSS = int64(f(func(r result) float64 { return float64(r.ServerRSS) }))
			c.SlaveRSS = int64(f(func(r result) float64 { return float64(r.SlaveRSS) }))
			c.Extra = map[string]float64{}
			for k := range ok[0].Extra {
				c.Extra[k] = f(func(r result) float64 { return r.Extra[k] })
			}
		}
		by[k] = c
	}
	return keys, by
}

func (b *bench) quicMedian(name string) float64 {
	var v []float64
	for _, q := range b.quics {
		if q.Name == name {
			v = append(v, q.MBps)
		}
	}
	return median(v)
}

func (b *bench) report() error {
	if err := os.MkdirAll(b.out, 0o755); err != nil {
		return err
	}
	keys, by := b.cells()
	var md strings.Builder
	mode := "full"
	if b.quick {
		mode = "quick (BENCH_QUICK=1: smaller workloads, fewer configurations)"
	}
	fmt.Fprintf(&md, "## tdfs-bench results, %s, %s\n\n", time.Now().UTC().Format("2006-01-02"), mode)
	configs := map[string]config{}
	for _, c := range b.configs() {
		configs[c.name] = c
	}
	fmt.Fprintf(&md, "Medians of the rounds. *master*: the workload's own time; *replicated*: from its start until every\n"+
		"slave applied all of it; *×loopback*: master time over the bare go-fuse loopback's; *wire*: QUIC bytes sent per\n"+
		"slave; *req/file*: FUSE requests per file; RSS is the peak during the workload, CPU the seconds it used.\n\n")
	for _, w := range everyWorkload() {
		var rows []string
		loop := by[[2]string{"loopback", w.name}]
		for _, k := range keys {
			if k[1] != w.name {
				continue
			}
			c := by[k]
			rows = append(rows, b.row(c, loop, configs))
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(&md, "### %s: %s\n\n", w.name, w.what)
		md.WriteString("| configuration | master s | ×loopback | replicated s | wire | req/file | master RSS | slave RSS | master CPU s | slave CPU s | notes |\n")
		md.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for _, r := range rows {
			md.WriteString(r + "\n")
		}
		md.WriteString("\n")
	}
	if len(b.quics) > 0 {
		md.WriteString("### Transport ceiling: raw quic-go, tdfs's TLS and QUIC settings, 1 MiB per stream, 8 streams per connection\n\n")
		md.WriteString("| path | connections | MB/s |\n|---|---:|---:|\n")
		seen := map[string]bool{}
		for _, q := range b.quics {
			if seen[q.Name] {
				continue
			}
			seen[q.Name] = true
			path := "loopback, direct"
			if q.RTT > 0 {
				path = fmt.Sprintf("relay, %v round trip", q.RTT.Round(time.Millisecond))
			}
			if q.Loss > 0 {
				path += fmt.Sprintf(", %.1f%% loss", q.Loss*100)
			}
			fmt.Fprintf(&md, "| %s | %d | %.1f |\n", path, q.Conns, b.quicMedian(q.Name))
		}
		md.WriteString("\n")
	}
	md.WriteString("### Targets\n\n")
	for _, t := range b.targets(by) {
		md.WriteString("- " + t + "\n")
	}
	md.WriteString("\n")
	md.WriteString("### Configurations\n\n")
	for _, c := range b.configs() {
		fmt.Fprintf(&md, "- **%s**: %s\n", c.name, c.note)
	}
	md.WriteString("- **rsync**: `rsync -aHX` of the finished tree to an rsync daemon on loopback (first copy)\n")
	md.WriteString("- **lsyncd**: lsyncd with `delay = 0` driving rsync to that daemon while tar runs; replicated = until the copy is identical\n\n")
	for _, n := range b.notes {
		md.WriteString("Note: " + n + "\n\n")
	}
	if err := os.WriteFile(filepath.Join(b.out, "results.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(saved{b.quick, b.results, b.quics, b.notes}, "", "  ")
	if err := os.WriteFile(filepath.Join(b.out, "results.json"), js, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.out, "chart.svg"), []byte(b.chart(by)), 0o644); err != nil {
		return err
	}
	fmt.Print(md.String())
	b.logf("wrote %s/results.md, results.json and chart.svg", b.out)
	return nil
}

// saved is results.json.
type saved struct {
	Quick   bool         `json:"quick,omitempty"`
	Results []result     `json:"results"`
	QUIC    []quicResult `json:"quic"`
	Notes   []string     `json:"notes"`
}

// rerender writes results.md and chart.svg again from a results.json, with
// this version's report (its targets, its chart).
func rerender(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("report: give one results.json")
	}
	return renderSaved(c.Args().First(), c.String("out"))
}

func renderSaved(file, out string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var sv saved
	if err := json.Unmarshal(data, &sv); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	b := &bench{quick: sv.Quick, out: out, sz: sizesFor(sv.Quick), results: sv.Results, quics: sv.QUIC, notes: sv.Notes}
	return b.report()
}

func (b *bench) row(c *cell, loop *cell, configs map[string]config) string {
	name := c.Config
	if c.rounds == 0 {
		return fmt.Sprintf("| %s | | | | | | | | | | failed: %s |", name, mdEscape(firstLine(c.errs[0])))
	}
	num := func(v float64, format string) string {
		if v <= 0 {
			return "–"
		}
		return fmt.Sprintf(format, v)
	}
	ratio := "–"
	if loop != nil && loop.rounds > 0 && loop.MasterSec > 0 && c.MasterSec > 0 {
		ratio = fmt.Sprintf("%.2f", c.MasterSec/loop.MasterSec)
	}
	wire := "–"
	if c.WireBytes >= 0 && c.ReplSec > 0 {
		wire = bytesStr(c.WireBytes)
	}
	req := "–"
	if c.FuseReqs > 0 && c.Files > 0 {
		req = fmt.Sprintf("%.1f", c.FuseReqs/float64(c.Files))
	}
	var notes []string
	for _, k := range slices.Sorted(maps.Keys(c.Extra)) {
		notes = append(notes, fmt.Sprintf("%s %.1f", k, c.Extra[k]))
	}
	for _, e := range c.errs {
		notes = append(notes, "**"+mdEscape(firstLine(e))+"**")
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |", name,
		num(c.MasterSec, "%.3f"), ratio, num(c.ReplSec, "%.3f"), wire, req,
		mib(c.ServerRSS), mib(c.SlaveRSS), num(c.ServerCPU, "%.2f"), num(c.SlaveCPU, "%.2f"), strings.Join(notes, "; "))
}

func mib(v int64) string {
	if v <= 0 {
		return "–"
	}
	return fmt.Sprintf("%d MiB", v>>20)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// targets states each performance target (docs/performance.md) with the
// figure measured.
func (b *bench) targets(by map[[2]string]*cell) []string {
	get := func(cfg, w string) *cell {
		if c := by[[2]string{cfg, w}]; c != nil && c.rounds > 0 {
			return c
		}
		return nil
	}
	verdict := func(ok bool) string {
		if ok {
			return "**met**"
		}
		return "**missed**"
	}
	var out []string
	loop := get("loopback", "untar")
	lsync := get("lsyncd", "untar")
	for _, name := range []string{"async", "tdfs"} {
		c := get(name, "untar")
		if c == nil || loop == nil {
			continue
		}
		ratio := c.MasterSec / loop.MasterSec
		lag := c.ReplSec - c.MasterSec
		out = append(out, fmt.Sprintf("untar, %s (--sync %s), master time ≤ 1.3× loopback: %.2f× %s; slaves identical ≤ 0.5 s after tar ends: %.2f s %s",
			name, configsSync(name), ratio, verdict(ratio <= 1.3), lag, verdict(lag <= 0.5)))
		if lsync != nil {
			out = append(out, fmt.Sprintf("untar, %s: ahead of lsyncd (identical %.2f s after tar ends): %s", name,
				lsync.ReplSec-lsync.MasterSec, verdict(lag < lsync.ReplSec-lsync.MasterSec)))
		}
		if c.FuseReqs > 0 && loop.FuseReqs > 0 {
			out = append(out, fmt.Sprintf("untar, %s: FUSE requests per file %.1f, bare loopback %.1f: %s", name,
				c.FuseReqs/float64(c.Files), loop.FuseReqs/float64(loop.Files), verdict(c.FuseReqs < loop.FuseReqs)))
		}
	}
	if c, q := get("tdfs", "seqwrite"), b.quicMedian("direct"); c != nil && q > 0 {
		rep := c.Extra["replicated_MBps"]
		out = append(out, fmt.Sprintf("seqwrite: replication %.0f MB/s, ≥ 0.8× the transport ceiling (%.0f MB/s): %.2f× %s",
			rep, q, rep/q, verdict(rep >= 0.8*q)))
		if l := get("loopback", "seqwrite"); l != nil {
			r := c.MasterSec / l.MasterSec
			out = append(out, fmt.Sprintf("seqwrite: master time ≤ 1.15× loopback: %.2f× %s", r, verdict(r <= 1.15)))
		}
	}
	for _, w := range []string{"seqwrite", "untar"} {
		base, far := get("tdfs", w), get("rtt100", w)
		if c := get("rtt0relay", w); c != nil {
			base = c
		}
		if base != nil && far != nil {
			r := far.ReplSec / base.ReplSec
			out = append(out, fmt.Sprintf("%s: replication time at 100 ms ≤ 1.3× at 0 ms: %.2f s vs %.2f s, %.2f× %s",
				w, far.ReplSec, base.ReplSec, r, verdict(r <= 1.3)))
		}
	}
	for _, w := range []string{"seqwrite", "untar"} {
		base, far := get("rtt0relay", w), get("rtt100-lanes4", w)
		if base != nil && far != nil {
			r := far.ReplSec / base.ReplSec
			out = append(out, fmt.Sprintf("%s with --lanes 4: replication time at 100 ms ≤ 1.3× at 0 ms: %.2f s vs %.2f s, %.2f× %s",
				w, far.ReplSec, base.ReplSec, r, verdict(r <= 1.3)))
		}
	}
	for _, w := range []string{"seqwrite", "untar"} {
		if c, l := get("noslave", w), get("loopback", w); c != nil && l != nil {
			out = append(out, fmt.Sprintf("%s, the mount's own cost (noslave: journal, no replication sharing the CPUs): %.2f× loopback",
				w, c.MasterSec/l.MasterSec))
		}
	}
	if c, q := get("wan-lanes4", "seqwrite"), b.quicMedian("wan-1conn"); c != nil && q > 0 {
		rep := c.Extra["replicated_MBps"]
		one := ""
		if l1 := get("wan-lanes1", "seqwrite"); l1 != nil {
			one = fmt.Sprintf(" (tdfs --lanes 1: %.2f MB/s)", l1.Extra["replicated_MBps"])
		}
		out = append(out, fmt.Sprintf("seqwrite at 40 ms and 0.1%% loss, --lanes 4: %.2f MB/s, ≥ 4× one raw QUIC connection (%.2f MB/s)%s: %.1f× %s",
			rep, q, one, rep/q, verdict(rep >= 4*q)))
	}
	if c, l := get("tdfs", "dbsync"), get("loopback", "dbsync"); c != nil && l != nil {
		d := (c.Extra["us_per_op"] - l.Extra["us_per_op"]) / 1000
		out = append(out, fmt.Sprintf("dbsync, fsync mode: each fdatasync costs ≤ RTT + 2 ms over the loopback: +%.2f ms per op at 0 ms %s", d, verdict(d <= 2)))
	}
	if c := get("rtt100", "dbsync"); c != nil {
		if l := get("loopback", "dbsync"); l != nil {
			d := (c.Extra["us_per_op"] - l.Extra["us_per_op"]) / 1000
			relay := ""
			if r := get("rtt0relay", "dbsync"); r != nil {
				relay = fmt.Sprintf("; the relay's own cost at 0 ms: +%.1f ms", (r.Extra["us_per_op"]-l.Extra["us_per_op"])/1000)
			}
			out = append(out, fmt.Sprintf("dbsync at 100 ms: +%.1f ms per op over the loopback (≤ 102 ms) %s%s", d, verdict(d <= 102), relay))
		}
	}
	if c := get("tdfs", "rename"); c != nil && c.WireBytes >= 0 {
		out = append(out, fmt.Sprintf("rename of %d files: %s on the wire, < 64 KiB %s", b.sz.renameN, bytesStr(c.WireBytes), verdict(c.WireBytes < 64<<10)))
	}
	if c := get("tdfs", "copy"); c != nil && c.WireBytes >= 0 {
		out = append(out, fmt.Sprintf("copy of %s: %s on the wire, < 1 MiB %s", bytesStr(float64(b.sz.copyBytes)), bytesStr(c.WireBytes), verdict(c.WireBytes < 1<<20)))
	}
	if c, r := get("tdfs", "untar"), get("rsync", "untar"); c != nil && r != nil {
		out = append(out, fmt.Sprintf("untar from tar's start to identical slaves (%.2f s) faster than rsync's first copy of the finished tree (%.2f s): %s",
			c.ReplSec, r.ReplSec, verdict(c.ReplSec < r.ReplSec)))
	}
	out = append(out, b.appTargets(get, verdict)...)
	out = append(out, b.cpuTargets(get, verdict)...)
	var peakM, peakS int64
	for k, c := range by {
		if configsKind(k[0]) == "tdfs" {
			peakM, peakS = max(peakM, c.ServerRSS), max(peakS, c.SlaveRSS)
		}
	}
	if peakM > 0 {
		out = append(out, fmt.Sprintf("peak RSS over all tdfs cells: master %s, slave %s (bounds: see README, Performance)", mib(peakM), mib(peakS)))
	}
	return out
}

func configsSync(name string) string {
	if name == "async" {
		return "async"
	}
	return "fsync"
}

func configsKind(name string) string {
	switch name {
	case "plain", "loopback", "rsync", "lsyncd":
		return name
	}
	return "tdfs"
}

// chart draws, per workload, each configuration's time relative to the
// bare loopback's master time: a dark bar for the master's time and a
// light one for until every slave has it.
func (b *bench) chart(by map[[2]string]*cell) string {
	show := []string{"plain", "loopback", "tdfs", "async", "z1", "rtt100", "rsync", "lsyncd"}
	const (
		labelW = 90
		barW   = 420
		rowH   = 14
		capX   = 10.0 // ratios beyond are drawn at the cap, labelled
	)
	var body strings.Builder
	y := 40
	for _, w := range everyWorkload() {
		loop := by[[2]string{"loopback", w.name}]
		if loop == nil || loop.rounds == 0 || loop.MasterSec <= 0 {
			continue
		}
		base := loop.MasterSec
		fmt.Fprintf(&body, `<text x="4" y="%d" font-weight="bold">%s (loopback %.2f s)</text>`+"\n", y, html.EscapeString(w.name), base)
		y += 6
		for _, name := range show {
			c := by[[2]string{name, w.name}]
			if c == nil || c.rounds == 0 {
				continue
			}
			y += rowH
			fmt.Fprintf(&body, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelW-4, y, name)
			x := func(v float64) int { return int(min(v/base, capX) / capX * barW) }
			if c.ReplSec > 0 {
				fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%d" height="%d" fill="#9ecae1"/>`+"\n", labelW, y-rowH+3, max(1, x(c.ReplSec)), rowH-4)
			}
			if c.MasterSec > 0 && name != "rsync" {
				fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%d" height="%d" fill="#08519c"/>`+"\n", labelW, y-rowH+3, max(1, x(c.MasterSec)), rowH-4)
			}
			label := fmt.Sprintf("%.2f×", c.MasterSec/base)
			end := x(c.MasterSec)
			if c.ReplSec > 0 {
				label += fmt.Sprintf(" / %.2f×", c.ReplSec/base)
				end = max(end, x(c.ReplSec))
			}
			if name == "rsync" {
				label = fmt.Sprintf("%.2f× (first copy)", c.ReplSec/base)
			}
			fmt.Fprintf(&body, `<text x="%d" y="%d">%s</text>`+"\n", labelW+end+4, y-2, label)
		}
		y += 18
	}
	width := labelW + barW + 170
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", width, y+10)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&s, `<text x="4" y="16" font-size="13" font-weight="bold">tdfs-bench: time relative to a bare go-fuse loopback (dark: master, light: until every slave has it; cut at %.0f×)</text>`+"\n", capX)
	for i := 0; i <= int(capX); i += 2 {
		xx := labelW + int(float64(i)/capX*barW)
		fmt.Fprintf(&s, `<line x1="%d" y1="24" x2="%d" y2="%d" stroke="#ddd"/><text x="%d" y="%d" fill="#888" text-anchor="middle">%d×</text>`+"\n", xx, xx, y, xx, y+8, i)
	}
	s.WriteString(body.String())
	s.WriteString("</svg>\n")
	return s.String()
}
