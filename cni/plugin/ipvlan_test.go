package plugin

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/role"
)

func ipvlanAlloc() wire.Allocation {
	return wire.Allocation{
		ContainerID: "c1", IfName: "eth0",
		Addr: netip.MustParsePrefix("10.0.64.20/32"), Gateway: netip.MustParseAddr("10.0.64.1"),
		HostVia: netip.MustParseAddr("10.0.64.5"),
		Routes:  []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("10.0.1.7/24")},
		MTU:     1500, Datapath: role.DatapathIPVlan, Table: 1007, ENILink: "eth1", ENIMAC: "02:00:00:00:00:01",
	}
}

func TestPlanIPVlan(t *testing.T) {
	host := hostIPVlanName("eth1")
	want := ipvlanPlan{
		Parent: "eth1", HostLink: host, HostAddr: netip.MustParsePrefix("10.0.64.5/32"),
		PodLink: "eth0", PodAddr: netip.MustParsePrefix("10.0.64.20/32"), MTU: 1500,
		PodRoutes: []plannedRoute{
			{Dst: netip.MustParsePrefix("10.0.64.5/32")},
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: netip.MustParseAddr("10.0.64.1")},
			{Dst: netip.MustParsePrefix("10.96.0.0/12"), Via: netip.MustParseAddr("10.0.64.5")},
			{Dst: netip.MustParsePrefix("10.0.1.0/24"), Via: netip.MustParseAddr("10.0.64.5")}, // masked
		},
		HostRoute: netip.MustParsePrefix("10.0.64.20/32"), RuleTable: 1007,
		Alias: "strata-ipvl:10.0.64.20/1007/" + host,
	}
	got, err := planIPVlan("eth0", ipvlanAlloc())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("plan:\n got %+v\nwant %+v", got, want)
	}

	for _, tc := range []struct {
		name  string
		mut   func(*wire.Allocation)
		check func(ipvlanPlan) bool
		err   string // substring naming the field; empty: no error
	}{
		{"main table: no rule", func(a *wire.Allocation) { a.Table = 0 }, func(p ipvlanPlan) bool {
			return p.RuleTable == 0 && strings.HasPrefix(p.Alias, "strata-ipvl:10.0.64.20/0/")
		}, ""},
		{"default MTU", func(a *wire.Allocation) { a.MTU = 0 }, func(p ipvlanPlan) bool { return p.MTU == 1500 }, ""},
		{"no host-bound routes", func(a *wire.Allocation) { a.Routes = nil }, func(p ipvlanPlan) bool { return len(p.PodRoutes) == 2 }, ""},
		{"no ENI link", func(a *wire.Allocation) { a.ENILink = "" }, nil, `"eniLink"`},
		{"no host address", func(a *wire.Allocation) { a.HostVia = netip.Addr{} }, nil, `"hostVia"`},
		{"IPv6 host address", func(a *wire.Allocation) { a.HostVia = netip.MustParseAddr("fd00::1") }, nil, `"hostVia"`},
		{"host address is the pod's", func(a *wire.Allocation) { a.HostVia = a.Addr.Addr() }, nil, "also its gateway"},
		{"gateway is the pod's", func(a *wire.Allocation) { a.Gateway = a.Addr.Addr() }, nil, "also its gateway"},
		{"default among routes", func(a *wire.Allocation) { a.Routes = append(a.Routes, netip.MustParsePrefix("0.0.0.0/0")) }, nil, `"routes"`},
		{"IPv6 route", func(a *wire.Allocation) { a.Routes = []netip.Prefix{netip.MustParsePrefix("fd00::/64")} }, nil, `"routes"`},
		{"negative table", func(a *wire.Allocation) { a.Table = -1 }, nil, `"table"`},
		{"no address", func(a *wire.Allocation) { a.Addr = netip.Prefix{} }, nil, "want an IPv4 prefix"},
		{"no gateway", func(a *wire.Allocation) { a.Gateway = netip.Addr{} }, nil, "want an IPv4 address"},
		{"bad MTU", func(a *wire.Allocation) { a.MTU = 100 }, nil, "MTU"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := ipvlanAlloc()
			tc.mut(&a)
			p, err := planIPVlan("eth0", a)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error naming %s", err, tc.err)
				}
				return
			}
			if err != nil || !tc.check(p) {
				t.Fatalf("got %+v, %v", p, err)
			}
		})
	}
}

// With the VPC CIDR as Direct, only the VPC goes to the vSwitch gateway: the
// default (overlay and BGP pod CIDRs learned later, the internet) takes the
// host, and host-bound CIDRs inside the VPC still win by being longer.
func TestPlanIPVlanVPCDirect(t *testing.T) {
	a := ipvlanAlloc()
	a.Direct = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}
	p, err := planIPVlan("eth0", a)
	if err != nil {
		t.Fatal(err)
	}
	gw, host := netip.MustParseAddr("10.0.64.1"), netip.MustParseAddr("10.0.64.5")
	want := []plannedRoute{
		{Dst: netip.MustParsePrefix("10.0.64.5/32")},
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: host},
		{Dst: netip.MustParsePrefix("10.0.0.0/16"), Via: gw},
		{Dst: netip.MustParsePrefix("10.96.0.0/12"), Via: host},
		{Dst: netip.MustParsePrefix("10.0.1.0/24"), Via: host},
	}
	if !reflect.DeepEqual(p.PodRoutes, want) {
		t.Fatalf("pod routes:\n got %+v\nwant %+v", p.PodRoutes, want)
	}
	for _, bad := range []string{"0.0.0.0/0", "fd00::/8"} {
		a.Direct = []netip.Prefix{netip.MustParsePrefix(bad)}
		if _, err := planIPVlan("eth0", a); err == nil || !strings.Contains(err.Error(), `"direct"`) {
			t.Errorf("direct %s: got %v, want an error naming the field", bad, err)
		}
	}
	a.Direct = []netip.Prefix{{}}
	if _, err := planIPVlan("eth0", a); err == nil || !strings.Contains(err.Error(), `"direct"`) {
		t.Errorf("invalid direct prefix: got %v, want an error naming the field", err)
	}
}

func TestIPVlanAliasRoundTrip(t *testing.T) {
	p, err := planIPVlan("eth0", ipvlanAlloc())
	if err != nil {
		t.Fatal(err)
	}
	ip, table, host, ok := parseIPVlanAlias(p.Alias)
	if !ok || ip != p.HostRoute.Addr() || table != p.RuleTable || host != p.HostLink {
		t.Fatalf("alias %q read back as %v %d %q %v", p.Alias, ip, table, host, ok)
	}
	for _, bad := range []string{"", "strata:10.0.0.1/5", "strata-ipvl:x/1/stv0", "strata-ipvl:10.0.0.1/x/stv0",
		"strata-ipvl:10.0.0.1/1/eth0", "strata-ipvl:10.0.0.1/1", "strata-eni:eth1"} {
		if _, _, _, ok := parseIPVlanAlias(bad); ok {
			t.Errorf("alias %q parsed as an ipvlan pod's", bad)
		}
	}
}

func TestHostIPVlanName(t *testing.T) {
	a, b := hostIPVlanName("eth1"), hostIPVlanName("eth2")
	if a == b || a != hostIPVlanName("eth1") || len(a) > 15 || !strings.HasPrefix(a, HostIPVlanPrefix) {
		t.Fatalf("host ipvlan names %q %q: want stable, distinct, <= 15 characters", a, b)
	}
	if strings.HasPrefix(a, HostVethPrefix) {
		t.Fatal("host ipvlan names must not look like host veths (GC deletes those)")
	}
}

func TestVethFallbackKeepsAddressAndTable(t *testing.T) {
	a := ipvlanAlloc()
	a.Direct = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}
	f := vethFallback(a)
	if f.Datapath != role.DatapathVethRouted || f.Gateway != VethGateway || f.Routes != nil || f.HostVia.IsValid() || f.Direct != nil {
		t.Fatalf("fallback %+v: want veth-routed via %s with no host-bound routes", f, VethGateway)
	}
	if f.Addr != a.Addr || f.Table != a.Table || f.MTU != a.MTU || f.ENILink != a.ENILink {
		t.Fatalf("fallback %+v changed the address, table, MTU or ENI of %+v", f, a)
	}
	if a.Datapath != role.DatapathIPVlan || a.Routes == nil {
		t.Fatal("vethFallback modified its argument")
	}
}

// Whatever the agent answers, planIPVlan either refuses it or lays out a
// plan the kernel can take: IPv4 routes only, and an alias DEL reads back.
func FuzzPlanIPVlan(f *testing.F) {
	seed, _ := json.Marshal(ipvlanAlloc())
	f.Add(seed)
	f.Add([]byte(`{"addr":"10.0.64.20/32","gateway":"10.0.64.1","hostVia":"10.0.64.5","eniLink":"eth1","direct":["10.0.0.0/16"],"routes":["10.96.0.0/12"],"datapath":"ipvlan"}`))
	f.Add([]byte(`{"addr":"10.0.64.20/32","gateway":"10.0.64.1","hostVia":"fd00::1","eniLink":"eth1","direct":["0.0.0.0/0"],"table":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var a wire.Allocation
		if json.Unmarshal(b, &a) != nil {
			return
		}
		p, err := planIPVlan("eth0", a)
		if err != nil {
			return
		}
		for _, r := range p.PodRoutes {
			if !r.Dst.Addr().Is4() || (r.Via.IsValid() && !r.Via.Is4()) {
				t.Fatalf("plan %+v has a non-IPv4 route %+v", p, r)
			}
		}
		ip, table, host, ok := parseIPVlanAlias(p.Alias)
		if !ok || ip != p.HostRoute.Addr() || table != p.RuleTable || host != p.HostLink {
			t.Fatalf("alias %q does not read back (%v %d %q %v)", p.Alias, ip, table, host, ok)
		}
	})
}
