package agent

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	datapath      *prometheus.GaugeVec
	pairs         *prometheus.GaugeVec
	switches      *prometheus.CounterVec
	lastSwitch    prometheus.Gauge
	programErrors prometheus.Counter
	badFacts      prometheus.Counter
	droppedEvents prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		datapath: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "strata_node_datapath",
			Help: "1 for the datapath this node runs."}, []string{"datapath"}),
		pairs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "strata_peer_pairs",
			Help: "Peers of this node per path (native, vxlan, unreachable)."}, []string{"path"}),
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_path_switches_total",
			Help: "Peer path changes programmed, by old and new path."}, []string{"from", "to"}),
		lastSwitch: prometheus.NewGauge(prometheus.GaugeOpts{Name: "strata_last_switch_seconds",
			Help: "Time from the fact change to the datapath being reprogrammed, for the last change."}),
		programErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_program_errors_total",
			Help: "Failed attempts to program peers (retried on resync)."}),
		badFacts: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_rejected_facts_total",
			Help: "Node labels/annotations rejected as malformed (the node's last good facts stay)."}),
		droppedEvents: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_dropped_events_total",
			Help: "Updates dropped because the agent's queue was full (the next resync recovers)."}),
	}
	reg.MustRegister(m.datapath, m.pairs, m.switches, m.lastSwitch, m.programErrors, m.badFacts, m.droppedEvents)
	return m
}
