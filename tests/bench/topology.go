package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/strata-net/strata/topology"
	"github.com/strata-net/strata/topology/probe/probelab"
	"github.com/strata-net/strata/topology/topotest"
)

func init() {
	Register(Area{Name: "topology", Run: runTopology})
}

const (
	topoNodes = 15000
	topoPools = 100
)

func runTopology(ctx context.Context, log io.Writer) ([]Result, error) {
	var rs []Result
	nodes := topotest.Cluster(topoNodes, topoPools)

	// Full decision: median of repeated runs, plus retained heap per node.
	var runs []float64
	for range 15 {
		start := time.Now()
		if _, err := topology.Decide(topology.Facts{Nodes: nodes}, topology.DefaultConfig()); err != nil {
			return rs, err
		}
		runs = append(runs, float64(time.Since(start).Microseconds())/1000)
	}
	slices.Sort(runs)
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	plan, _ := topology.Decide(topology.Facts{Nodes: nodes}, topology.DefaultConfig())
	runtime.GC()
	runtime.ReadMemStats(&m1)
	perNode := float64(m1.HeapAlloc-m0.HeapAlloc) / float64(plan.Len())
	runtime.KeepAlive(plan)
	rs = append(rs, New("topology.decide_full_15k_ms", runs[len(runs)/2], "ms", "< 100",
		fmt.Sprintf("median of %d Decide runs, %d nodes in %d pools (min %.1f, max %.1f ms); plan holds %.0f B/node (pair paths derived per pool pair, not stored)",
			len(runs), topoNodes, topoPools, runs[0], runs[len(runs)-1], perNode)))

	// Incremental: one native probe result that flips a pool link (the
	// worst case: a new plan is built), alternating down and up.
	d, err := topology.NewDecider(topology.Config{FailThreshold: 1, HoldDown: 0})
	if err != nil {
		return rs, err
	}
	if _, err := d.SetNodes(nodes); err != nil {
		return rs, err
	}
	const n = 20000
	lat := make([]float64, 0, n)
	at := time.Unix(0, 0)
	for i := range n {
		at = at.Add(time.Millisecond)
		start := time.Now()
		_, changed := d.Observe(topology.ProbeResult{From: "node-00000", To: "node-00001", Kind: topology.ProbeNative, OK: i%2 == 1, At: at})
		lat = append(lat, float64(time.Since(start).Nanoseconds())/1000)
		if !changed {
			return rs, fmt.Errorf("incremental bench: probe %d did not change the plan", i)
		}
	}
	slices.Sort(lat)
	p99 := lat[len(lat)*99/100]
	rs = append(rs, New("topology.decide_incremental_us", p99, "us", "< 1000",
		fmt.Sprintf("p99 of %d probe results each flipping a pool link at %d nodes/%d pools (p50 %.1f us, max %.0f us)", n, topoNodes, topoPools, lat[len(lat)/2], lat[len(lat)-1])))

	// Failover detection in namespaces: needs root.
	if os.Geteuid() != 0 {
		fmt.Fprintln(log, "    topology.failover_detect_ms needs root; not measured")
		return rs, nil
	}
	lab, err := probelab.Start(probelab.Options{HoldDown: time.Second})
	if err != nil {
		return rs, fmt.Errorf("failover lab: %w", err)
	}
	defer func() { _ = lab.Close() }()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := lab.WaitSteady(cctx); err != nil {
		return rs, fmt.Errorf("failover lab never steady: %w", err)
	}
	var cuts []float64
	for range 5 {
		took, err := lab.Cut(cctx)
		if err != nil {
			return rs, err
		}
		cuts = append(cuts, float64(took.Microseconds())/1000)
		if _, err := lab.Heal(cctx); err != nil {
			return rs, err
		}
	}
	worst := slices.Max(cuts)
	rs = append(rs, New("topology.failover_detect_ms", worst, "ms", "< 1000",
		fmt.Sprintf("worst of %d leased-line cuts until every node's plan had all 8 affected pairs on vxlan: %v ms; 5 probers, period 100 ms, timeout 200 ms, K=3", len(cuts), roundAll(cuts))))
	return rs, nil
}

func roundAll(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(int(x*10)) / 10
	}
	return out
}
