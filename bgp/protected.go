package bgp

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/nsutil"
)

// readProtected gathers the node's facts for the import policy: the subnet
// and host prefix of each interface address, and which of those subnets
// hold an underlay address.
func readProtected(nsPath string, podCIDRs []netip.Prefix, underlayIPs []netip.Addr) (Protected, error) {
	var addrs []netlink.Addr
	list := func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		addrs, err = nlretry.Dump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
		return err
	}
	var err error
	if nsPath == "" {
		err = list()
	} else {
		err = nsutil.NS{Name: nsPath, Path: nsPath}.Do(list)
	}
	if err != nil {
		return Protected{}, fmt.Errorf("bgp: read interface addresses for the import policy: %w", err)
	}
	return protectedFrom(addrs, podCIDRs, underlayIPs), nil
}

func protectedFrom(addrs []netlink.Addr, podCIDRs []netip.Prefix, underlayIPs []netip.Addr) Protected {
	pr := Protected{PodCIDRs: slices.Clone(podCIDRs)}
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		ones, _ := a.Mask.Size()
		subnet := netip.PrefixFrom(ip, ones).Masked()
		pr.LocalAddrs = append(pr.LocalAddrs, ip)
		pr.Connected = append(pr.Connected, subnet, netip.PrefixFrom(ip, ip.BitLen()))
		if slices.Contains(underlayIPs, ip) {
			pr.Underlay = append(pr.Underlay, subnet)
		}
	}
	slices.SortFunc(pr.Connected, comparePrefix)
	pr.Connected = slices.Compact(pr.Connected)
	slices.SortFunc(pr.LocalAddrs, netip.Addr.Compare)
	pr.LocalAddrs = slices.Compact(pr.LocalAddrs)
	slices.SortFunc(pr.Underlay, comparePrefix)
	pr.Underlay = slices.Compact(pr.Underlay)
	return pr
}

func (p Protected) equal(o Protected) bool {
	return slices.Equal(p.Connected, o.Connected) && slices.Equal(p.LocalAddrs, o.LocalAddrs) &&
		slices.Equal(p.PodCIDRs, o.PodCIDRs) && slices.Equal(p.Underlay, o.Underlay)
}
