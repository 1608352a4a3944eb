package bgp

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports a speaker's peers as Prometheus metrics. Register it on
// the agent's own registry: reg.MustRegister(bgp.NewCollector(speaker)).
type Collector struct {
	s                                                      *Speaker
	up, state, recv, sent, flaps, rejected, overLimit, bad *prometheus.Desc
}

// NewCollector builds the collector; it reads the speaker on each scrape.
func NewCollector(s *Speaker) *Collector {
	l := []string{"peer", "peer_asn"}
	return &Collector{
		s:     s,
		up:    prometheus.NewDesc("strata_bgp_peer_up", "1 when the BGP session is Established.", l, nil),
		state: prometheus.NewDesc("strata_bgp_peer_state", "1 for the session's current FSM state.", append(l, "state"), nil),
		recv:  prometheus.NewDesc("strata_bgp_prefixes_received", "Prefixes currently learned from the peer.", l, nil),
		sent:  prometheus.NewDesc("strata_bgp_prefixes_sent", "Prefixes currently advertised to the peer.", l, nil),
		flaps: prometheus.NewDesc("strata_bgp_session_flaps_total", "Times the session left Established.", l, nil),
		rejected: prometheus.NewDesc("strata_bgp_prefixes_rejected", "Prefixes from the peer the import policy keeps out of the kernel, by reason.",
			append(l, "reason"), nil),
		overLimit: prometheus.NewDesc("strata_bgp_peer_over_max_prefixes", "1 when the peer sent more than maxPrefixes and its session is held down.", l, nil),
		bad:       prometheus.NewDesc("strata_bgp_bad_updates_total", "Paths from the peer that could not be decoded.", l, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.state, c.recv, c.sent, c.flaps, c.rejected, c.overLimit, c.bad} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	peers, err := c.s.Peers(ctx)
	if err != nil {
		return
	}
	for _, p := range peers {
		lv := []string{p.Address.String(), formatASN(p.ASN)}
		up := 0.0
		if p.State == StateEstablished {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, lv...)
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, 1, append(lv, string(p.State))...)
		ch <- prometheus.MustNewConstMetric(c.recv, prometheus.GaugeValue, float64(p.Received), lv...)
		ch <- prometheus.MustNewConstMetric(c.sent, prometheus.GaugeValue, float64(p.Sent), lv...)
		ch <- prometheus.MustNewConstMetric(c.flaps, prometheus.CounterValue, float64(p.Flaps), lv...)
		for _, r := range RejectReasons {
			ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.GaugeValue, float64(p.Rejected[r]), append(lv, string(r))...)
		}
		over := 0.0
		if p.OverLimit {
			over = 1
		}
		ch <- prometheus.MustNewConstMetric(c.overLimit, prometheus.GaugeValue, over, lv...)
		ch <- prometheus.MustNewConstMetric(c.bad, prometheus.CounterValue, float64(p.BadUpdates), lv...)
	}
}

func formatASN(a uint32) string {
	const digits = "0123456789"
	if a == 0 {
		return "0"
	}
	var b [10]byte
	i := len(b)
	for a > 0 {
		i--
		b[i] = digits[a%10]
		a /= 10
	}
	return string(b[i:])
}

// InstallCollector exports the installer's report: failed route writes,
// routes failing now, and whether routes of an earlier run are being kept.
type InstallCollector struct {
	in                    *Installer
	errors, failing, kept *prometheus.Desc
}

// NewInstallCollector builds the collector; it reads the installer on each
// scrape.
func NewInstallCollector(in *Installer) *InstallCollector {
	return &InstallCollector{
		in:      in,
		errors:  prometheus.NewDesc("strata_bgp_install_errors_total", "Learned-route writes the kernel refused (each retry counts).", nil, nil),
		failing: prometheus.NewDesc("strata_bgp_install_failing_routes", "Learned routes not in the kernel because it refused them; retried with backoff.", nil, nil),
		kept:    prometheus.NewDesc("strata_bgp_stale_routes_kept", "1 while routes of an earlier run are kept, waiting for End-of-RIB or the restart time.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *InstallCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.errors
	ch <- c.failing
	ch <- c.kept
}

// Collect implements prometheus.Collector.
func (c *InstallCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.in.Report()
	kept := 0.0
	if r.StaleWaiting {
		kept = 1
	}
	ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(r.ErrorsTotal))
	ch <- prometheus.MustNewConstMetric(c.failing, prometheus.GaugeValue, float64(len(r.Failing)))
	ch <- prometheus.MustNewConstMetric(c.kept, prometheus.GaugeValue, kept)
}
