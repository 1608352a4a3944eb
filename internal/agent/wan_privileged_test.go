//go:build privileged

package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/testutil"
)

// TestPrivilegedWANRoutesWinOverBGPAndEndpointsAvoidTheLine: during a silent
// leased-line cut BGP still holds its learned route (proto 202, main) for a
// peer's pods; once the plan moves the pair to the WAN, its route in the WAN
// table wins (rule 95), and BGP's route is still there for the way back.
// The tunnel's own packets (marked) reach the peer's public endpoint by the
// default route even while BGP has a route covering that address.
func TestPrivilegedWANRoutesWinOverBGPAndEndpointsAvoidTheLine(t *testing.T) {
	testutil.RequireRoot(t)
	n, err := nsutil.Create(nsutil.OwnedName("wrt"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(n.Name) })
	sh := func(args ...string) string { t.Helper(); return testutil.Run(t, n.Exec(args...)...) }
	// ll0: the leased line (BGP's next hop); up0: the internet uplink
	// (default route); wan0 stands for strata-wan (no dummy module here:
	// veth pairs with their other ends in the same namespace).
	for _, l := range []string{"ll0", "up0", "wan0"} {
		sh("ip", "link", "add", l, "type", "veth", "peer", "name", l+"p")
		sh("ip", "link", "set", l+"p", "up")
	}
	for _, l := range []string{"ll0", "up0", "wan0", "lo"} {
		sh("ip", "link", "set", l, "up")
	}
	sh("ip", "addr", "add", "172.31.0.2/30", "dev", "ll0")
	sh("ip", "addr", "add", "192.168.10.11/24", "dev", "up0")
	sh("ip", "route", "add", "default", "via", "192.168.10.1")
	// BGP's learned routes: the peer's pods, and (a bad announcement) the
	// public range the peer's endpoint is in.
	sh("ip", "route", "add", "10.0.64.16/28", "via", "172.31.0.1", "proto", "202")
	sh("ip", "route", "add", "203.0.113.0/24", "via", "172.31.0.1", "proto", "202")

	c := Config{NodeName: "n", GossipInsecure: true}
	c.Defaults()
	nr := &nativeRoutes{table: c.NativeTable, mark: c.ProbeMark,
		underlay: underlay{ip: netip.MustParseAddr("192.168.10.11"), gw: netip.MustParseAddr("192.168.10.1")}}
	if err := n.Do(func() error {
		l, err := netlink.LinkByName("up0")
		if err != nil {
			return err
		}
		nr.underlay.idx = l.Attrs().Index
		if err := nr.setupProbePath(); err != nil {
			return err
		}
		return ensureWANRule(c.WAN.Table)
	}); err != nil {
		t.Fatal(err)
	}
	get := func(args ...string) string {
		t.Helper()
		return sh(append([]string{"ip", "-4", "route", "get"}, args...)...)
	}
	if out := get("10.0.64.17"); !strings.Contains(out, "dev ll0") {
		t.Fatalf("before the failover the pods go by BGP's route: %s", out)
	}
	// The plan moves the pair to the WAN: the transport puts the route
	// into the WAN table (wan.Config.Table).
	sh("ip", "route", "add", "10.0.64.16/28", "dev", "wan0", "proto", "206", "table", "251")
	if out := get("10.0.64.17"); !strings.Contains(out, "dev wan0") {
		t.Fatalf("the WAN route does not win over BGP's: %s", out)
	}
	if out := sh("ip", "route", "show", "10.0.64.16/28", "proto", "202"); !strings.Contains(out, "via 172.31.0.1") {
		t.Fatalf("BGP's route is gone: %q", out)
	}
	// WireGuard's outer packets carry the probe mark: they take the
	// underlay's default route, never BGP's route over the line.
	if out := get("203.0.113.11", "mark", "0x5354"); !strings.Contains(out, "via 192.168.10.1 dev up0") {
		t.Fatalf("a marked packet to a public endpoint: %s; want the default route over up0", out)
	}
	if out := get("203.0.113.11"); !strings.Contains(out, "dev ll0") {
		t.Fatalf("control: an unmarked packet should follow BGP's route here: %s", out)
	}
	// Back to native: the WAN route goes and BGP's route serves again.
	sh("ip", "route", "del", "10.0.64.16/28", "table", "251")
	if out := get("10.0.64.17"); !strings.Contains(out, "dev ll0") {
		t.Fatalf("after the way back: %s", out)
	}
	// --wan=off removes the rule.
	if err := n.Do(func() error { return removeWANRouting(c.WAN.Table) }); err != nil {
		t.Fatal(err)
	}
	if out := sh("ip", "rule", "show"); strings.Contains(out, "lookup 251") {
		t.Fatalf("rule left with the WAN off: %s", out)
	}
}
