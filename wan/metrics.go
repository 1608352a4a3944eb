package wan

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	impl       *prometheus.GaugeVec
	reconciles *prometheus.CounterVec
	duration   prometheus.Histogram
}

var (
	descHandshakeAge = prometheus.NewDesc("strata_wan_peer_handshake_age_seconds",
		"Seconds since the last WireGuard handshake with the peer (absent before the first).", []string{"peer"}, nil)
	descRx      = prometheus.NewDesc("strata_wan_peer_receive_bytes_total", "Bytes received from the WAN peer.", []string{"peer"}, nil)
	descTx      = prometheus.NewDesc("strata_wan_peer_transmit_bytes_total", "Bytes sent to the WAN peer.", []string{"peer"}, nil)
	descPeerErr = prometheus.NewDesc("strata_wan_peer_error",
		"1 when the peer's last Reconcile failed (see strata status for the reason); it is retried on every Reconcile.", []string{"peer"}, nil)
)

func newMetrics() *metrics {
	return &metrics{
		impl: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_wan_transport", Help: "1 for the WireGuard implementation the WAN uses (impl=kernel|userspace).",
		}, []string{"impl"}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_wan_reconciles_total", Help: "WAN peer reconciles by result (ok, error).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "strata_wan_reconcile_seconds", Help: "Duration of one WAN reconcile.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
}

func (m *metrics) observe(took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.reconciles.WithLabelValues(result).Inc()
	m.duration.Observe(took.Seconds())
}

// Describe implements prometheus.Collector.
func (t *Transport) Describe(ch chan<- *prometheus.Desc) {
	t.metrics.impl.Describe(ch)
	t.metrics.reconciles.Describe(ch)
	t.metrics.duration.Describe(ch)
	ch <- descHandshakeAge
	ch <- descRx
	ch <- descTx
	ch <- descPeerErr
}

// Collect implements prometheus.Collector (registry.MustRegister(transport)).
// Per-peer values are read from the device at scrape time.
func (t *Transport) Collect(ch chan<- prometheus.Metric) {
	t.metrics.impl.Collect(ch)
	t.metrics.reconciles.Collect(ch)
	t.metrics.duration.Collect(ch)
	s, err := t.Status()
	if err != nil {
		return
	}
	now := time.Now()
	for _, p := range s.Peers {
		name := p.Name
		if name == "" {
			name = p.PublicKey
		}
		if !p.LastHandshake.IsZero() {
			ch <- prometheus.MustNewConstMetric(descHandshakeAge, prometheus.GaugeValue, now.Sub(p.LastHandshake).Seconds(), name)
		}
		ch <- prometheus.MustNewConstMetric(descRx, prometheus.CounterValue, float64(p.RxBytes), name)
		ch <- prometheus.MustNewConstMetric(descTx, prometheus.CounterValue, float64(p.TxBytes), name)
		e := 0.0
		if p.Error != "" {
			e = 1
		}
		ch <- prometheus.MustNewConstMetric(descPeerErr, prometheus.GaugeValue, e, name)
	}
	for name := range s.Rejected {
		ch <- prometheus.MustNewConstMetric(descPeerErr, prometheus.GaugeValue, 1, name)
	}
}
