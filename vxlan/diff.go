package vxlan

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/internal/rtproto"
)

// changeSet is what one sync must do to turn the observed state into the
// desired one. Deletions only ever name entries on our device or routes with
// our protocol number.
type changeSet struct {
	neighSet, neighDel []netlink.Neigh
	fdbSet, fdbDel     []netlink.Neigh
	routeSet, routeDel []netlink.Route
}

// Counts summarises a change set.
type Counts struct {
	NeighAdded, NeighRemoved   int
	FDBAdded, FDBRemoved       int
	RoutesAdded, RoutesRemoved int
}

// Total is the number of kernel writes.
func (c Counts) Total() int {
	return c.NeighAdded + c.NeighRemoved + c.FDBAdded + c.FDBRemoved + c.RoutesAdded + c.RoutesRemoved
}

func (c changeSet) counts() Counts {
	return Counts{
		NeighAdded: len(c.neighSet), NeighRemoved: len(c.neighDel),
		FDBAdded: len(c.fdbSet), FDBRemoved: len(c.fdbDel),
		RoutesAdded: len(c.routeSet), RoutesRemoved: len(c.routeDel),
	}
}

func addrOf(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := addrOf(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// NeighFor builds the permanent neighbour entry for an overlay gateway.
func neighFor(link int, gw netip.Addr, mac macKey) netlink.Neigh {
	return netlink.Neigh{LinkIndex: link, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: gw.AsSlice(), HardwareAddr: mac.hw()}
}

// fdbFor builds the FDB entry sending a peer MAC's frames to its VTEP.
func fdbFor(link int, mac macKey, dst netip.Addr) netlink.Neigh {
	return netlink.Neigh{LinkIndex: link, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, IP: dst.AsSlice(), HardwareAddr: mac.hw()}
}

// routeFor builds "dst via gw dev <link> onlink proto vxlan".
func routeFor(link int, dst netip.Prefix, gw netip.Addr) netlink.Route {
	return netlink.Route{
		LinkIndex: link, Dst: ipNet(dst), Gw: gw.AsSlice(), Flags: int(netlink.FLAG_ONLINK),
		Protocol: rtproto.VXLAN, Table: unix.RT_TABLE_MAIN, Scope: netlink.SCOPE_UNIVERSE, Family: netlink.FAMILY_V4,
	}
}

// diff compares the desired state with dumps of the device's neighbours, its
// FDB and the routes carrying rtproto.VXLAN, and lists the writes needed.
func diff(want desired, link int, neighs, fdbs []netlink.Neigh, routes []netlink.Route) changeSet {
	var c changeSet

	// Neighbours: only permanent ones are ours; the kernel's own transient
	// entries on the device are left to age out.
	seenNeigh := make(map[netip.Addr]bool, len(neighs))
	for _, n := range neighs {
		if n.LinkIndex != link {
			continue
		}
		ip, ok := addrOf(n.IP)
		if !ok || !ip.Is4() {
			continue
		}
		mac, macOK := keyOf(n.HardwareAddr)
		wantMAC, wanted := want.neigh[ip]
		switch {
		case wanted && macOK && mac == wantMAC && n.State&netlink.NUD_PERMANENT != 0:
			seenNeigh[ip] = true
		case !wanted && n.State&netlink.NUD_PERMANENT != 0:
			c.neighDel = append(c.neighDel, netlink.Neigh{LinkIndex: link, Family: netlink.FAMILY_V4, IP: n.IP})
		}
	}
	for ip, mac := range want.neigh {
		if !seenNeigh[ip] {
			c.neighSet = append(c.neighSet, neighFor(link, ip, mac))
		}
	}

	// FDB: one remote per peer MAC. Extra or wrong remotes are deleted one by
	// one (a delete naming the remote removes just that remote).
	seenFDB := make(map[macKey]bool, len(fdbs))
	for _, f := range fdbs {
		if f.LinkIndex != link {
			continue
		}
		mac, ok := keyOf(f.HardwareAddr)
		if !ok {
			continue
		}
		dst, _ := addrOf(f.IP)
		wantDst, wanted := want.fdb[mac]
		if wanted && dst == wantDst && f.State&netlink.NUD_PERMANENT != 0 && !seenFDB[mac] {
			seenFDB[mac] = true
			continue
		}
		del := netlink.Neigh{LinkIndex: link, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, HardwareAddr: f.HardwareAddr, IP: f.IP, Vlan: f.Vlan, VNI: f.VNI}
		c.fdbDel = append(c.fdbDel, del)
	}
	for mac, dst := range want.fdb {
		if !seenFDB[mac] {
			c.fdbSet = append(c.fdbSet, fdbFor(link, mac, dst))
		}
	}

	// Routes: the dump holds only routes with our protocol number.
	seenRoute := make(map[netip.Prefix]bool, len(routes))
	for _, r := range routes {
		if r.Protocol != rtproto.VXLAN {
			continue // never touch others' routes, even if a caller passes them
		}
		dst, ok := prefixOf(r.Dst)
		if !ok {
			c.routeDel = append(c.routeDel, r)
			continue
		}
		gw, wanted := want.routes[dst]
		rgw, _ := addrOf(r.Gw)
		if wanted && !seenRoute[dst] && r.LinkIndex == link && rgw == gw && r.Flags&int(netlink.FLAG_ONLINK) != 0 &&
			len(r.MultiPath) == 0 && (r.Table == 0 || r.Table == unix.RT_TABLE_MAIN) && r.Priority == 0 {
			seenRoute[dst] = true
			continue
		}
		if wanted && r.Priority == 0 && !seenRoute[dst] && (r.Table == 0 || r.Table == unix.RT_TABLE_MAIN) {
			// Same key as ours: the replace below overwrites it in place.
			continue
		}
		c.routeDel = append(c.routeDel, r)
	}
	for dst, gw := range want.routes {
		if !seenRoute[dst] {
			c.routeSet = append(c.routeSet, routeFor(link, dst, gw))
		}
	}
	return c
}
