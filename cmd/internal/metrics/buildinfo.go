package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tdfs/tdfs/cmd/internal/version"
)

// buildInfo is tdfs_build_info{version,goversion,commit} 1: which build of
// the daemon runs, for dashboards and for alerts on mixed versions.
func buildInfo() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "tdfs_build_info",
		Help:        "Always 1; the labels say which build of the daemon runs.",
		ConstLabels: version.Info(),
	}, func() float64 { return 1 })
}
