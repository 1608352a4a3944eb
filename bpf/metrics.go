package bpf

import (
	"github.com/prometheus/client_golang/prometheus"
)

// CounterSource is what the collector reads; *Fastpath implements it.
type CounterSource interface {
	Counters() (Counters, error)
}

// Collector exports the fast path's counters to Prometheus. It reads the maps
// on every scrape, so it holds no state and can be registered on any
// registry (tests use their own).
type Collector struct {
	src                    CounterSource
	pathPackets, pathBytes *prometheus.Desc
	podPackets, podBytes   *prometheus.Desc
	scrapeErrors           *prometheus.Desc
}

// NewCollector returns a collector over src.
func NewCollector(src CounterSource) *Collector {
	return &Collector{
		src:          src,
		pathPackets:  prometheus.NewDesc("strata_bpf_path_packets_total", "Packets seen by the eBPF fast path, by the path they took.", []string{"path"}, nil),
		pathBytes:    prometheus.NewDesc("strata_bpf_path_bytes_total", "Bytes seen by the eBPF fast path, by the path they took.", []string{"path"}, nil),
		podPackets:   prometheus.NewDesc("strata_bpf_pod_packets_total", "Packets sent by a local pod, by fast-path path (local, remote, stack).", []string{"pod_ip", "path"}, nil),
		podBytes:     prometheus.NewDesc("strata_bpf_pod_bytes_total", "Bytes sent by a local pod, by fast-path path (local, remote, stack).", []string{"pod_ip", "path"}, nil),
		scrapeErrors: prometheus.NewDesc("strata_bpf_scrape_error", "1 when the last read of the fast path's maps failed.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pathPackets
	ch <- c.pathBytes
	ch <- c.podPackets
	ch <- c.podBytes
	ch <- c.scrapeErrors
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	cs, err := c.src.Counters()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.scrapeErrors, prometheus.GaugeValue, 1)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.scrapeErrors, prometheus.GaugeValue, 0)
	for name, v := range cs.Paths {
		ch <- prometheus.MustNewConstMetric(c.pathPackets, prometheus.CounterValue, float64(v.Packets), name)
		ch <- prometheus.MustNewConstMetric(c.pathBytes, prometheus.CounterValue, float64(v.Bytes), name)
	}
	for ip, p := range cs.Pods {
		for _, e := range []struct {
			path string
			c    Counter
		}{{"local", p.Local}, {"remote", p.Remote}, {"stack", p.Stack}} {
			ch <- prometheus.MustNewConstMetric(c.podPackets, prometheus.CounterValue, float64(e.c.Packets), ip.String(), e.path)
			ch <- prometheus.MustNewConstMetric(c.podBytes, prometheus.CounterValue, float64(e.c.Bytes), ip.String(), e.path)
		}
	}
}
