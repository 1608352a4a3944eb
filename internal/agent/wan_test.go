package agent

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/strata-net/strata/topology"
	"github.com/strata-net/strata/wan"
)

func TestWANConfigValidateNamesTheFlag(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*WANConfig)
		flag string
	}{
		{func(c *WANConfig) { c.Setting = "maybe" }, "--wan="},
		{func(c *WANConfig) { c.Impl = "ebpf" }, "--wan-impl"},
		{func(c *WANConfig) { c.PublicEndpoint = netip.MustParseAddrPort("0.0.0.0:51871") }, "--public-endpoint"},
		{func(c *WANConfig) { c.Table = 254 }, "--wan-table"},
	} {
		c := Config{NodeName: "n1", GossipInsecure: true}
		c.Defaults()
		tc.mut(&c.WAN)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("err %v, want one naming %s", err, tc.flag)
		}
	}
	c := Config{NodeName: "n1", GossipInsecure: true}
	c.Defaults()
	if c.WAN.Port != wan.DefaultPort || c.WAN.Table == c.NativeTable || c.WAN.Setting == "" {
		t.Fatalf("WAN defaults: %+v", c.WAN)
	}
}

// Pods may fail over to the WAN, so with the WAN on they get no more than
// its device MTU (1500 − 80), and the VXLAN limit (− 50) still holds.
func TestWANPodMTU(t *testing.T) {
	for _, tc := range []struct {
		setting  string
		underlay int
		want     int
	}{{WANOff, 1500, 1450}, {WANAuto, 1500, 1420}, {WANOn, 9000, 1420}, {WANAuto, 1450, 1400}} {
		if got := wanPodMTU(tc.setting, tc.underlay); got != tc.want {
			t.Errorf("--wan=%s underlay %d: pod MTU %d, want %d", tc.setting, tc.underlay, got, tc.want)
		}
	}
}

// The lab's WAN facts through the real decider and the agent's conversion:
// every node's WireGuard peers are consistent with every other node's.
func TestWANProgramsOfTheLab(t *testing.T) {
	raw, err := os.ReadFile("../../topology/testdata/lab-wan.yaml")
	if err != nil {
		t.Fatal(err)
	}
	facts, err := topology.ParseFactsDoc(raw)
	if err != nil {
		t.Fatal(err)
	}
	d, err := topology.NewDecider(topology.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range facts.Nodes {
		if _, err := d.UpsertNode(f); err != nil {
			t.Fatal(err)
		}
	}
	plan := d.Plan()
	byNode := map[string]wan.Programming{}
	for _, f := range facts.Nodes {
		progs := wanPrograms(plan, plan.PeersOf(f.Name), nil)
		res := wan.PeersFor(wan.Self{Reachable: f.PublicEndpoint.IsValid()}, progs)
		if len(res.Errors) > 0 {
			t.Fatalf("%s: %v", f.Name, res.Errors)
		}
		byNode[f.Name] = res
	}
	peer := func(node, name string) (wan.Peer, bool) {
		for _, p := range byNode[node].Peers {
			if p.Name == name {
				return p, true
			}
		}
		return wan.Peer{}, false
	}
	// edge-a2 and edge-b1 are both behind NAT: neither is the other's
	// WireGuard peer; each routes the other's pods into its gateway's
	// tunnel, and that gateway has both as peers.
	if _, ok := peer("edge-a2", "edge-b1"); ok {
		t.Fatal("edge-a2 has edge-b1 as a WireGuard peer: neither can reach the other")
	}
	var relay string
	for _, pp := range plan.PeersOf("edge-a2") {
		if pp.Peer == "edge-b1" {
			relay = pp.Relay
		}
	}
	if relay == "" {
		t.Fatal("edge-a2 ↔ edge-b1 is not relayed in the lab's plan")
	}
	g, ok := peer("edge-a2", relay)
	if !ok || !containsPrefix(g.Routes, netip.MustParsePrefix("10.244.3.0/24")) {
		t.Fatalf("edge-a2's peer %s: %+v; want edge-b1's pod CIDR routed into its tunnel", relay, g)
	}
	for _, side := range []string{"edge-a2", "edge-b1"} {
		p, ok := peer(relay, side)
		if !ok || len(p.AllowedIPs) == 0 {
			t.Fatalf("gateway %s lacks %s as a WireGuard peer: %+v", relay, side, byNode[relay].Peers)
		}
		if p.Keepalive != wan.NoKeepalive {
			t.Errorf("gateway %s keeps %s alive: a reachable node leaves that to the NAT'd side", relay, side)
		}
	}
	// Every WireGuard peer of every node also has that node as its peer
	// (a session needs both ends), and the NAT'd side sends keepalives.
	for node, res := range byNode {
		for _, p := range res.Peers {
			back, ok := peer(p.Name, node)
			if !ok {
				t.Errorf("%s has %s as a WireGuard peer, but not the other way round", node, p.Name)
				continue
			}
			if !p.Endpoint.IsValid() && !back.Endpoint.IsValid() {
				t.Errorf("%s ↔ %s: neither knows where to send", node, p.Name)
			}
		}
	}
}

func containsPrefix(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}
