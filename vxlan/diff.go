package vxlan

import (
	"fmt"
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
	nhSet              []nexthop
	nhDel              []uint32
	routeSet           []kroute
	routeDel           []kroute
}

// Counts summarises a change set.
type Counts struct {
	NeighAdded, NeighRemoved       int
	FDBAdded, FDBRemoved           int
	NexthopsAdded, NexthopsRemoved int
	RoutesAdded, RoutesRemoved     int
}

// Total is the number of kernel writes.
func (c Counts) Total() int {
	return c.NeighAdded + c.NeighRemoved + c.FDBAdded + c.FDBRemoved + c.NexthopsAdded + c.NexthopsRemoved + c.RoutesAdded + c.RoutesRemoved
}

func (c changeSet) counts() Counts {
	return Counts{
		NeighAdded: len(c.neighSet), NeighRemoved: len(c.neighDel),
		FDBAdded: len(c.fdbSet), FDBRemoved: len(c.fdbDel),
		NexthopsAdded: len(c.nhSet), NexthopsRemoved: len(c.nhDel),
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

// diff compares the desired state with dumps of the device's neighbours, its
// FDB, the nexthop objects and the routes carrying rtproto.VXLAN, and lists
// the writes needed.
func diff(want desired, link int, neighs, fdbs []netlink.Neigh, nhs []nexthop, routes []kroute) (changeSet, error) {
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

	// Nexthops: one per overlay gateway, ours told apart by protocol. A
	// foreign object holding one of our ids is an error, not a takeover.
	wantNH := make(map[uint32]netip.Addr, len(want.neigh))
	for _, gw := range want.routes {
		wantNH[nhID(gw)] = gw
	}
	seenNH := make(map[uint32]bool, len(nhs))
	for _, nh := range nhs {
		gw, wanted := wantNH[nh.id]
		if nh.proto != uint8(rtproto.VXLAN) {
			if wanted {
				return changeSet{}, fmt.Errorf("vxlan: %w: nexthop id %d (for overlay gateway %s) belongs to protocol %d; remove it (ip nexthop del id %d) or change that owner's ids", errNexthopTaken, nh.id, gw, nh.proto, nh.id)
			}
			continue
		}
		switch {
		case !wanted:
			c.nhDel = append(c.nhDel, nh.id)
		case nh.oif == link && nh.gw.Unmap() == gw && nh.onlink && !nh.group:
			seenNH[nh.id] = true
		}
	}
	for id, gw := range wantNH {
		if !seenNH[id] {
			c.nhSet = append(c.nhSet, nexthop{id: id, gw: gw, oif: link, onlink: true, proto: uint8(rtproto.VXLAN)})
		}
	}

	// Routes: the dump holds only routes with our protocol number. A route
	// with our key (main table, metric 0, tos 0) but the wrong nexthop is
	// fixed by the replace; anything else of ours that is not wanted goes.
	seenRoute := make(map[netip.Prefix]bool, len(routes))
	for _, r := range routes {
		gw, wanted := want.routes[r.dst]
		ourKey := r.table == unix.RT_TABLE_MAIN && r.priority == 0 && r.tos == 0
		switch {
		case wanted && ourKey && !seenRoute[r.dst] && r.nhid == nhID(gw):
			seenRoute[r.dst] = true
		case wanted && ourKey:
			// replaced in place below
		default:
			c.routeDel = append(c.routeDel, r)
		}
	}
	for dst, gw := range want.routes {
		if !seenRoute[dst] {
			c.routeSet = append(c.routeSet, kroute{dst: dst, table: unix.RT_TABLE_MAIN, nhid: nhID(gw)})
		}
	}
	return c, nil
}
