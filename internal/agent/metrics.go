package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	topometrics "github.com/strata-net/strata/topology/metrics"
)

// metrics are the agent's own; plan and path-switch metrics are topology's.
type metrics struct {
	topo          *topometrics.Metrics
	datapath      *prometheus.GaugeVec
	programErrors prometheus.Counter
	badFacts      prometheus.Counter
	droppedEvents prometheus.Counter
	unknownGossip prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		datapath: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "strata_node_datapath",
			Help: "1 for the datapath this node runs."}, []string{"datapath"}),
		programErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_program_errors_total",
			Help: "Failed attempts to program peers (retried on resync)."}),
		badFacts: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_rejected_facts_total",
			Help: "Node labels/annotations rejected as malformed (the node's last good facts stay)."}),
		droppedEvents: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_dropped_events_total",
			Help: "Updates dropped because the agent's queue was full (the next resync recovers)."}),
		unknownGossip: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_gossip_unknown_node_facts_total",
			Help: "Gossiped facts ignored because the API server (or the cache) never showed that node, or it was deleted."}),
	}
	reg.MustRegister(m.datapath, m.programErrors, m.badFacts, m.droppedEvents, m.unknownGossip)
	topo, err := topometrics.New(reg)
	if err != nil {
		panic(err) // a fresh registry per agent: a duplicate is a programming error
	}
	m.topo = topo
	return m
}
