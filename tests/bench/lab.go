package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/harness/netlab"
	"github.com/strata-net/strata/tests/lab"
)

// The lab area brings the whole mixed lab up and measures what a user sees:
// the leased-line failover window, probes lost while healing, and iperf3
// throughput per path kind beside a raw veth between two namespaces.

func init() {
	Register(Area{Name: "lab", Run: runLab, IDs: []string{"lab.iperf_native_ratio_vs_veth", "lab.iperf_vxlan_ratio_vs_veth",
		"lab.failover_outage_ms", "lab.heal_lost_probes"}})
}

const (
	labIperfSeconds = 3
	labIperfRounds  = 5
)

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
	on := func(node string) lab.PodInfo { p, _ := lab.PodOn(pods, node); return p }
	cloud1, cloud2, edgeA, edgeB := on("cloud-1"), on("cloud-2"), on("edge-a1"), on("edge-b1")

	nodeAddr := func(name string) string {
		for _, n := range spec.Nodes {
			if n.Name == name {
				return n.Addr.Addr().String()
			}
		}
		return ""
	}
	veth, err := netlab.Build(netlab.Spec{
		Hosts: []netlab.Host{{Name: "bvA"}, {Name: "bvB"}},
		Links: []netlab.Link{{A: netlab.Port{Host: "bvA", Ifname: "eth0", Addr: "172.29.0.1/30"}, B: netlab.Port{Host: "bvB", Ifname: "eth0", Addr: "172.29.0.2/30"}}},
	})
	if err != nil {
		return nil, fmt.Errorf("raw veth baseline: %w", err)
	}
	defer closeLogged(log, "raw veth baseline", veth.Close)
	pod := func(name string, from, to lab.PodInfo) *labIperfPath {
		return &labIperfPath{name: name, client: l.PodNS(from), server: l.PodNS(to), dst: to.IP}
	}
	node := func(name, from, to string) *labIperfPath {
		return &labIperfPath{name: name, client: l.NodeNS(from), server: l.NodeNS(to), dst: nodeAddr(to)}
	}
	raw := &labIperfPath{name: "raw veth", client: veth.NS("bvA"), server: veth.NS("bvB"), dst: "172.29.0.2"}
	cc, ce, vx := pod("cloud↔cloud pods", cloud1, cloud2), pod("cloud↔edge-a pods", cloud1, edgeA), pod("cloud→edge-b pods (vxlan)", cloud1, edgeB)
	ucc, uce := node("cloud-1→cloud-2 nodes", "cloud-1", "cloud-2"), node("cloud-1→edge-a1 nodes", "cloud-1", "edge-a1")
	if err := measureLabIperf(ctx, log, []*labIperfPath{raw, cc, ce, vx, ucc, uce}); err != nil {
		return nil, err
	}
	native := perRound(func(i int) float64 { return min(cc.bps[i], ce.bps[i]) / raw.bps[i] })
	var rs []Result
	rs = append(rs,
		New("lab.iperf_native_ratio_vs_veth", median(native), "ratio", ">= 0.9",
			fmt.Sprintf("median of %d per-round ratios [%s] of the slower native pod pair to a raw veth, iperf3 TCP %ds each, the six paths of a round in rotating order; median Gbit/s: %s; %s (VPC vSwitch bridge); %s (VPC router, leased line, IDC router, IDC LAN bridge); the same underlay without Strata, node to node at MTU 1500: %s ratio %.2f, %s ratio %.2f; pod MTU 1450 (underlay − VXLAN overhead)",
				labIperfRounds, fmtList2(native), labIperfSeconds, raw, cc, ce,
				ucc, median(perRound(func(i int) float64 { return ucc.bps[i] / raw.bps[i] })),
				uce, median(perRound(func(i int) float64 { return uce.bps[i] / raw.bps[i] })))).
			WithBaseline("raw veth between two namespaces", median(raw.bps)/1e9),
		New("lab.iperf_vxlan_ratio_vs_veth", median(perRound(func(i int) float64 { return vx.bps[i] / raw.bps[i] })), "ratio", "report",
			fmt.Sprintf("median of %d per-round ratios, cloud-1 → edge-b1 over VXLAN through three routers; %s; %s", labIperfRounds, vx, raw)).
			WithBaseline("raw veth between two namespaces", median(raw.bps)/1e9))

	// Failover: a 20 ms probe stream across the leased-line cut.
	const interval = 20 * time.Millisecond
	st, err := l.StreamAround(ctx, cloud1, edgeA.IP, 300, interval, func() error { return l.Fail("leased-line") })
	if err != nil {
		return rs, err
	}
	rs = append(rs, New("lab.failover_outage_ms", float64(time.Duration(st.Lost)*interval)/float64(time.Millisecond), "ms", "<= 1000",
		fmt.Sprintf("%d of %d probes lost, 20 ms apart, cloud-1 pod → edge-a1 pod, leased line cut 1 s into the stream", st.Lost, st.Sent)))
	time.Sleep(3 * time.Second)
	st, err = l.StreamAround(ctx, cloud1, edgeA.IP, 700, interval, func() error { return l.Heal("leased-line") })
	if err != nil {
		return rs, err
	}
	rs = append(rs, New("lab.heal_lost_probes", float64(st.Lost), "probes", "== 0",
		fmt.Sprintf("%d of %d probes lost, 20 ms apart, across the heal, BGP convergence and the 3 s hold-down", st.Lost, st.Sent)))
	return rs, nil
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

// labIperfPath is one iperf3 path of the lab's throughput rounds and its
// per-round results.
type labIperfPath struct {
	name           string
	client, server nsutil.NS
	dst            string
	bps            []float64
}

func (p *labIperfPath) String() string {
	return fmt.Sprintf("%s %.2f %v", p.name, median(p.bps)/1e9, gbps(p.bps))
}

// measureLabIperf runs every path once per round, each round starting one
// path later, so that load from other work on the 2-core machine and the
// lab's own settling hit the baseline and the paths alike; ratios are then
// taken within a round.
func measureLabIperf(ctx context.Context, log io.Writer, paths []*labIperfPath) error {
	for round := range labIperfRounds {
		for k := range paths {
			p := paths[(round+k)%len(paths)]
			bps, _, err := Iperf(ctx, p.server, p.client, p.dst, labIperfSeconds)
			if err != nil {
				return fmt.Errorf("iperf3 %s: %w", p.name, err)
			}
			p.bps = append(p.bps, bps)
			fmt.Fprintf(log, "    round %d %-28s %.2f Gbit/s\n", round, p.name, bps/1e9)
		}
	}
	return nil
}

func perRound(f func(round int) float64) []float64 {
	out := make([]float64, labIperfRounds)
	for i := range out {
		out[i] = f(i)
	}
	return out
}
