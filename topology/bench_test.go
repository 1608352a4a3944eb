package topology_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/strata-net/strata/topology"
	"github.com/strata-net/strata/topology/topotest"
)

const benchNodes, benchPools = 15000, 100

func BenchmarkDecideFull15k(b *testing.B) {
	nodes := topotest.Cluster(benchNodes, benchPools)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := topology.Decide(topology.Facts{Nodes: nodes}, topology.DefaultConfig()); err != nil {
			b.Fatal(err)
		}
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	p, _ := topology.Decide(topology.Facts{Nodes: nodes}, topology.DefaultConfig())
	runtime.GC()
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/float64(p.Len()), "B/node")
	runtime.KeepAlive(p)
}

// One native probe result that flips a pool link (alternating down and up
// with zero hold-down), the worst case of an incremental update.
func BenchmarkDecideIncremental(b *testing.B) {
	d, err := topology.NewDecider(topology.Config{FailThreshold: 1, HoldDown: 0})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := d.SetNodes(topotest.Cluster(benchNodes, benchPools)); err != nil {
		b.Fatal(err)
	}
	at := time.Unix(0, 0)
	i := 0
	for b.Loop() {
		i++
		at = at.Add(time.Millisecond)
		if _, changed := d.Observe(topology.ProbeResult{From: "node-00000", To: "node-00001", Kind: topology.ProbeNative, OK: i%2 == 0, At: at}); !changed {
			b.Fatal("probe did not change the plan")
		}
	}
}

// What an internet node programs for every peer in a WAN cluster: direct
// pairs, standby tunnels and relayed pairs (rendezvous over 8 gateways).
func BenchmarkPeersOfWAN15k(b *testing.B) {
	nodes := topotest.WANCluster(benchNodes, benchPools, 8)
	p, err := topology.Decide(topology.Facts{Nodes: nodes}, topology.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	local := nodes[benchPools-1].Name // the last pool is an internet pool
	if c := p.Counts(); c[topology.PathWAN] == 0 {
		b.Fatalf("no wan pairs: %v", c)
	}
	relayed := 0
	for _, pp := range p.PeersOf(local) {
		if pp.Relay != "" {
			relayed++
		}
	}
	if relayed == 0 {
		b.Fatal("no relayed peers")
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = p.PeersOf(local)
	}
	b.ReportMetric(float64(relayed), "relayed-peers")
}

func BenchmarkDecideFullWAN15k(b *testing.B) {
	nodes := topotest.WANCluster(benchNodes, benchPools, 8)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := topology.Decide(topology.Facts{Nodes: nodes}, topology.DefaultConfig()); err != nil {
			b.Fatal(err)
		}
	}
}
