package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/rtproto"
)

// nativeRoutes owns two things on the node: routes to native peers' pods that
// need an explicit next hop (proto rtproto.Native), and the probe path: a
// rule sending marked probe packets through a table holding only the
// underlay's default route, so native probes never follow overlay routes.
// A second rule makes specific routes of the main table (overlay, BGP, local
// pods) win over source-based tables a role may add (ENI policy routing),
// without letting main's default route shadow them.
type nativeRoutes struct {
	table    int
	mark     uint32
	underlay underlay
}

// Rule priorities: every policy rule the agent adds, in lookup order.
const (
	probeRulePriority = 90
	// wanRulePriority looks up the WAN table (WANConfig.Table) after the
	// probe rule (so marked packets, WireGuard's own among them, keep to
	// the underlay's default route) and before main, so a pair moved to the
	// WAN wins over routes a routing protocol still holds for it.
	wanRulePriority  = 95
	mainRulePriority = 100
	// nativeMetric keeps these routes behind any a routing protocol installs
	// for the same prefix (BGP uses metric 0): they are the fallback.
	nativeMetric = 100
)

// onLink reports whether a next hop sits on the underlay's own subnet; a
// native peer elsewhere is reached through the underlay's routing (VPC,
// BGP), which needs nothing from this node.
func (n *nativeRoutes) onLink(a netip.Addr) bool {
	for _, p := range n.underlay.subnets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

type nativeRoute struct {
	dst netip.Prefix
	via netip.Addr
}

func (n *nativeRoutes) setupProbePath() error {
	if !n.underlay.gw.IsValid() {
		return nil // no default route: nothing native to probe through
	}
	// onlink: the gateway is on the underlay link by construction, and this
	// table holds no connected route the kernel could check it against.
	def := &netlink.Route{Table: n.table, LinkIndex: n.underlay.idx, Gw: net.IP(n.underlay.gw.AsSlice()),
		Protocol: rtproto.Native, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Flags: int(netlink.FLAG_ONLINK)}
	if err := netlink.RouteReplace(def); err != nil {
		return fmt.Errorf("native probe table %d: %w", n.table, err)
	}
	rules, err := nlretry.Dump(func() ([]netlink.Rule, error) { return netlink.RuleList(netlink.FAMILY_V4) })
	if err != nil {
		return err
	}
	have := map[int]bool{}
	for _, r := range rules {
		if r.Priority == probeRulePriority || r.Priority == mainRulePriority {
			have[r.Priority] = true
		}
	}
	if !have[probeRulePriority] {
		r := netlink.NewRule()
		r.Priority, r.Mark, r.Table = probeRulePriority, n.mark, n.table
		if err := netlink.RuleAdd(r); err != nil {
			return fmt.Errorf("probe rule fwmark %#x lookup %d: %w", n.mark, n.table, err)
		}
	}
	if !have[mainRulePriority] {
		r := netlink.NewRule()
		r.Priority, r.Table, r.SuppressPrefixlen = mainRulePriority, 254, 0
		if err := netlink.RuleAdd(r); err != nil {
			return fmt.Errorf("rule lookup main suppress_prefixlength 0: %w", err)
		}
	}
	return nil
}

// reconcile makes the main table's rtproto.Native routes equal want.
func (n *nativeRoutes) reconcile(want []nativeRoute) error {
	have, err := nlretry.Dump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254, Protocol: rtproto.Native},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return err
	}
	wantBy := map[netip.Prefix]netip.Addr{}
	for _, w := range want {
		wantBy[w.dst] = w.via
	}
	var errs []error
	for _, r := range have {
		dst, ok := prefixOf(r.Dst)
		gw, _ := netip.AddrFromSlice(r.Gw.To4())
		if via, keep := wantBy[dst]; ok && keep && via == gw {
			delete(wantBy, dst)
			continue
		}
		if err := netlink.RouteDel(&r); err != nil {
			errs = append(errs, err)
		}
	}
	for dst, via := range wantBy {
		r := &netlink.Route{Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
			Gw: via.AsSlice(), Protocol: rtproto.Native, Table: 254, Priority: nativeMetric}
		if err := netlink.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("native route %s via %s: %w", dst, via, err))
		}
	}
	return errors.Join(errs...)
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}
