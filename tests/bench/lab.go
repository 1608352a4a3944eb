package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/harness/netlab"
	"github.com/strata-net/strata/tests/lab"
)

// The lab area brings the whole mixed lab up and measures what a user sees:
// the leased-line failover window, probes lost while healing, and iperf3
// throughput per path kind beside a raw veth between two namespaces.

func init() { Register(Area{Name: "lab", Run: runLab}) }

const labIperfSeconds = 3

func runLab(ctx context.Context, log io.Writer) ([]Result, error) {
	if os.Getenv("STRATA_BIN") == "" {
		wd, _ := os.Getwd()
		_ = os.Setenv("STRATA_BIN", filepath.Join(wd, "_out", "bin"))
	}
	spec, err := lab.Load("tests/lab/lab.yaml")
	if err != nil {
		return nil, err
	}
	l := lab.Open(spec, lab.Options{ToolsBin: testutil.ToolsBin(), Progress: log})
	_ = l.Down()
	defer func() { _ = l.Down() }()
	if err := l.Up(ctx); err != nil {
		return nil, err
	}
	if err := waitMatrix(ctx, l); err != nil {
		return nil, err
	}
	pods, err := l.Pods()
	if err != nil {
		return nil, err
	}
	on := func(node string) lab.PodInfo {
		for _, p := range pods {
			if p.Node == node {
				return p
			}
		}
		return lab.PodInfo{}
	}
	cloud1, cloud2, edgeA, edgeB := on("cloud-1"), on("cloud-2"), on("edge-a1"), on("edge-b1")

	var rs []Result
	// Throughput per path kind, and the raw veth baseline, in the same run.
	veth, err := rawVethIperf(ctx)
	if err != nil {
		return nil, fmt.Errorf("raw veth baseline: %w", err)
	}
	measure := func(a, b lab.PodInfo) (float64, error) {
		bps, _, err := Iperf(ctx, l.PodNS(b), l.PodNS(a), b.IP, labIperfSeconds)
		return bps, err
	}
	cc, err := measure(cloud1, cloud2)
	if err != nil {
		return nil, err
	}
	ce, err := measure(cloud1, edgeA)
	if err != nil {
		return nil, err
	}
	vx, err := measure(cloud1, edgeB)
	if err != nil {
		return nil, err
	}
	g := func(bps float64) float64 { return bps / 1e9 }
	native := min(cc, ce)
	rs = append(rs,
		New("lab.iperf_native_ratio_vs_veth", native/veth, "ratio", ">= 0.9",
			fmt.Sprintf("slowest native path %.2f Gbit/s (cloud↔cloud %.2f through the VPC vSwitch bridge; cloud↔edge-a %.2f through VPC router, leased line and IDC router) vs raw veth %.2f Gbit/s; %ds iperf3 TCP each", g(native), g(cc), g(ce), g(veth), labIperfSeconds)).
			WithBaseline("raw veth between two namespaces", g(veth)),
		New("lab.iperf_vxlan_ratio_vs_veth", vx/veth, "ratio", "report",
			fmt.Sprintf("cloud-1 → edge-b1 over VXLAN through three routers %.2f Gbit/s vs raw veth %.2f Gbit/s", g(vx), g(veth))).
			WithBaseline("raw veth between two namespaces", g(veth)))

	// Failover: a 20 ms probe stream across the leased-line cut.
	const interval = 20 * time.Millisecond
	st, err := streamAround(ctx, l, cloud1, edgeA.IP, 300, interval, func() error { return l.Fail("leased-line") })
	if err != nil {
		return rs, err
	}
	rs = append(rs, New("lab.failover_outage_ms", float64(time.Duration(st.Lost)*interval)/float64(time.Millisecond), "ms", "<= 1000",
		fmt.Sprintf("%d of %d probes lost, 20 ms apart, cloud-1 pod → edge-a1 pod, leased line cut 1 s into the stream", st.Lost, st.Sent)))
	time.Sleep(3 * time.Second)
	st, err = streamAround(ctx, l, cloud1, edgeA.IP, 700, interval, func() error { return l.Heal("leased-line") })
	if err != nil {
		return rs, err
	}
	rs = append(rs, New("lab.heal_lost_probes", float64(st.Lost), "probes", "== 0",
		fmt.Sprintf("%d of %d probes lost, 20 ms apart, across the heal, BGP convergence and the 3 s hold-down", st.Lost, st.Sent)))
	return rs, nil
}

// streamAround runs a ping stream and calls act one second into it.
func streamAround(ctx context.Context, l *lab.Lab, from lab.PodInfo, to string, count int, interval time.Duration, act func() error) (lab.PingStats, error) {
	var st lab.PingStats
	var perr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); st, perr = l.PingStream(ctx, from, to, count, interval) }()
	time.Sleep(time.Second)
	aerr := act()
	wg.Wait()
	if aerr != nil {
		return st, aerr
	}
	return st, perr
}

func waitMatrix(ctx context.Context, l *lab.Lab) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		cells, err := l.Matrix(ctx)
		if err != nil {
			return err
		}
		ok := true
		for _, c := range cells {
			ok = ok && c.OK()
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the lab's matrix is not all green after 90s")
		}
		time.Sleep(2 * time.Second)
	}
}

// rawVethIperf is the baseline: two namespaces joined by one veth.
func rawVethIperf(ctx context.Context) (float64, error) {
	n, err := netlab.Build(netlab.Spec{
		Hosts: []netlab.Host{{Name: "bvA"}, {Name: "bvB"}},
		Links: []netlab.Link{{A: netlab.Port{Host: "bvA", Ifname: "eth0", Addr: "172.29.0.1/30"}, B: netlab.Port{Host: "bvB", Ifname: "eth0", Addr: "172.29.0.2/30"}}},
	})
	if err != nil {
		return 0, err
	}
	defer func() { _ = n.Close() }()
	bps, _, err := Iperf(ctx, n.NS("bvB"), n.NS("bvA"), "172.29.0.2", labIperfSeconds)
	return bps, err
}
