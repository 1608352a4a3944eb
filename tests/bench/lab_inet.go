package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/lab"
	"github.com/strata-net/strata/wan"
)

// The lab with a real internet (issue 14): failover across a silent
// leased-line cut, the loss of one WAN gateway, and the WAN's throughput
// beside a plain tunnel of the same WireGuard implementation between the
// same two node namespaces. Until the agent has its WAN these measure its
// absence, and say so in detail; the targets stay.

func init() {
	Register(Area{Name: "lab", Run: runLabInet, IDs: []string{"lab.failover_silent_outage_ms", "lab.gateway_failover_outage_ms",
		"lab.wan_throughput_ratio_vs_wireguard"}})
}

// inetSpecPath is the description with a real internet: its own file while
// lab.yaml keeps the old shape, lab.yaml itself once that is the default.
func inetSpecPath() string {
	if _, err := os.Stat("tests/lab/testdata/inet.yaml"); err == nil {
		return "tests/lab/testdata/inet.yaml"
	}
	return "tests/lab/lab.yaml"
}

const (
	inetProbe        = 10 * time.Millisecond
	wanIperfRounds   = 3
	wanIperfSeconds  = 3
	baselineWGDevice = "stbench-wg"
	baselineWGPort   = 51881
	baselineWGTable  = 4281
	baselineWGRule   = 90
)

func runLabInet(ctx context.Context, log io.Writer) ([]Result, error) {
	if os.Getenv("STRATA_BIN") == "" {
		wd, _ := os.Getwd()
		_ = os.Setenv("STRATA_BIN", filepath.Join(wd, "_out", "bin"))
	}
	spec, err := lab.Load(inetSpecPath())
	if err != nil {
		return nil, err
	}
	l := lab.Open(spec, lab.Options{ToolsBin: testutil.ToolsBin(), Progress: log})
	_ = l.Down()
	defer func() { _ = l.Down() }()
	if err := l.Up(ctx); err != nil {
		return nil, err
	}
	pods, err := l.Pods()
	if err != nil {
		return nil, err
	}
	on := func(node string) lab.PodInfo { p, _ := lab.PodOn(pods, node); return p }
	cloud1, edgeA1, edgeA2, edgeB1 := on("cloud-1"), on("edge-a1"), on("edge-a2"), on("edge-b1")
	// reaches waits (up to 60 s) until a pair answers; a pair that never
	// does is measured anyway, and the detail says so.
	reaches := func(from, to lab.PodInfo) string {
		loss := 100
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
			if loss, _ = l.Ping(ctx, from, to.IP, 3, 100*time.Millisecond); loss == 0 {
				return ""
			}
		}
		return fmt.Sprintf("; the pair did not reach in 60 s before the measurement (%d%% loss): no working WAN path", loss)
	}
	var rs []Result

	// A silent cut: carrier stays up, BGP holds until its hold time.
	before := reaches(cloud1, edgeA1)
	st, err := l.StreamAround(ctx, cloud1, edgeA1.IP, 600, inetProbe, func() error { return l.FailSilent("leased-line") })
	if err != nil {
		return rs, err
	}
	rs = append(rs, New("lab.failover_silent_outage_ms", float64(time.Duration(st.Lost)*inetProbe)/float64(time.Millisecond), "ms", "<= 1000",
		fmt.Sprintf("%d of %d probes lost, 10 ms apart, cloud-1 pod → edge-a1 pod, leased line silently cut (nftables drop, carrier up) 1 s into the stream, lab with a real internet%s", st.Lost, st.Sent, before)))
	time.Sleep(10 * time.Second) // BGP's hold timer expires: heal restores a session
	if err := l.Heal("leased-line"); err != nil {
		return rs, err
	}

	// One gateway of the VPC pool killed, under a relayed pair (edge-a2 and
	// edge-b1 have no public address). Each gateway in turn: the one that
	// carries the pair is among them; the value is the worse outage.
	_ = reaches(cloud1, edgeA1) // healed
	before = reaches(edgeA2, edgeB1)
	worst, detail := 0.0, ""
	for _, gw := range []string{"cloud-1", "cloud-2"} {
		st, err := l.StreamAround(ctx, edgeA2, edgeB1.IP, 500, inetProbe, func() error { l.KillAgent(gw); return nil })
		if err != nil {
			return rs, err
		}
		ms := float64(time.Duration(st.Lost)*inetProbe) / float64(time.Millisecond)
		worst = max(worst, ms)
		detail += fmt.Sprintf("%s killed: %d of %d lost; ", gw, st.Lost, st.Sent)
		if err := l.StartAgent(ctx, gw); err != nil {
			return rs, err
		}
		_ = reaches(edgeA2, edgeB1)
	}
	rs = append(rs, New("lab.gateway_failover_outage_ms", worst, "ms", "<= 1000",
		fmt.Sprintf("%s10 ms probes edge-a2 pod → edge-b1 pod (relayed through a VPC gateway), agent SIGKILLed 1 s into the stream%s", detail, before)))

	r, err := wanThroughput(ctx, log, l, cloud1, edgeB1)
	if err != nil {
		return rs, err
	}
	return append(rs, r), nil
}

// wanThroughput compares iperf3 between a cloud-1 pod and an edge-b1 pod
// (across the internet, encrypted by the WAN) with iperf3 through a plain
// tunnel of the same WireGuard implementation between the two node
// namespaces, set up here, round by round.
func wanThroughput(ctx context.Context, log io.Writer, l *lab.Lab, from, to lab.PodInfo) (Result, error) {
	base, cleanup, err := plainWireGuard(l, from.Node, to.Node, netip.MustParseAddrPort(fmt.Sprintf("203.0.113.11:%d", baselineWGPort)))
	if err != nil {
		return Result{}, fmt.Errorf("plain WireGuard baseline: %w", err)
	}
	defer closeLogged(log, "plain WireGuard baseline", cleanup)
	pod := &labIperfPath{name: "cloud-1→edge-b1 pods (WAN)", client: l.PodNS(from), server: l.PodNS(to), dst: to.IP}
	plain := &labIperfPath{name: "cloud-1→edge-b1 plain " + base.impl, client: l.NodeNS(from.Node), server: l.NodeNS(to.Node), dst: base.dst}
	var ratios []float64
	podErr := ""
	for round := range wanIperfRounds {
		paths := []*labIperfPath{plain, pod}
		if round%2 == 1 {
			paths = []*labIperfPath{pod, plain}
		}
		for _, p := range paths {
			if p == pod && podErr != "" {
				continue
			}
			bps, _, err := Iperf(ctx, p.server, p.client, p.dst, wanIperfSeconds)
			if err != nil && p == pod {
				podErr = err.Error()
				continue
			}
			if err != nil {
				return Result{}, fmt.Errorf("iperf3 %s: %w", p.name, err)
			}
			p.bps = append(p.bps, bps)
			fmt.Fprintf(log, "    round %d %-34s %.2f Gbit/s\n", round, p.name, bps/1e9)
		}
		if podErr == "" {
			ratios = append(ratios, pod.bps[round]/plain.bps[round])
		}
	}
	value, detail := 0.0, ""
	if podErr != "" {
		detail = fmt.Sprintf("the pod pair did not carry iperf3 (%s): no WAN path; plain tunnel %s", podErr, plain)
	} else {
		value = median(ratios)
		detail = fmt.Sprintf("median of %d per-round ratios [%s], iperf3 TCP %ds, order alternating; %s; %s (%s WireGuard between the node namespaces, MTU %d, through the same NATs)",
			len(ratios), fmtList2(ratios), wanIperfSeconds, pod, plain, base.impl, wan.DefaultMTU)
	}
	return New("lab.wan_throughput_ratio_vs_wireguard", value, "ratio", ">= 0.9", detail).
		WithBaseline("plain "+base.impl+" WireGuard tunnel between the same two node namespaces", medianOr0(plain.bps)/1e9), nil
}

func medianOr0(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return median(xs)
}

type plainTunnel struct {
	impl string // the WireGuard implementation both ends run
	dst  string // the server end's tunnel address
}

// plainWireGuard builds a WireGuard tunnel with wan.Transport (the same
// implementation the agent chooses) between two node namespaces: the server
// end b is behind NAT and dials a's public endpoint, as the WAN does. Its
// routes live in their own table with a rule for the tunnel's /30 only, so
// they meet none of the agent's.
func plainWireGuard(l *lab.Lab, a, b string, aPublic netip.AddrPort) (plainTunnel, func() error, error) {
	addrA, addrB := netip.MustParseAddr("172.30.9.1"), netip.MustParseAddr("172.30.9.2")
	tunnel := netip.MustParsePrefix("172.30.9.0/30")
	dir, err := os.MkdirTemp("", "strata-bench-wg")
	if err != nil {
		return plainTunnel{}, nil, err
	}
	var ends []*wan.Transport
	var nss []nsutil.NS
	cleanup := func() error {
		var errs []error
		for i, t := range ends {
			errs = append(errs, t.Close())
			errs = append(errs, nss[i].Do(func() error {
				if link, err := netlink.LinkByName(baselineWGDevice); err == nil {
					_ = netlink.LinkDel(link)
				}
				rule := netlink.NewRule()
				rule.Dst, rule.Table, rule.Priority = prefixNet(tunnel), baselineWGTable, baselineWGRule
				_ = netlink.RuleDel(rule) // absent when setup failed before adding it
				return nil
			}))
		}
		errs = append(errs, os.RemoveAll(dir))
		return errors.Join(errs...)
	}
	mk := func(node string, self netip.Addr) (*wan.Transport, error) {
		ns := l.NodeNS(node)
		var t *wan.Transport
		err := ns.Do(func() error {
			var err error
			t, err = wan.New(wan.Config{Name: baselineWGDevice, Port: baselineWGPort, StateDir: filepath.Join(dir, node),
				Source: self, Table: baselineWGTable})
			if err != nil {
				return err
			}
			ends, nss = append(ends, t), append(nss, ns)
			link, err := netlink.LinkByName(baselineWGDevice)
			if err != nil {
				return err
			}
			if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(self, 32))}); err != nil {
				return err
			}
			rule := netlink.NewRule()
			rule.Dst, rule.Table, rule.Priority = prefixNet(tunnel), baselineWGTable, baselineWGRule
			return netlink.RuleAdd(rule)
		})
		return t, err
	}
	for _, d := range []string{filepath.Join(dir, a), filepath.Join(dir, b)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return plainTunnel{}, cleanup, err
		}
	}
	ta, err := mk(a, addrA)
	if err != nil {
		return plainTunnel{}, cleanup, fmt.Errorf("%s end: %w", a, err)
	}
	tb, err := mk(b, addrB)
	if err != nil {
		return plainTunnel{}, cleanup, fmt.Errorf("%s end: %w", b, err)
	}
	if err := ta.Reconcile([]wan.Peer{{Name: b, PublicKey: tb.PublicKey(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(addrB, 32)},
		Routes: []netip.Prefix{netip.PrefixFrom(addrB, 32)}}}); err != nil {
		return plainTunnel{}, cleanup, err
	}
	if err := tb.Reconcile([]wan.Peer{{Name: a, PublicKey: ta.PublicKey(), Endpoint: aPublic, AllowedIPs: []netip.Prefix{netip.PrefixFrom(addrA, 32)},
		Routes: []netip.Prefix{netip.PrefixFrom(addrA, 32)}}}); err != nil {
		return plainTunnel{}, cleanup, err
	}
	// b speaks first (it is behind NAT), so a learns where b is.
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := l.NodeNS(b).Do(func() error {
			c, err := net.DialTimeout("udp4", net.JoinHostPort(addrA.String(), "9"), time.Second)
			if err == nil {
				_, _ = c.Write([]byte("hello"))
				_ = c.Close()
			}
			return err
		})
		if _, ok := ta.EndpointOf(addrB); ok && err == nil {
			break
		}
		if time.Now().After(deadline) {
			return plainTunnel{}, cleanup, fmt.Errorf("no handshake from %s to %s's %s in 15s", b, a, aPublic)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return plainTunnel{impl: ta.Impl(), dst: addrB.String()}, cleanup, nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
