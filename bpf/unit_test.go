package bpf

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestEndpointKeyLayout(t *testing.T) {
	// The C side builds IPv4 keys as ::ffff:a.b.c.d in network byte order.
	k := endpointKey(netip.MustParseAddr("10.244.1.10"))
	var raw [16]byte
	for i, w := range k.Addr {
		raw[4*i], raw[4*i+1], raw[4*i+2], raw[4*i+3] = byte(w), byte(w>>8), byte(w>>16), byte(w>>24)
	}
	want := [16]byte{10: 0xff, 11: 0xff, 12: 10, 13: 244, 14: 1, 15: 10}
	if raw != want {
		t.Fatalf("IPv4 key bytes %x, want %x", raw, want)
	}
}

func FuzzEndpointKeyRoundTrip(f *testing.F) {
	f.Add([]byte{10, 244, 1, 10})
	f.Add(netip.MustParseAddr("fd00:244:1::10").AsSlice())
	f.Add(netip.MustParseAddr("::ffff:1.2.3.4").AsSlice())
	f.Fuzz(func(t *testing.T, b []byte) {
		ip, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		if got, want := keyAddr(endpointKey(ip)), ip.Unmap(); got != want {
			t.Fatalf("round trip %s -> %s", want, got)
		}
	})
}

type fakeSource struct {
	c   Counters
	err error
}

func (f fakeSource) Counters() (Counters, error) { return f.c, f.err }

func TestCollectorExportsCounters(t *testing.T) {
	src := fakeSource{c: Counters{
		Paths: map[string]Counter{"local": {Packets: 3, Bytes: 300}, "remote": {Packets: 1, Bytes: 100}},
		Pods: map[netip.Addr]PodCounters{
			netip.MustParseAddr("10.244.1.10"): {Local: Counter{Packets: 3, Bytes: 300}, Stack: Counter{Packets: 2, Bytes: 84}},
		},
	}}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(NewCollector(src)); err != nil {
		t.Fatal(err)
	}
	// A second collector on a second registry must not clash (no globals).
	if err := prometheus.NewRegistry().Register(NewCollector(src)); err != nil {
		t.Fatal(err)
	}
	got := gather(t, reg)
	for key, want := range map[string]float64{
		`strata_bpf_path_packets_total{path="local"}`:                     3,
		`strata_bpf_path_packets_total{path="remote"}`:                    1,
		`strata_bpf_path_bytes_total{path="local"}`:                       300,
		`strata_bpf_pod_bytes_total{path="local",pod_ip="10.244.1.10"}`:   300,
		`strata_bpf_pod_bytes_total{path="remote",pod_ip="10.244.1.10"}`:  0,
		`strata_bpf_pod_packets_total{path="stack",pod_ip="10.244.1.10"}`: 2,
		`strata_bpf_scrape_error{}`:                                       0,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
}

// gather flattens a registry into "name{l1="v1",...}" -> value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			out[key] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

func TestCollectorReportsReadFailure(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(fakeSource{err: errors.New("map gone")}))
	if v := gather(t, reg)["strata_bpf_scrape_error{}"]; v != 1 {
		t.Fatalf("strata_bpf_scrape_error = %v, want 1", v)
	}
}

func TestLoadRejectsUnknownAttachMode(t *testing.T) {
	_, err := Load(Options{Attach: "xdp"})
	if err == nil || !strings.Contains(err.Error(), "Options.Attach") {
		t.Fatalf("want an error naming Options.Attach, got %v", err)
	}
}
