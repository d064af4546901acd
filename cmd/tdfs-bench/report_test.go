package main

import (
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestReport renders results of two rounds: medians per cell, failed
// rounds left out of them, targets judged from the figures, and a chart
// that is well-formed SVG.
func TestReport(t *testing.T) {
	b := &bench{out: t.TempDir(), sz: sizes{renameN: 10000, copyBytes: 256 << 20}}
	add := func(cfg, w string, round int, master, repl, wire float64, extra map[string]float64) {
		b.results = append(b.results, result{Config: cfg, Workload: w, Round: round, MasterSec: master,
			ReplSec: repl, WireBytes: wire, FuseReqs: -1, Files: 100, Extra: extra})
	}
	add("loopback", "untar", 1, 1.0, 0, -1, nil)
	add("loopback", "untar", 2, 3.0, 0, -1, nil)
	add("tdfs", "untar", 1, 1.2, 1.3, 1e6, nil)
	add("tdfs", "untar", 2, 1.4, 1.5, 1e6, nil)
	add("tdfs", "rename", 1, 0.001, 0.002, 900, nil)
	add("tdfs", "copy", 1, 0.1, 0.2, 2<<20, nil)
	b.results = append(b.results, result{Config: "tdfs", Workload: "copy", Round: 2, Err: "boom"})

	_, by := b.cells()
	c := by[[2]string{"tdfs", "untar"}]
	if c.rounds != 2 || math.Abs(c.MasterSec-1.3) > 1e-9 || math.Abs(c.ReplSec-1.4) > 1e-9 {
		t.Errorf("tdfs untar cell: rounds %d master %v repl %v, want 2, 1.3, 1.4", c.rounds, c.MasterSec, c.ReplSec)
	}
	if c := by[[2]string{"tdfs", "copy"}]; c.rounds != 1 || len(c.errs) != 1 {
		t.Errorf("tdfs copy cell: rounds %d errs %v, want the failed round left out", c.rounds, c.errs)
	}

	targets := strings.Join(b.targets(by), "\n")
	for _, want := range []string{
		"untar, tdfs (--sync fsync), master time ≤ 1.3× loopback: 0.65× **met**",
		"slaves identical ≤ 0.5 s after tar ends: 0.10 s **met**",
		"rename of 10000 files: 900 B on the wire, < 64 KiB **met**",
		"copy of 256.0 MiB: 2.0 MiB on the wire, < 1 MiB **missed**",
	} {
		if !strings.Contains(targets, want) {
			t.Errorf("targets lack %q:\n%s", want, targets)
		}
	}

	if err := b.report(); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(b.out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "| tdfs | 1.300 | 0.65 | 1.400 |") {
		t.Errorf("results.md lacks the tdfs untar row:\n%s", md)
	}
	svg, err := os.Open(filepath.Join(b.out, "chart.svg"))
	if err != nil {
		t.Fatal(err)
	}
	defer svg.Close()
	d := xml.NewDecoder(svg)
	rects := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("chart.svg is not well-formed: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	if rects < 3 { // background, loopback's bar, tdfs's two bars
		t.Errorf("chart.svg has %d rects, want the bars", rects)
	}
}

// tdfs-bench report renders the same results.md from results.json.
func TestRenderSaved(t *testing.T) {
	b := &bench{out: t.TempDir(), sz: sizesFor(false), notes: []string{"a note"}}
	b.results = []result{
		{Config: "loopback", Workload: "untar", Round: 1, MasterSec: 2, FuseReqs: 1200, Files: 100, WireBytes: -1},
		{Config: "tdfs", Workload: "untar", Round: 1, MasterSec: 3, ReplSec: 3.1, FuseReqs: 1100, Files: 100, WireBytes: 1e6},
	}
	b.quics = []quicResult{{Name: "direct", Conns: 1, MBps: 200, Round: 1}}
	if err := b.report(); err != nil {
		t.Fatal(err)
	}
	again := t.TempDir()
	if err := renderSaved(filepath.Join(b.out, "results.json"), again); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"results.md", "results.json", "chart.svg"} {
		x, err1 := os.ReadFile(filepath.Join(b.out, f))
		y, err2 := os.ReadFile(filepath.Join(again, f))
		if err1 != nil || err2 != nil || string(x) != string(y) {
			t.Errorf("%s differs after a round trip through results.json (%v, %v)", f, err1, err2)
		}
	}
}
