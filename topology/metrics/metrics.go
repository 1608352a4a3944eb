// Package metrics exports a topology plan as Prometheus metrics: pairs per
// path, path switches, and how long the last switch took. Collectors are
// registered on the registry the caller gives, never the global one, so
// tests can build as many as they like.
package metrics

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-net/strata/topology"
)

// Metrics are one agent's plan metrics.
type Metrics struct {
	pairs      *prometheus.GaugeVec
	switches   *prometheus.CounterVec
	lastSwitch prometheus.Gauge
	nodes      prometheus.Gauge
	isolated   *prometheus.GaugeVec
	withheld   *prometheus.GaugeVec
}

// New builds the collectors and registers them on reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		pairs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "strata", Subsystem: "topology", Name: "pairs",
			Help: "Ordered node pairs per path in the current plan."}, []string{"path"}),
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "strata", Subsystem: "topology", Name: "path_switches_total",
			Help: "Peers of this node whose path changed, by old and new path."}, []string{"from", "to"}),
		lastSwitch: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "strata", Subsystem: "topology", Name: "last_switch_duration_seconds",
			Help: "Time from the fact that caused the last path switch to the new plan being applied."}),
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "strata", Subsystem: "topology", Name: "nodes",
			Help: "Nodes in the current plan."}),
		isolated: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "strata", Name: "peer_isolated",
			Help: "1 for each node whose pod prefix claims were refused (nothing is programmed for it); reason is the isolation code, strata status says the rest."}, []string{"peer", "reason"}),
		withheld: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "strata", Name: "peer_withheld_prefixes",
			Help: "Pod prefixes of a node not programmed because an older node holds them."}, []string{"peer"}),
	}
	for _, c := range []prometheus.Collector{m.pairs, m.switches, m.lastSwitch, m.nodes, m.isolated, m.withheld} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register topology metrics: %w", err)
		}
	}
	return m, nil
}

// SetPlan updates the plan gauges.
func (m *Metrics) SetPlan(p *topology.Plan) {
	c := p.Counts()
	for _, path := range topology.Paths {
		m.pairs.WithLabelValues(string(path)).Set(float64(c[path]))
	}
	m.nodes.Set(float64(p.Len()))
	m.isolated.Reset()
	m.withheld.Reset()
	for _, n := range p.Refused() {
		if n.Isolated != "" {
			m.isolated.WithLabelValues(n.Name, string(n.Isolated)).Set(1)
		}
		if len(n.Withheld) > 0 {
			m.withheld.WithLabelValues(n.Name).Set(float64(len(n.Withheld)))
		}
	}
}

// Switched records the peers of this node that changed path, and how long
// the switch took (from the triggering probe to programming done).
func (m *Metrics) Switched(changes []topology.PeerChange, took time.Duration) {
	n := 0
	for _, c := range changes {
		if c.Old.Path != c.New.Path && c.Old.Path != "" && c.New.Path != "" {
			m.switches.WithLabelValues(string(c.Old.Path), string(c.New.Path)).Inc()
			n++
		}
	}
	if n > 0 {
		m.lastSwitch.Set(took.Seconds())
	}
}
