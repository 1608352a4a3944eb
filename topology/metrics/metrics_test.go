package metrics

import (
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-net/strata/topology"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(reg); err == nil {
		t.Fatal("double registration on one registry must fail, not panic")
	}
	b, _ := os.ReadFile("../testdata/lab.yaml")
	f, err := topology.ParseFactsDoc(b)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := topology.NewDecider(topology.DefaultConfig())
	p0, _ := d.SetNodes(f.Nodes)
	m.SetPlan(p0)
	for i := range 3 {
		d.Observe(topology.ProbeResult{From: "cloud-1", To: "edge-a1", Kind: topology.ProbeNative, At: f.Now.Add(time.Duration(i) * time.Millisecond)})
	}
	p1 := d.Plan()
	m.SetPlan(p1)
	m.Switched(topology.DiffPeers(p0, p1, "cloud-1"), 420*time.Millisecond)
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range mt.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case mt.GetGauge() != nil:
				got[key] = mt.GetGauge().GetValue()
			case mt.GetCounter() != nil:
				got[key] = mt.GetCounter().GetValue()
			}
		}
	}
	want := map[string]float64{
		"strata_topology_pairs,path=native": 4, "strata_topology_pairs,path=vxlan": 16, "strata_topology_pairs,path=unreachable": 0, "strata_topology_pairs,path=wan": 0,
		"strata_topology_path_switches_total,from=native,to=vxlan": 2,
		"strata_topology_last_switch_duration_seconds":             0.42,
		"strata_topology_nodes":                                    5,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("metrics\n got %v\nwant %v", got, want)
	}
}
