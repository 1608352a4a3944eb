package agent

import (
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"

	"github.com/strata-net/strata/topology"
)

func TestNodeAllocation(t *testing.T) {
	for _, c := range []struct {
		name string
		spec corev1.NodeSpec
		want []netip.Prefix
	}{
		{"podCIDRs", corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}}, []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}},
		{"old cluster: podCIDR only", corev1.NodeSpec{PodCIDR: "10.244.2.0/24"}, []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}},
		{"none", corev1.NodeSpec{}, nil},
		// A malformed allocation is no allocation: never a wider one.
		{"host bits", corev1.NodeSpec{PodCIDRs: []string{"10.244.1.7/24"}}, nil},
		{"garbage", corev1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24", "nope"}}, nil},
	} {
		if got := nodeAllocation(&corev1.Node{Spec: c.spec}); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

// Gossip never introduces a node, never speaks while the API server
// answers, and forgets a deleted node.
func TestGossipOnlyForKnownNodesWhileOffline(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := &Agent{self: topology.NodeFacts{Name: "self"}, m: newMetrics(reg)}
	d, err := topology.NewDecider(topology.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	a.decider = d
	a.apiNodes.Add("api-node")
	a.cachedNodes.Add("cached-node")

	a.offline.Store(false)
	for _, n := range []string{"api-node", "cached-node", "stranger", "self"} {
		if a.acceptGossip(n) {
			t.Errorf("online: gossip about %s accepted; the API server's facts win", n)
		}
	}
	a.offline.Store(true)
	for n, want := range map[string]bool{"api-node": true, "cached-node": true, "stranger": false, "self": false} {
		if got := a.acceptGossip(n); got != want {
			t.Errorf("offline: gossip about %s accepted = %v, want %v", n, got, want)
		}
	}
	a.forgetNode("cached-node")
	if a.acceptGossip("cached-node") {
		t.Error("gossip about a deleted node accepted")
	}
	if got := counterValue(t, reg, "strata_gossip_unknown_node_facts_total"); got != 3 {
		t.Errorf("strata_gossip_unknown_node_facts_total = %v, want 3 (stranger twice, then the deleted node)", got)
	}
}

// The per-node authority survives a restart without the API server.
func TestAuthorityCacheRoundTrip(t *testing.T) {
	dir := t.TempDir()
	a := &Agent{cfg: Config{StateDir: dir}}
	d, err := topology.NewDecider(topology.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	a.decider = d
	joined := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	d.SetAuthority(a.baseAuthority(underlay{subnets: []netip.Prefix{netip.MustParsePrefix("192.168.10.11/24")}}))
	d.SetNodeAuthority("edge-a1", []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, joined)
	if err := a.saveAuthority(); err != nil {
		t.Fatal(err)
	}
	got, err := a.loadAuthority()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Allocations["edge-a1"], []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}) || !got.Joined["edge-a1"].Equal(joined) {
		t.Fatalf("cached authority = %+v", got)
	}
	if r := d.Authority().Reserved; !slices.Equal(r, []netip.Prefix{netip.MustParsePrefix("192.168.10.0/24")}) {
		t.Errorf("reserved = %v, want the node's own underlay subnet", r)
	}
	if err := os.WriteFile(a.authorityPath(), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.loadAuthority(); err == nil {
		t.Error("corrupt authority cache read without an error")
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
