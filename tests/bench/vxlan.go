package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/rtproto"
	"github.com/strata-net/strata/tests/harness/netlab"
	"github.com/strata-net/strata/vxlan"
)

// The vxlan area: programming 5,000 peers from empty, a no-op reconcile of
// 5,000, and iperf3 pod to pod over Strata's overlay against a hand-built
// flannel-style VXLAN (and raw veth) between the same namespaces.
func init() {
	Register(Area{Name: "vxlan", Run: runVXLAN})
}

const vxPeers = 5000

func runVXLAN(ctx context.Context, log io.Writer) ([]Result, error) {
	var out []Result
	rs, err := vxlanProgramming(ctx, log)
	out = append(out, rs...)
	if err != nil {
		return out, err
	}
	r, err := vxlanIperf(ctx, log)
	if err != nil {
		return out, err
	}
	return append(out, r), nil
}

func benchPeers(n int) []vxlan.Peer {
	peers := make([]vxlan.Peer, n)
	for i := range peers {
		gw := netip.AddrFrom4([4]byte{10, byte(128 + i/256), byte(i % 256), 0})
		peers[i] = vxlan.Peer{
			Name:       fmt.Sprintf("node-%d", i),
			UnderlayIP: netip.AddrFrom4([4]byte{10, 10, byte(1 + i/250), byte(1 + i%250)}),
			OverlayIP:  gw,
			Prefixes:   []netip.Prefix{netip.PrefixFrom(gw, 24)},
		}
	}
	return peers
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func vxlanProgramming(ctx context.Context, log io.Writer) ([]Result, error) {
	lab, err := netlab.Build(netlab.Spec{
		Hosts: []netlab.Host{{Name: "vxb"}, {Name: "vxb-peer"}},
		Links: []netlab.Link{{A: netlab.Port{Host: "vxb", Ifname: "eth0", Addr: "10.10.0.1/16"}, B: netlab.Port{Host: "vxb-peer", Ifname: "eth0", Addr: "10.10.0.2/16"}}},
	})
	if err != nil {
		return nil, fmt.Errorf("vxlan bench lab: %w", err)
	}
	defer closeLogged(log, "vxlan bench lab", lab.Close)
	cfg := vxlan.DeviceConfig{LocalIP: netip.MustParseAddr("10.10.0.1"), OverlayIP: netip.MustParseAddr("10.127.0.0"), UnderlayLink: "eth0"}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	peers := benchPeers(vxPeers)
	newDP := func() (*vxlan.Datapath, error) {
		var dp *vxlan.Datapath
		err := lab.NS("vxb").Do(func() error {
			var err error
			dp, err = vxlan.New(cfg, quiet)
			return err
		})
		return dp, err
	}

	// From empty: a fresh device each trial (Close removes it and every
	// route), so the device creation is inside the measurement too.
	var program []float64
	var dp *vxlan.Datapath
	for trial := 0; trial < 3; trial++ {
		if dp != nil {
			if err := dp.Close(); err != nil {
				return nil, err
			}
		}
		if dp, err = newDP(); err != nil {
			return nil, err
		}
		start := time.Now()
		if err := dp.Reconcile(ctx, peers); err != nil {
			_ = dp.Close()
			return nil, fmt.Errorf("program %d peers: %w", vxPeers, err)
		}
		program = append(program, ms(time.Since(start)))
	}
	defer closeLogged(log, "vxlan bench datapath", dp.Close)
	if err := checkProgrammed(lab, vxPeers); err != nil {
		return nil, err
	}
	// No-op, full verification: every call dumps the device's neighbours,
	// FDB, nexthops and routes and diffs them (what the periodic check
	// does, and what Reconcile does without Run).
	noopFull, err := noops(ctx, dp, peers)
	if err != nil {
		return nil, err
	}
	// No-op as the agent runs it: Run subscribed to netlink, and once a
	// full sync has verified the kernel with no event since, a repeated
	// plan needs no dumps (any relevant event clears that).
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = dp.Run(runCtx) }()
	defer func() { stopRun(); <-runDone }()
	verified := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err := dp.Reconcile(ctx, peers); err != nil {
			return nil, err
		}
		if dp.Status().Verified {
			verified = true
			break
		}
	}
	var noopAgent []float64
	if verified {
		if noopAgent, err = noops(ctx, dp, peers); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(log, "    program %d peers: %s ms; no-op full: %s ms; no-op agent (Run, verified): %s ms\n", vxPeers, fmtList(program), fmtList(noopFull), fmtList(noopAgent))
	noopRes := New("vxlan.noop_reconcile_5000_ms", median(noopFull), "ms", "< 50",
		fmt.Sprintf("Run never reached the verified state, so this is the full path: median of 9 no-op reconciles with dumps of 5,000 neighbours, FDB entries, nexthops and routes: min %.1f max %.1f ms", slices.Min(noopFull), slices.Max(noopFull)))
	if verified {
		noopRes = New("vxlan.noop_reconcile_5000_ms", median(noopAgent), "ms", "< 50",
			fmt.Sprintf("agent mode (Run subscribed, state verified by netlink events, so no dumps): median of 9 %.2f ms (max %.2f); full verification with dumps (periodic check, or no Run): median %.1f ms, min %.1f, max %.1f",
				median(noopAgent), slices.Max(noopAgent), median(noopFull), slices.Min(noopFull), slices.Max(noopFull)))
	}
	return []Result{
		New("vxlan.program_5000_peers_ms", median(program), "ms", "< 1000",
			fmt.Sprintf("median of 3 runs from empty (device creation included): %s ms; %d peers x (FDB entry + neighbour + nexthop object + one /24 route)", fmtList(program), vxPeers)),
		noopRes,
	}, nil
}

// noops times 9 Reconciles of an unchanged plan and checks none wrote.
func noops(ctx context.Context, dp *vxlan.Datapath, peers []vxlan.Peer) ([]float64, error) {
	var out []float64
	for trial := 0; trial < 9; trial++ {
		start := time.Now()
		if err := dp.Reconcile(ctx, peers); err != nil {
			return nil, fmt.Errorf("no-op reconcile: %w", err)
		}
		out = append(out, ms(time.Since(start)))
		if c := dp.Status().LastReconcile; c.Total() != 0 {
			return nil, fmt.Errorf("no-op reconcile of %d peers wrote %+v", len(peers), c)
		}
	}
	return out, nil
}

// checkProgrammed makes sure the measured reconcile really installed every
// route, so a fast number is never an empty one.
func checkProgrammed(lab *netlab.Lab, n int) error {
	return lab.NS("vxb").Do(func() error {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: rtproto.VXLAN}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return err
		}
		if len(rs) != n {
			return fmt.Errorf("after programming %d peers the kernel holds %d vxlan routes", n, len(rs))
		}
		return nil
	})
}

// closeLogged runs a cleanup and reports (does not hide) its failure.
func closeLogged(log io.Writer, what string, fn func() error) {
	if err := fn(); err != nil {
		fmt.Fprintf(log, "    cleanup %s: %v\n", what, err)
	}
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func fmtList(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, ", ")
}

// The iperf lab: two nodes on one underlay link, a pod behind each (routed
// veth, pod MTU 1450), and a raw veth straight between the two pods.
const (
	iperfSeconds = 2
	iperfRounds  = 9
)

type iperfLab struct {
	lab *netlab.Lab
	log io.Writer
}

func vxlanIperf(ctx context.Context, log io.Writer) (Result, error) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return Result{}, errors.New("iperf3 not installed (apt-get install iperf3; `make deps` does it)")
	}
	pod := func(n, p, ip string) netlab.Link {
		return netlab.Link{A: netlab.Port{Host: n, Ifname: "pod0", Addr: "169.254.1.1/32"}, B: netlab.Port{Host: p, Ifname: "eth0", Addr: ip + "/32"}, MTU: 1500 - vxlan.Overhead}
	}
	lab, err := netlab.Build(netlab.Spec{
		Hosts: []netlab.Host{{Name: "ipA", Forward: true}, {Name: "ipB", Forward: true}, {Name: "ipPA"}, {Name: "ipPB"}},
		Links: []netlab.Link{
			{A: netlab.Port{Host: "ipA", Ifname: "eth0", Addr: "192.168.77.1/24"}, B: netlab.Port{Host: "ipB", Ifname: "eth0", Addr: "192.168.77.2/24"}},
			pod("ipA", "ipPA", "10.244.1.2"),
			pod("ipB", "ipPB", "10.244.2.2"),
			{A: netlab.Port{Host: "ipPA", Ifname: "raw", Addr: "172.30.0.1/30"}, B: netlab.Port{Host: "ipPB", Ifname: "raw", Addr: "172.30.0.2/30"}},
		},
	})
	if err != nil {
		return Result{}, fmt.Errorf("iperf lab: %w", err)
	}
	defer closeLogged(log, "vxlan iperf lab", lab.Close)
	l := &iperfLab{lab: lab, log: log}
	for _, c := range [][]string{
		{"ipA", "ip", "route", "add", "10.244.1.2/32", "dev", "pod0", "scope", "link"},
		{"ipB", "ip", "route", "add", "10.244.2.2/32", "dev", "pod0", "scope", "link"},
		{"ipPA", "ip", "route", "add", "169.254.1.1/32", "dev", "eth0", "scope", "link"},
		{"ipPA", "ip", "route", "add", "10.244.0.0/16", "via", "169.254.1.1", "dev", "eth0"},
		{"ipPB", "ip", "route", "add", "169.254.1.1/32", "dev", "eth0", "scope", "link"},
		{"ipPB", "ip", "route", "add", "10.244.0.0/16", "via", "169.254.1.1", "dev", "eth0"},
	} {
		if err := l.run(c[0], c[1:]...); err != nil {
			return Result{}, err
		}
	}

	// Rounds alternate which setup goes first, and each round's ratio is
	// taken between two runs seconds apart, so load from other work on the
	// machine hits both sides alike; the result is the median ratio.
	var strata, flannel, ratios []float64
	for round := 0; round < iperfRounds; round++ {
		var s, f float64
		var err error
		if round%2 == 0 {
			if s, err = l.measureStrata(ctx); err == nil {
				f, err = l.measureFlannel(ctx)
			}
		} else {
			if f, err = l.measureFlannel(ctx); err == nil {
				s, err = l.measureStrata(ctx)
			}
		}
		if err != nil {
			return Result{}, err
		}
		strata, flannel, ratios = append(strata, s), append(flannel, f), append(ratios, s/f)
	}
	veth, err := l.iperf(ctx, "172.30.0.2")
	if err != nil {
		return Result{}, fmt.Errorf("raw veth iperf: %w", err)
	}
	s, f, r := median(strata), median(flannel), median(ratios)
	fmt.Fprintf(log, "    iperf Gbit/s strata %v flannel-style %v raw veth %.2f; ratios %s\n", gbps(strata), gbps(flannel), veth/1e9, fmtList2(ratios))
	return New("vxlan.iperf_ratio_vs_flannel_style", r, "ratio", ">= 1.0",
		fmt.Sprintf("median of %d per-round ratios [%s], %ds iperf3 TCP pod to pod each, order alternating: strata median %.2f Gbit/s %v, flannel-style %.2f Gbit/s %v, raw veth %.2f Gbit/s; pod MTU 1450 over a 1500-byte veth underlay; strata on UDP 4789, flannel-style on 8472 (flannel's default)",
			iperfRounds, fmtList2(ratios), iperfSeconds, s/1e9, gbps(strata), f/1e9, gbps(flannel), veth/1e9)).
		WithBaseline("hand-built flannel-style VXLAN (ip link type vxlan nolearning + static fdb/neigh/onlink route), same namespaces", f), nil
}

func fmtList2(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.3f", x)
	}
	return strings.Join(parts, " ")
}

func gbps(xs []float64) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = fmt.Sprintf("%.2f", x/1e9)
	}
	return out
}

func (l *iperfLab) run(host string, argv ...string) error {
	full := l.lab.NS(host).Exec(argv...)
	out, err := exec.Command(full[0], full[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %s: %w: %s", host, strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// measureStrata programs both nodes with the Strata datapath, runs iperf3
// and removes the overlay again.
func (l *iperfLab) measureStrata(ctx context.Context) (float64, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	type side struct{ host, local, overlay, prefix string }
	a := side{"ipA", "192.168.77.1", "10.244.1.0", "10.244.1.0/24"}
	b := side{"ipB", "192.168.77.2", "10.244.2.0", "10.244.2.0/24"}
	var dps []*vxlan.Datapath
	defer func() {
		for _, dp := range dps {
			_ = dp.Close()
		}
	}()
	for _, pair := range [][2]side{{a, b}, {b, a}} {
		me, peer := pair[0], pair[1]
		var dp *vxlan.Datapath
		if err := l.lab.NS(me.host).Do(func() error {
			var err error
			dp, err = vxlan.New(vxlan.DeviceConfig{LocalIP: netip.MustParseAddr(me.local), OverlayIP: netip.MustParseAddr(me.overlay), UnderlayLink: "eth0"}, quiet)
			return err
		}); err != nil {
			return 0, err
		}
		dps = append(dps, dp)
		if err := dp.Reconcile(ctx, []vxlan.Peer{{Name: peer.host, UnderlayIP: netip.MustParseAddr(peer.local), OverlayIP: netip.MustParseAddr(peer.overlay), Prefixes: []netip.Prefix{netip.MustParsePrefix(peer.prefix)}}}); err != nil {
			return 0, err
		}
	}
	return l.iperf(ctx, "10.244.2.2")
}

// measureFlannel builds what flannel's vxlan backend builds, by hand with
// iproute2, runs iperf3 and tears it down.
func (l *iperfLab) measureFlannel(ctx context.Context) (float64, error) {
	type side struct{ host, local, overlay, mac string }
	a := side{"ipA", "192.168.77.1", "10.244.1.0", "0e:00:00:00:01:01"}
	b := side{"ipB", "192.168.77.2", "10.244.2.0", "0e:00:00:00:01:02"}
	defer func() {
		for _, s := range []side{a, b} {
			_ = l.run(s.host, "ip", "link", "del", "flannel.1")
		}
	}()
	for _, pair := range [][2]side{{a, b}, {b, a}} {
		me, peer := pair[0], pair[1]
		peerNet := strings.TrimSuffix(peer.overlay, ".0") + ".0/24"
		for _, c := range [][]string{
			{"ip", "link", "add", "flannel.1", "address", me.mac, "type", "vxlan", "id", "1", "local", me.local, "dev", "eth0", "dstport", "8472", "nolearning"},
			{"ip", "link", "set", "flannel.1", "mtu", "1450", "up"},
			{"ip", "addr", "add", me.overlay + "/32", "dev", "flannel.1"},
			{"ip", "neigh", "replace", peer.overlay, "lladdr", peer.mac, "dev", "flannel.1", "nud", "permanent"},
			{"bridge", "fdb", "replace", peer.mac, "dev", "flannel.1", "dst", peer.local, "self", "permanent"},
			{"ip", "route", "replace", peerNet, "via", peer.overlay, "dev", "flannel.1", "onlink"},
		} {
			if err := l.run(me.host, c...); err != nil {
				return 0, err
			}
		}
	}
	return l.iperf(ctx, "10.244.2.2")
}

// iperf runs iperf3 from pod A to a server in pod B and returns the
// received bits per second.
func (l *iperfLab) iperf(ctx context.Context, dst string) (float64, error) {
	bps, _, err := Iperf(ctx, l.lab.NS("ipPB"), l.lab.NS("ipPA"), dst, iperfSeconds)
	return bps, err
}
