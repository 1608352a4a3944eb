package agent

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/topology"
)

// underlay is the node's underlay: its address, link and default gateway.
type underlay struct {
	ip   netip.Addr
	link string
	idx  int
	mtu  int
	gw   netip.Addr
	// subnets are the underlay link's connected prefixes: native next hops
	// inside them are on-link.
	subnets []netip.Prefix
}

// discoverUnderlay finds the default route's link and gateway, and the link's
// first IPv4 address, unless ip/link are given.
func discoverUnderlay(ip netip.Addr, link string) (underlay, error) {
	routes, err := nlretry.Dump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return underlay{}, fmt.Errorf("read routes to find the underlay: %w", err)
	}
	var u underlay
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			if gw, ok := netip.AddrFromSlice(r.Gw.To4()); ok {
				u.gw, u.idx = gw, r.LinkIndex
				break
			}
		}
	}
	var l netlink.Link
	if link != "" {
		l, err = netlink.LinkByName(link)
	} else if u.idx != 0 {
		l, err = netlink.LinkByIndex(u.idx)
	} else {
		return underlay{}, fmt.Errorf("no default route to find the underlay link: pass --underlay-link and --underlay-ip")
	}
	if err != nil {
		return underlay{}, fmt.Errorf("underlay link: %w", err)
	}
	u.link, u.idx, u.mtu = l.Attrs().Name, l.Attrs().Index, l.Attrs().MTU
	addrs, err := nlretry.Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return underlay{}, err
	}
	for _, a := range addrs {
		ad, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		u.subnets = append(u.subnets, netip.PrefixFrom(ad, ones).Masked())
		if !ip.IsValid() && !u.ip.IsValid() {
			u.ip = ad
		}
	}
	if ip.IsValid() {
		u.ip = ip
	}
	if !u.ip.IsValid() {
		return underlay{}, fmt.Errorf("underlay link %s has no IPv4 address: pass --underlay-ip", u.link)
	}
	return u, nil
}

// localFacts parses the node's declared labels (strictly) and adds what the
// agent discovered.
func localFacts(cfg Config, n nodeInfo, ul underlay) (topology.NodeFacts, error) {
	ann := n.Annotations
	if n.PodCIDR != "" {
		ann = copyWith(ann, topology.AnnotationPodCIDR, n.PodCIDR)
	}
	f, err := topology.ParseNode(cfg.NodeName, n.Labels, ann)
	if err != nil {
		return f, fmt.Errorf("node %s: %w", cfg.NodeName, err)
	}
	f.UnderlayIPs = []netip.Addr{ul.ip}
	if cfg.WANIP.IsValid() {
		f.WANIP = cfg.WANIP
	}
	f.VTEPPort = cfg.VXLANPort
	return f, nil
}

// enableForwarding turns on IPv4 forwarding: the node routes its pods'
// traffic. (Kubernetes nodes usually have it already; a lab node does not.)
func enableForwarding() error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	return nil
}
