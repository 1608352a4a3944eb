package vxlan

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are per-Datapath collectors, registered by the caller on its own
// registry (no global registration, so tests can build many datapaths).
type metrics struct {
	syncs       *prometheus.CounterVec
	changes     *prometheus.CounterVec
	duration    prometheus.Histogram
	recreations prometheus.Counter
	// Set by New: they read the member filter's state.
	filterOn, filterDrops prometheus.Collector
}

func newMetrics() *metrics {
	return &metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_vxlan_syncs_total", Help: "VXLAN syncs by trigger (reconcile, resync, periodic, event) and result.",
		}, []string{"trigger", "result"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_vxlan_changes_total", Help: "Kernel writes made by VXLAN syncs, by kind (neigh, fdb, nexthop, route) and op (set, del).",
		}, []string{"kind", "op"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "strata_vxlan_sync_seconds", Help: "Duration of one VXLAN sync.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		recreations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_vxlan_device_creations_total", Help: "Times the VXLAN device was created or recreated.",
		}),
	}
}

func (m *metrics) observe(trigger string, took time.Duration, c Counts, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.syncs.WithLabelValues(trigger, result).Inc()
	m.duration.Observe(took.Seconds())
	for _, x := range []struct {
		kind, op string
		n        int
	}{
		{"neigh", "set", c.NeighAdded}, {"neigh", "del", c.NeighRemoved},
		{"fdb", "set", c.FDBAdded}, {"fdb", "del", c.FDBRemoved},
		{"nexthop", "set", c.NexthopsAdded}, {"nexthop", "del", c.NexthopsRemoved},
		{"route", "set", c.RoutesAdded}, {"route", "del", c.RoutesRemoved},
	} {
		if x.n > 0 {
			m.changes.WithLabelValues(x.kind, x.op).Add(float64(x.n))
		}
	}
}

// Describe implements prometheus.Collector.
func (d *Datapath) Describe(ch chan<- *prometheus.Desc) {
	d.metrics.syncs.Describe(ch)
	d.metrics.changes.Describe(ch)
	d.metrics.duration.Describe(ch)
	d.metrics.recreations.Describe(ch)
	d.metrics.filterOn.Describe(ch)
	d.metrics.filterDrops.Describe(ch)
}

// Collect implements prometheus.Collector, so callers can
// registry.MustRegister(dp).
func (d *Datapath) Collect(ch chan<- prometheus.Metric) {
	d.metrics.syncs.Collect(ch)
	d.metrics.changes.Collect(ch)
	d.metrics.duration.Collect(ch)
	d.metrics.recreations.Collect(ch)
	d.metrics.filterOn.Collect(ch)
	d.metrics.filterDrops.Collect(ch)
}

// filterMetrics reads the member filter's state.
func (d *Datapath) filterMetrics() {
	d.metrics.filterOn = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strata_vxlan_member_filter_enforcing",
		Help: "1 when the nftables filter accepting VXLAN only from cluster members is in place; 0 means any host reaching the VTEP port can inject into pods (see strata status).",
	}, func() float64 {
		if d.filter.ok.Load() {
			return 1
		}
		return 0
	})
	d.metrics.filterDrops = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "strata_vxlan_nonmember_dropped_packets_total",
		Help: "VXLAN packets from sources that are not cluster members, dropped by the member filter (read at each check).",
	}, func() float64 { return float64(d.filter.dropped.Load()) })
}
