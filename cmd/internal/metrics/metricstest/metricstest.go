// Package metricstest checks, for the daemons' tests, that the alerting
// rules (contrib/prometheus/alerts.yml) and the dashboard
// (contrib/grafana/tdfs.json) name only metrics the daemons export.
package metricstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"
)

// Ref is a metric name a contrib file uses, and where.
type Ref struct {
	Metric string
	Where  string // file: alert or panel
}

// Rules is the shape of a Prometheus rules file, for a strict decode.
type Rules struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// Root is the repository's root: the directory above the test's that
// holds go.mod.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = up
	}
}

// AlertsFile and DashboardFile are the contrib files, relative to Root.
const (
	AlertsFile    = "contrib/prometheus/alerts.yml"
	DashboardFile = "contrib/grafana/tdfs.json"
)

// LoadRules decodes the alerting rules strictly (an unknown key fails).
func LoadRules(t testing.TB) Rules {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(Root(t), AlertsFile))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var r Rules
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("%s: %v", AlertsFile, err)
	}
	return r
}

// Referenced returns every metric the alerting rules and the dashboard
// use, with where.
func Referenced(t testing.TB) []Ref {
	t.Helper()
	var out []Ref
	for _, g := range LoadRules(t).Groups {
		for _, r := range g.Rules {
			for _, m := range Identifiers(r.Expr) {
				out = append(out, Ref{m, AlertsFile + ": " + r.Alert + r.Record})
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(Root(t), DashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", DashboardFile, err)
	}
	walk(dash, DashboardFile, "", func(where, key, expr string) {
		if key == "query" {
			// A template variable: label_values(EXPR, LABEL) or
			// label_values(LABEL), query_result(EXPR).
			if m := regexp.MustCompile(`^\s*(?:label_values\((.*),\s*[a-zA-Z_]\w*\s*\)|label_values\(\s*[a-zA-Z_]\w*\s*\)|query_result\((.*)\))\s*$`).
				FindStringSubmatch(expr); m != nil {
				expr = m[1] + " " + m[2]
			} else if expr == "prometheus" { // a datasource variable's type
				return
			}
		}
		for _, m := range Identifiers(expr) {
			out = append(out, Ref{m, where})
		}
	})
	return out
}

// walk calls f with every "expr" of the dashboard and every "query" of its
// template variables (a string, or an object's "query").
func walk(v any, where, key string, f func(where, key, expr string)) {
	switch v := v.(type) {
	case map[string]any:
		if t, ok := v["title"].(string); ok {
			where = DashboardFile + ": " + t
		} else if n, ok := v["name"].(string); ok {
			where = DashboardFile + ": $" + n
		}
		for k, e := range v {
			switch {
			case k == "expr":
				if s, ok := e.(string); ok {
					f(where, k, s)
				}
			case k == "query" && key == "list":
				switch q := e.(type) {
				case string:
					f(where, k, q)
				case map[string]any:
					if s, ok := q["query"].(string); ok {
						f(where, k, s)
					}
				}
			default:
				walk(e, where, k, f)
			}
		}
	case []any:
		for _, e := range v {
			walk(e, where, key, f)
		}
	}
}

// promqlWords are PromQL's keywords and aggregation operators: words that
// are not metric names wherever they stand.
var promqlWords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true, "inf": true, "nan": true, "start": true, "end": true,
}

// Identifiers returns the metric names a PromQL expression (as Grafana
// writes them too: $variables) selects: its identifiers that are not
// functions, keywords, label names (in braces, by (...) and the like),
// strings, numbers or durations.
func Identifiers(expr string) []string {
	var out []string
	s := expr
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			i = skipString(s, i)
		case c == '{':
			i = skipTo(s, i, '}')
		case c == '[':
			i = skipTo(s, i, ']')
		case c == '$':
			i++
			if i < len(s) && s[i] == '{' {
				i = skipTo(s, i, '}')
			}
			for i < len(s) && isIdent(s[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			word := s[i:j]
			k := j
			for k < len(s) && (s[k] == ' ' || s[k] == '\t' || s[k] == '\n') {
				k++
			}
			i = j
			switch lw := strings.ToLower(word); {
			case lw == "by" || lw == "without" || lw == "on" || lw == "ignoring" || lw == "group_left" || lw == "group_right":
				if k < len(s) && s[k] == '(' {
					i = skipTo(s, k, ')') // label names
				}
			case promqlWords[lw]:
			case k < len(s) && s[k] == '(': // a function
			default:
				out = append(out, word)
			}
		default:
			i++
		}
	}
	return out
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isIdent(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }

// skipString returns the index after the string that starts at i.
func skipString(s string, i int) int {
	q := s[i]
	for i++; i < len(s); i++ {
		switch {
		case s[i] == '\\' && q != '`':
			i++
		case s[i] == q:
			return i + 1
		}
	}
	return i
}

// skipTo returns the index after the close that ends what opens at i,
// skipping strings.
func skipTo(s string, i int, close byte) int {
	for i++; i < len(s); {
		switch s[i] {
		case '"', '\'', '`':
			i = skipString(s, i)
		case close:
			return i + 1
		default:
			i++
		}
	}
	return i
}

// Described returns the names of the metrics collectors describe (a
// histogram's or summary's with their _bucket, _sum and _count series).
func Described(cs ...prometheus.Collector) map[string]bool {
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	out := map[string]bool{}
	for _, c := range cs {
		ch := make(chan *prometheus.Desc, 64)
		go func() {
			c.Describe(ch)
			close(ch)
		}()
		_, hist := c.(prometheus.Histogram)
		_, summ := c.(prometheus.Summary)
		for d := range ch {
			m := fq.FindStringSubmatch(d.String())
			if m == nil {
				panic(fmt.Sprintf("no fqName in %s", d))
			}
			add(out, m[1], hist, summ)
		}
	}
	return out
}

// Gathered returns the names of the metrics reg serves now.
func Gathered(t testing.TB, reg prometheus.Gatherer) map[string]bool {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range fams {
		add(out, f.GetName(), f.GetType() == dto.MetricType_HISTOGRAM, f.GetType() == dto.MetricType_SUMMARY)
	}
	return out
}

func add(names map[string]bool, n string, hist, summ bool) {
	names[n] = true
	if hist || summ {
		names[n+"_sum"], names[n+"_count"] = true, true
	}
	if hist {
		names[n+"_bucket"] = true
	}
}

// CheckPrefix fails the test for every metric with prefix that the contrib
// files use and names lacks; it returns how many such uses there are.
func CheckPrefix(t testing.TB, prefix string, names map[string]bool) int {
	t.Helper()
	n := 0
	for _, r := range Referenced(t) {
		if !strings.HasPrefix(r.Metric, prefix) {
			continue
		}
		n++
		if !names[r.Metric] {
			t.Errorf("%s: %s is not a metric the daemon exports", r.Where, r.Metric)
		}
	}
	return n
}
