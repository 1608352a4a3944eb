// Package probelab runs the DESIGN.md §6 shape in throw-away namespaces with
// one real prober (and one topology.Decider fed by it) per node: two cloud
// nodes on a VPC switch, two IDC-A nodes behind a leased line, one site-B
// node reachable only over the WAN. Pod-side probe addresses are routed over
// the leased line only; node IPs over the WAN only, as in the lab. Cutting
// the leased line must move cloud↔idc-a pairs to vxlan; healing must bring
// them back after the hold-down. The privileged test and the
// topology.failover_detect_ms benchmark both drive it.
package probelab

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/tests/harness/netlab"
	"github.com/strata-net/strata/topology"
	"github.com/strata-net/strata/topology/probe"
)

// Options tune the run.
type Options struct {
	HoldDown time.Duration // default 2 s
	// Gossip probe interval; the test uses a relaxed value so CPU
	// contention never fakes a dead node. Default 500 ms.
	GossipProbeInterval time.Duration
	Logf                func(format string, args ...any)
}

type node struct {
	facts  topology.NodeFacts
	dev    string // underlay interface
	prober *probe.Prober
	d      *topology.Decider

	mu      sync.Mutex
	watch   []([2]string)
	want    topology.Path
	reached time.Time
}

// Lab is a running failover lab.
type Lab struct {
	net   *netlab.Lab
	nodes map[string]*node
	order []string
	opts  Options
}

// Affected are the ordered pairs the leased line carries.
var Affected = [][2]string{
	{"cloud-1", "edge-a1"}, {"cloud-1", "edge-a2"}, {"cloud-2", "edge-a1"}, {"cloud-2", "edge-a2"},
	{"edge-a1", "cloud-1"}, {"edge-a1", "cloud-2"}, {"edge-a2", "cloud-1"}, {"edge-a2", "cloud-2"},
}

// Unaffected pairs must stay on their path throughout.
var Unaffected = map[[2]string]topology.Path{
	{"cloud-1", "cloud-2"}: topology.PathNative, {"edge-a1", "edge-a2"}: topology.PathNative,
	{"cloud-1", "edge-b1"}: topology.PathVXLAN, {"edge-a2", "edge-b1"}: topology.PathVXLAN,
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }

func labNodes() []topology.NodeFacts {
	mk := func(name string, loc topology.Location, pool string, ic topology.Interconnect, under, pod, probeIP string, bgp int, mac string) topology.NodeFacts {
		f := topology.NodeFacts{Name: name, Location: loc, Pool: pool, Interconnect: ic, UnderlayIPs: []netip.Addr{mustAddr(under)},
			VTEPMAC: mac, VTEPPort: 4789, ProbeIP: mustAddr(probeIP), Capabilities: topology.Capabilities{BGPPeers: bgp}}
		if loc == topology.LocationCloud {
			f.PodPrefixes = []netip.Prefix{mustPrefix(pod)}
			f.Capabilities.ENI, f.Capabilities.ENIQuota = true, 4
		} else {
			f.PodCIDR = mustPrefix(pod)
		}
		return f
	}
	return []topology.NodeFacts{
		mk("cloud-1", topology.LocationCloud, "vpc", "", "10.0.1.11", "10.0.64.16/28", "10.0.64.16", 0, "02:00:0a:00:01:0b"),
		mk("cloud-2", topology.LocationCloud, "vpc", "", "10.0.1.12", "10.0.64.32/28", "10.0.64.32", 0, "02:00:0a:00:01:0c"),
		mk("edge-a1", topology.LocationIDC, "idc-a", topology.InterconnectLeasedLine, "192.168.10.11", "10.244.1.0/24", "10.244.1.1", 1, "02:00:c0:a8:0a:0b"),
		mk("edge-a2", topology.LocationIDC, "idc-a", topology.InterconnectLeasedLine, "192.168.10.12", "10.244.2.0/24", "10.244.2.1", 1, "02:00:c0:a8:0a:0c"),
		mk("edge-b1", topology.LocationIDC, "site-b", topology.InterconnectInternet, "192.168.30.11", "10.244.3.0/24", "10.244.3.1", 0, "02:00:c0:a8:1e:0b"),
	}
}

func spec() netlab.Spec {
	r := func(dst, via string) netlab.Route { return netlab.Route{Dst: dst, Via: via} }
	return netlab.Spec{
		Hosts: []netlab.Host{
			{Name: "cloud-1", Routes: []netlab.Route{r("default", "10.0.1.1")}},
			{Name: "cloud-2", Routes: []netlab.Route{r("default", "10.0.1.1")}},
			{Name: "edge-a1", Routes: []netlab.Route{r("default", "192.168.10.1")}},
			{Name: "edge-a2", Routes: []netlab.Route{r("default", "192.168.10.1")}},
			{Name: "edge-b1", Routes: []netlab.Route{r("default", "192.168.30.1")}},
			{Name: "vpc", Forward: true, Routes: append(vpcLeasedRoutes(), []netlab.Route{
				r("10.0.64.16/28", "10.0.1.11"), r("10.0.64.32/28", "10.0.1.12"),
				r("192.168.10.0/24", "100.64.0.2"), r("192.168.30.0/24", "100.64.0.2")}...)},
			{Name: "idc-a", Forward: true, Routes: append(idcLeasedRoutes(), []netlab.Route{
				r("10.244.1.0/24", "192.168.10.11"), r("10.244.2.0/24", "192.168.10.12"),
				r("10.0.1.0/24", "100.64.0.6"), r("192.168.30.0/24", "100.64.0.6")}...)},
			{Name: "site-b", Forward: true, Routes: []netlab.Route{r("10.244.3.0/24", "192.168.30.11"), r("default", "100.64.0.10")}},
			// The WAN routes node subnets only, never pod CIDRs.
			{Name: "inet", Forward: true, Routes: []netlab.Route{
				r("10.0.1.0/24", "100.64.0.1"), r("192.168.10.0/24", "100.64.0.5"), r("192.168.30.0/24", "100.64.0.9")}},
		},
		Links: []netlab.Link{
			{A: netlab.Port{Host: "vpc", Ifname: "ll", Addr: "172.31.0.1/30"}, B: netlab.Port{Host: "idc-a", Ifname: "ll", Addr: "172.31.0.2/30"}},
			{A: netlab.Port{Host: "vpc", Ifname: "wan", Addr: "100.64.0.1/30"}, B: netlab.Port{Host: "inet", Ifname: "vpc", Addr: "100.64.0.2/30"}},
			{A: netlab.Port{Host: "idc-a", Ifname: "wan", Addr: "100.64.0.5/30"}, B: netlab.Port{Host: "inet", Ifname: "idca", Addr: "100.64.0.6/30"}},
			{A: netlab.Port{Host: "site-b", Ifname: "wan", Addr: "100.64.0.9/30"}, B: netlab.Port{Host: "inet", Ifname: "siteb", Addr: "100.64.0.10/30"}},
			{A: netlab.Port{Host: "edge-b1", Ifname: "eth0", Addr: "192.168.30.11/24"}, B: netlab.Port{Host: "site-b", Ifname: "lan", Addr: "192.168.30.1/24"}},
		},
		Switches: []netlab.Switch{
			{Name: "vpcsw", Ports: []netlab.Port{
				{Host: "vpc", Ifname: "lan", Addr: "10.0.1.1/24"},
				{Host: "cloud-1", Ifname: "eth0", Addr: "10.0.1.11/24"},
				{Host: "cloud-2", Ifname: "eth0", Addr: "10.0.1.12/24"}}},
			{Name: "idcsw", Ports: []netlab.Port{
				{Host: "idc-a", Ifname: "lan", Addr: "192.168.10.1/24"},
				{Host: "edge-a1", Ifname: "eth0", Addr: "192.168.10.11/24"},
				{Host: "edge-a2", Ifname: "eth0", Addr: "192.168.10.12/24"}}},
		},
	}
}

// Pod routes across the leased line: the only way pod addresses meet.
func vpcLeasedRoutes() []netlab.Route {
	return []netlab.Route{{Dst: "10.244.1.0/24", Via: "172.31.0.2"}, {Dst: "10.244.2.0/24", Via: "172.31.0.2"}}
}
func idcLeasedRoutes() []netlab.Route {
	return []netlab.Route{{Dst: "10.0.64.0/20", Via: "172.31.0.1"}}
}

// Start builds the network and starts one encrypted prober and Decider per
// node. Close it, even on error paths (a nil Lab needs no Close).
func Start(opts Options) (*Lab, error) {
	if opts.HoldDown == 0 {
		opts.HoldDown = 2 * time.Second
	}
	if opts.GossipProbeInterval == 0 {
		opts.GossipProbeInterval = 500 * time.Millisecond
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	nl, err := netlab.Build(spec())
	if err != nil {
		return nil, err
	}
	l := &Lab{net: nl, nodes: map[string]*node{}, opts: opts}
	if err := l.start(); err != nil {
		_ = l.Close()
		return nil, err
	}
	return l, nil
}

func (l *Lab) start() error {
	var key [32]byte
	_, _ = rand.Read(key[:])
	kr, err := probe.ParseKeyring([]byte(base64.StdEncoding.EncodeToString(key[:])))
	if err != nil {
		return err
	}
	cfg := topology.Config{FailThreshold: 3, HoldDown: l.opts.HoldDown}
	for _, f := range labNodes() {
		n := &node{facts: f, dev: "eth0"}
		ns := l.net.NS(f.Name)
		if err := ns.Do(func() error {
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return err
			}
			return netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: f.ProbeIP.AsSlice(), Mask: net.CIDRMask(32, 32)}})
		}); err != nil {
			return fmt.Errorf("probe address on %s: %w", f.Name, err)
		}
		if n.d, err = topology.NewDecider(cfg); err != nil {
			return err
		}
		if _, err := n.d.SetNodes([]topology.NodeFacts{f}); err != nil {
			return err
		}
		nsCopy := ns
		n.prober, err = probe.Start(probe.Config{
			Facts: f, BindAddr: f.Underlay().String(), Keyring: kr, NS: &nsCopy,
			GossipProbeInterval: l.opts.GossipProbeInterval, GossipProbeTimeout: l.opts.GossipProbeInterval / 2,
			OnProbe: n.observe,
			OnFacts: func(pf topology.NodeFacts) {
				if _, err := n.d.UpsertNode(pf); err != nil {
					l.opts.Logf("%s: facts of %s rejected: %v", f.Name, pf.Name, err)
				}
				n.check()
			},
		})
		if err != nil {
			return fmt.Errorf("prober on %s: %w", f.Name, err)
		}
		l.nodes[f.Name] = n
		l.order = append(l.order, f.Name)
	}
	seed := l.nodes["cloud-1"].prober.GossipAddr()
	for _, name := range l.order[1:] {
		if _, err := l.nodes[name].prober.Join([]string{seed}); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func (n *node) observe(r topology.ProbeResult) {
	if _, changed := n.d.Observe(r); changed {
		n.check()
	}
}

// check records the first moment every watched pair has the wanted path.
func (n *node) check() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.want == "" || !n.reached.IsZero() {
		return
	}
	p := n.d.Plan()
	for _, w := range n.watch {
		if pp, ok := p.Path(w[0], w[1]); !ok || pp.Path != n.want {
			return
		}
	}
	n.reached = time.Now()
}

func (l *Lab) arm(want topology.Path) {
	for _, n := range l.nodes {
		n.mu.Lock()
		n.watch = nil
		for _, a := range Affected {
			if a[0] == n.facts.Name {
				n.watch = append(n.watch, a)
			}
		}
		n.want, n.reached = want, time.Time{}
		n.mu.Unlock()
		n.check()
	}
}

// Plan is the plan node currently holds.
func (l *Lab) Plan(node string) *topology.Plan { return l.nodes[node].d.Plan() }

// WaitSteady waits until every node knows every other and all affected
// pairs are native.
func (l *Lab) WaitSteady(ctx context.Context) error {
	l.arm(topology.PathNative)
	return l.wait(ctx, func() error {
		for _, n := range l.nodes {
			if got := n.d.Plan().Len(); got != len(l.nodes) {
				return fmt.Errorf("%s knows %d of %d nodes", n.facts.Name, got, len(l.nodes))
			}
		}
		_, err := l.reached()
		return err
	})
}

// reached returns the latest time a watching node reached its target.
func (l *Lab) reached() (time.Time, error) {
	var last time.Time
	for _, name := range l.order {
		n := l.nodes[name]
		n.mu.Lock()
		r, watching := n.reached, len(n.watch) > 0
		n.mu.Unlock()
		if !watching {
			continue
		}
		if r.IsZero() {
			return time.Time{}, fmt.Errorf("%s has not reached %s for its leased-line pairs", name, n.want)
		}
		if r.After(last) {
			last = r
		}
	}
	return last, nil
}

func (l *Lab) wait(ctx context.Context, cond func() error) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (l *Lab) setLeasedLine(up bool) error {
	return l.net.NS("vpc").Do(func() error {
		link, err := netlink.LinkByName("ll")
		if err != nil {
			return err
		}
		if !up {
			return netlink.LinkSetDown(link)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return err
		}
		// Taking a link down drops its routes: put the pod routes back.
		for _, r := range vpcLeasedRoutes() {
			if err := netlab.AddRoute(r); err != nil {
				return err
			}
		}
		return nil
	})
}

// Cut takes the leased line down and returns how long until every node saw
// all its leased-line pairs move to vxlan.
func (l *Lab) Cut(ctx context.Context) (time.Duration, error) {
	l.arm(topology.PathVXLAN)
	at := time.Now()
	if err := l.setLeasedLine(false); err != nil {
		return 0, fmt.Errorf("cut leased line: %w", err)
	}
	if err := l.wait(ctx, func() error { _, err := l.reached(); return err }); err != nil {
		return 0, err
	}
	last, _ := l.reached()
	return last.Sub(at), nil
}

// Heal brings the leased line back and returns how long until every node
// moved its leased-line pairs back to native (hold-down included).
func (l *Lab) Heal(ctx context.Context) (time.Duration, error) {
	l.arm(topology.PathNative)
	at := time.Now()
	if err := l.setLeasedLine(true); err != nil {
		return 0, fmt.Errorf("heal leased line: %w", err)
	}
	if err := l.wait(ctx, func() error { _, err := l.reached(); return err }); err != nil {
		return 0, err
	}
	last, _ := l.reached()
	return last.Sub(at), nil
}

// Nodes lists the node names.
func (l *Lab) Nodes() []string { return append([]string(nil), l.order...) }

// NS returns a node's namespace.
func (l *Lab) NS(name string) nsutil.NS { return l.net.NS(name) }

// Close stops the probers and removes the namespaces.
func (l *Lab) Close() error {
	for _, n := range l.nodes {
		_ = n.prober.Close()
	}
	return l.net.Close()
}
