package vxlan

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/internal/rtproto"
)

func testCfg(t *testing.T) DeviceConfig {
	t.Helper()
	cfg, err := DeviceConfig{LocalIP: netip.MustParseAddr("192.168.10.11"), OverlayIP: netip.MustParseAddr("10.244.1.0"), UnderlayMTU: 1500}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestDefaults(t *testing.T) {
	cfg := testCfg(t)
	if cfg.Name != DefaultName || cfg.VNI != 1 || cfg.Port != 4789 || cfg.MTU != 1450 || cfg.CheckInterval != DefaultCheckInterval {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
	if cfg.MAC.String() != DefaultMAC(1, cfg.OverlayIP).String() {
		t.Fatalf("MAC %s is not the derived default", cfg.MAC)
	}
	if cfg.MAC[0]&0x03 != 0x02 {
		t.Fatalf("derived MAC %s is not locally administered unicast", cfg.MAC)
	}
}

func TestDefaultMACStableAndDistinct(t *testing.T) {
	a := DefaultMAC(1, netip.MustParseAddr("10.244.1.0"))
	if a.String() != DefaultMAC(1, netip.MustParseAddr("10.244.1.0")).String() {
		t.Fatal("DefaultMAC is not deterministic")
	}
	if a.String() != DefaultMAC(1, netip.MustParseAddr("::ffff:10.244.1.0")).String() {
		t.Fatal("DefaultMAC differs for the IPv4-mapped form of the same address")
	}
	if a.String() == DefaultMAC(2, netip.MustParseAddr("10.244.1.0")).String() || a.String() == DefaultMAC(1, netip.MustParseAddr("10.244.2.0")).String() {
		t.Fatal("DefaultMAC collides for different VNI or address")
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	ok := DeviceConfig{LocalIP: netip.MustParseAddr("192.168.10.11"), OverlayIP: netip.MustParseAddr("10.244.1.0"), UnderlayMTU: 1500}
	cases := []struct {
		name string
		mod  func(*DeviceConfig)
		want string
	}{
		{"no local", func(c *DeviceConfig) { c.LocalIP = netip.Addr{} }, "DeviceConfig.LocalIP is required"},
		{"v6 local", func(c *DeviceConfig) { c.LocalIP = netip.MustParseAddr("2001:db8::1") }, "IPv4 only"},
		{"no overlay", func(c *DeviceConfig) { c.OverlayIP = netip.Addr{} }, "DeviceConfig.OverlayIP is required"},
		{"vni", func(c *DeviceConfig) { c.VNI = 1 << 24 }, "DeviceConfig.VNI"},
		{"name", func(c *DeviceConfig) { c.Name = "a-very-long-device-name" }, "DeviceConfig.Name"},
		{"no mtu", func(c *DeviceConfig) { c.UnderlayMTU = 0 }, "UnderlayLink"},
		{"small mtu", func(c *DeviceConfig) { c.UnderlayMTU = 600 }, "too small"},
		{"mac", func(c *DeviceConfig) { c.MAC = net.HardwareAddr{1, 0, 0, 0, 0, 1} }, "DeviceConfig.MAC"},
	}
	for _, tc := range cases {
		c := ok
		tc.mod(&c)
		_, err := c.withDefaults()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

func peer(name, ul, gw string, pfx ...string) Peer {
	p := Peer{Name: name, UnderlayIP: netip.MustParseAddr(ul), OverlayIP: netip.MustParseAddr(gw)}
	for _, s := range pfx {
		p.Prefixes = append(p.Prefixes, netip.MustParsePrefix(s))
	}
	return p
}

func TestPlanEdgeAndCloudPeers(t *testing.T) {
	cfg := testCfg(t)
	d, err := plan(cfg, []Peer{
		peer("edge-b1", "192.168.30.11", "10.244.3.0", "10.244.3.0/24"),
		peer("cloud-1", "10.0.1.11", "10.0.63.11", "10.0.64.7/32", "10.0.64.16/28"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.neigh) != 2 || len(d.fdb) != 2 {
		t.Fatalf("want 2 neighbours and 2 FDB entries, got %d and %d", len(d.neigh), len(d.fdb))
	}
	// The edge gateway lies in its CIDR; the cloud gateway needs its own /32.
	want := map[string]string{"10.244.3.0/24": "10.244.3.0", "10.0.64.7/32": "10.0.63.11", "10.0.64.16/28": "10.0.63.11", "10.0.63.11/32": "10.0.63.11"}
	if len(d.routes) != len(want) {
		t.Fatalf("routes %v, want %v", d.routes, want)
	}
	for dst, gw := range want {
		if got := d.routes[netip.MustParsePrefix(dst)]; got.String() != gw {
			t.Errorf("route %s via %s, want via %s", dst, got, gw)
		}
	}
	mk, _ := keyOf(DefaultMAC(1, netip.MustParseAddr("10.244.3.0")))
	if d.fdb[mk] != netip.MustParseAddr("192.168.30.11") {
		t.Errorf("fdb for edge-b1's derived MAC missing: %v", d.fdb)
	}
}

func TestPlanRejectsBadPeers(t *testing.T) {
	cfg := testCfg(t)
	good := peer("a", "192.168.30.11", "10.244.3.0", "10.244.3.0/24")
	cases := []struct {
		name  string
		peers []Peer
		want  string
	}{
		{"empty name", []Peer{peer("", "192.168.30.11", "10.244.3.0")}, "Name is empty"},
		{"dup name", []Peer{good, peer("a", "192.168.30.12", "10.244.4.0")}, "listed twice"},
		{"v6 underlay", []Peer{peer("b", "2001:db8::1", "10.244.4.0")}, "IPv6"},
		{"v6 prefix", []Peer{peer("b", "192.168.30.12", "10.244.4.0", "fd00::/64")}, "IPv6"},
		{"host bits", []Peer{peer("b", "192.168.30.12", "10.244.4.0", "10.244.4.1/24")}, "use 10.244.4.0/24"},
		{"default", []Peer{peer("b", "192.168.30.12", "10.244.4.0", "0.0.0.0/0")}, "everything"},
		{"self", []Peer{peer("b", "192.168.10.11", "10.244.4.0")}, "own LocalIP"},
		{"own overlay", []Peer{peer("b", "192.168.30.12", "10.244.1.0")}, "own OverlayIP"},
		{"dup underlay", []Peer{good, peer("b", "192.168.30.11", "10.244.4.0")}, "share UnderlayIP"},
		{"dup overlay", []Peer{good, peer("b", "192.168.30.12", "10.244.3.0")}, "share OverlayIP"},
		{"dup prefix", []Peer{good, peer("b", "192.168.30.12", "10.244.4.0", "10.244.3.0/24")}, "claimed by peers"},
		{"multicast mac", []Peer{{Name: "b", UnderlayIP: netip.MustParseAddr("192.168.30.12"), OverlayIP: netip.MustParseAddr("10.244.4.0"), MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}}}, "unicast"},
	}
	for _, tc := range cases {
		_, err := plan(cfg, tc.peers)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

// One bad peer is left out with an error naming it; the others are planned
// exactly as without it.
func TestPlanOneBadPeerStopsNoOther(t *testing.T) {
	cfg := testCfg(t)
	good := []Peer{
		peer("a", "192.168.30.11", "10.244.3.0", "10.244.3.0/24"),
		peer("c", "192.168.30.13", "10.244.5.0", "10.244.5.0/24"),
	}
	alone, err := plan(cfg, good)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Peer{
		peer("b", "192.168.30.12", "10.244.4.0", "fd00::/64"),                // IPv6
		peer("b", "192.168.30.12", "10.244.4.0", "10.244.3.0/24"),            // a's prefix
		peer("b", "192.168.30.11", "10.244.4.0", "10.244.4.0/24"),            // a's VTEP
		peer("b", "192.168.30.12", "10.244.4.0", "0.0.0.0/0", "10.9.0.0/16"), // default route
	} {
		d, err := plan(cfg, []Peer{good[0], bad, good[1]})
		var pe *PeerError
		if !errors.As(err, &pe) || pe.Peer != "b" {
			t.Errorf("bad peer %v: err %v, want a *PeerError naming b", bad.Prefixes, err)
		}
		if d.peers != 2 || len(d.routes) != len(alone.routes) || len(d.fdb) != 2 || len(d.neigh) != 2 {
			t.Errorf("bad peer %v changed the others' plan: %d peers, %d routes (want 2, %d)", bad.Prefixes, d.peers, len(d.routes), len(alone.routes))
		}
		for dst, gw := range alone.routes {
			if d.routes[dst] != gw {
				t.Errorf("bad peer %v: route %s via %s, want via %s", bad.Prefixes, dst, d.routes[dst], gw)
			}
		}
	}
}

func TestDiffFromEmptyAddsAll(t *testing.T) {
	cfg := testCfg(t)
	d, err := plan(cfg, []Peer{peer("a", "192.168.30.11", "10.244.3.0", "10.244.3.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := diff(d, 7, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := cs.counts()
	if c != (Counts{NeighAdded: 1, FDBAdded: 1, NexthopsAdded: 1, RoutesAdded: 1}) {
		t.Fatalf("counts %+v", c)
	}
	nh, r := cs.nhSet[0], cs.routeSet[0]
	if nh.oif != 7 || !nh.onlink || nh.gw.String() != "10.244.3.0" || nh.id != nhID(nh.gw) {
		t.Fatalf("nexthop %+v is not 'via 10.244.3.0 dev 7 onlink'", nh)
	}
	if r.dst.String() != "10.244.3.0/24" || r.nhid != nh.id || r.table != unix.RT_TABLE_MAIN {
		t.Fatalf("route %+v does not use nexthop %d in the main table", r, nh.id)
	}
	f := cs.fdbSet[0]
	if f.Family != unix.AF_BRIDGE || f.Flags&netlink.NTF_SELF == 0 || f.State != netlink.NUD_PERMANENT || f.IP.String() != "192.168.30.11" {
		t.Fatalf("fdb %+v is not a permanent self entry to the VTEP", f)
	}
}

// observedOf turns a change set's writes into what a dump would show.
func observedOf(cs changeSet) (neighs, fdbs []netlink.Neigh, nhs []nexthop, routes []kroute) {
	return cs.neighSet, cs.fdbSet, cs.nhSet, cs.routeSet
}

func mustDiff(t *testing.T, d desired, link int, n, f []netlink.Neigh, nh []nexthop, r []kroute) changeSet {
	t.Helper()
	cs, err := diff(d, link, n, f, nh, r)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestDiffNoopAndDrift(t *testing.T) {
	cfg := testCfg(t)
	d, err := plan(cfg, []Peer{
		peer("a", "192.168.30.11", "10.244.3.0", "10.244.3.0/24"),
		peer("b", "192.168.30.12", "10.244.4.0", "10.244.4.0/24"),
	})
	if err != nil {
		t.Fatal(err)
	}
	n, f, nh, r := observedOf(mustDiff(t, d, 7, nil, nil, nil, nil))
	if c := mustDiff(t, d, 7, n, f, nh, r).counts(); c.Total() != 0 {
		t.Fatalf("no-op diff wants writes: %+v", c)
	}
	// Drift: a wrong FDB destination, a stray permanent neighbour, a foreign
	// route, a stale route of ours, and a kernel (non-permanent) neighbour.
	f[0].IP = net.ParseIP("192.168.99.99")
	n = append(n, netlink.Neigh{LinkIndex: 7, IP: net.ParseIP("10.244.9.0"), State: netlink.NUD_PERMANENT, HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 9}})
	n = append(n, netlink.Neigh{LinkIndex: 7, IP: net.ParseIP("10.244.8.0"), State: netlink.NUD_STALE, HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 8}})
	stale := kroute{dst: netip.MustParsePrefix("10.244.5.0/24"), table: unix.RT_TABLE_MAIN, nhid: 99}
	wrongNH := r[0]
	wrongNH.nhid = 12345
	r = append(r[1:], stale, wrongNH)
	foreignNH := nexthop{id: 77, proto: uint8(rtproto.BGP), gw: netip.MustParseAddr("10.1.1.1"), oif: 7}
	staleNH := nexthop{id: 78, proto: uint8(rtproto.VXLAN), gw: netip.MustParseAddr("10.1.1.2"), oif: 7, onlink: true}
	movedNH := nh[0]
	movedNH.oif = 3
	nh = append(nh[1:], foreignNH, staleNH, movedNH)
	c := mustDiff(t, d, 7, n, f, nh, r).counts()
	want := Counts{NeighRemoved: 1, FDBAdded: 1, FDBRemoved: 1, NexthopsAdded: 1, NexthopsRemoved: 1, RoutesAdded: 1, RoutesRemoved: 1}
	if c != want {
		t.Fatalf("drift counts %+v, want %+v", c, want)
	}
	// A recreated device (new ifindex) needs every neighbour, FDB entry
	// and nexthop again; routes follow their nexthops.
	if c := mustDiff(t, d, 8, nil, nil, nh, r).counts(); c.NexthopsAdded != 2 || c.NeighAdded != 2 || c.FDBAdded != 2 {
		t.Fatalf("resync after recreation: %+v", c)
	}
	// A foreign nexthop on one of our ids is refused, not taken over.
	taken := nexthop{id: nhID(netip.MustParseAddr("10.244.3.0")), proto: uint8(rtproto.BGP)}
	if _, err := diff(d, 7, n, f, []nexthop{taken}, r); !errors.Is(err, errNexthopTaken) {
		t.Fatalf("foreign nexthop on our id: err %v", err)
	}
}

// FuzzPlan feeds arbitrary addresses and prefix lengths through validation
// and diff: no panics, and every accepted route has a neighbour for its
// gateway and an FDB entry behind that neighbour.
func FuzzPlan(f *testing.F) {
	f.Add([]byte{192, 168, 30, 11, 10, 244, 3, 0, 10, 244, 3, 0, 24})
	f.Add([]byte{10, 0, 1, 11, 10, 0, 63, 11, 10, 0, 64, 7, 32, 10, 0, 1, 12, 10, 0, 63, 12, 10, 0, 64, 16, 28})
	f.Add([]byte{192, 168, 10, 11, 10, 244, 1, 0, 10, 244, 1, 0, 24})
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := DeviceConfig{LocalIP: netip.MustParseAddr("192.168.10.11"), OverlayIP: netip.MustParseAddr("10.244.1.0"), UnderlayMTU: 1500}
		cfg, err := cfg.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		var peers []Peer
		for i := 0; len(b) >= 13 && i < 50; i++ {
			p := Peer{
				Name:       string(rune('a' + i)),
				UnderlayIP: netip.AddrFrom4([4]byte(b[0:4])),
				OverlayIP:  netip.AddrFrom4([4]byte(b[4:8])),
				Prefixes:   []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte(b[8:12])), int(b[12]%40))},
			}
			peers = append(peers, p)
			b = b[13:]
		}
		d, _ := plan(cfg, peers) // bad peers are left out; the rest must be consistent
		for dst, gw := range d.routes {
			mac, ok := d.neigh[gw]
			if !ok {
				t.Fatalf("route %s via %s has no neighbour", dst, gw)
			}
			if _, ok := d.fdb[mac]; !ok {
				t.Fatalf("neighbour %s -> %x has no FDB entry", gw, mac)
			}
		}
		n, fd, nh, r := observedOf(mustDiff(t, d, 3, nil, nil, nil, nil))
		if c := mustDiff(t, d, 3, n, fd, nh, r).counts(); c.Total() != 0 {
			t.Fatalf("second diff not a no-op: %+v", c)
		}
	})
}

func TestSamePeersSeesCallerMutation(t *testing.T) {
	ps := []Peer{peer("a", "192.168.30.11", "10.244.3.0", "10.244.3.0/24")}
	saved := clonePeers(ps)
	if !samePeers(saved, ps) {
		t.Fatal("a clone differs from its source")
	}
	ps[0].Prefixes[0] = netip.MustParsePrefix("10.244.9.0/24")
	if samePeers(saved, ps) {
		t.Fatal("a prefix changed in the caller's slice went unnoticed")
	}
	if saved[0].Prefixes[0].String() != "10.244.3.0/24" {
		t.Fatal("clonePeers shares the caller's prefix slice")
	}
}
