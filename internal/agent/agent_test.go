package agent

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/topology"
)

func TestConfigValidateNamesTheFlag(t *testing.T) {
	c := Config{}
	c.Defaults()
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "--node-name") || !strings.Contains(err.Error(), "--gossip-key-file") {
		t.Fatalf("empty config: %v; want errors naming --node-name and --gossip-key-file", err)
	}
	c.NodeName, c.GossipInsecure = "n1", true
	if err := c.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	// VNI and port stay 0: the node's NodePool, then the default, fill them
	// at start (applyPool).
	if c.IPAMDir != "/run/strata" || c.VXLANPort != 0 || c.VNI != 0 || c.ProbeMark == 0 {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

type ownedRole struct {
	role.Role
	owned []netip.Prefix
}

func (r ownedRole) OwnedPrefixes() []netip.Prefix { return r.owned }

func TestOwnedPrefixesAddTheProbeAddressWhenUncovered(t *testing.T) {
	p := netip.MustParsePrefix
	cases := []struct {
		name  string
		self  topology.NodeFacts
		owned []netip.Prefix
		want  []netip.Prefix
	}{
		{"edge: the CIDR covers the probe address",
			topology.NodeFacts{PodCIDR: p("10.244.1.0/24"), ProbeIP: netip.MustParseAddr("10.244.1.1")},
			[]netip.Prefix{p("10.244.1.0/24")}, nil},
		{"cloud: per-pod /32s plus the reserved probe address",
			topology.NodeFacts{ProbeIP: netip.MustParseAddr("10.0.64.9")},
			[]netip.Prefix{p("10.0.64.7/32"), p("10.0.64.3/32")},
			[]netip.Prefix{p("10.0.64.3/32"), p("10.0.64.7/32"), p("10.0.64.9/32")}},
	}
	for _, c := range cases {
		a := &Agent{role: ownedRole{owned: c.owned}}
		if got := a.ownedPrefixes(c.self); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

func TestNativeNextHopsOnlyOnLink(t *testing.T) {
	n := &nativeRoutes{underlay: underlay{subnets: []netip.Prefix{netip.MustParsePrefix("192.168.10.0/24")}}}
	if !n.onLink(netip.MustParseAddr("192.168.10.12")) {
		t.Error("a peer on the underlay subnet must be on-link")
	}
	if n.onLink(netip.MustParseAddr("10.0.1.11")) {
		t.Error("a peer behind a router must not get a native route from this node")
	}
}

func TestPostNeverBlocks(t *testing.T) {
	a, err := New(Config{NodeName: "n1", GossipInsecure: true}, Roles{})
	if err != nil {
		t.Fatal(err)
	}
	for range cap(a.events) + 10 {
		a.post(func() {})
	}
	a.drainEvents()
}
