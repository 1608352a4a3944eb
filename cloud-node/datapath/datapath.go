// Package datapath programs the node side of the cloud role's pod links.
//
// ENIIP over veth + policy routing (the variant this kernel supports):
//   - each secondary ENI gets its own table (TableBase + ifindex) holding
//     the vSwitch subnet on the ENI and a default route to the vSwitch
//     gateway, with proto rtproto.ENI;
//   - each pod's own pieces (its /32 route in main and "from <pod> lookup
//     <ENI table>", so egress leaves by the ENI that owns the address; or
//     its ipvlan wiring) are the CNI plugin's (cni/plugin), made at ADD;
//     Prune removes those of addresses no longer allocated, and the
//     "to <pod> lookup main" rules older versions added;
//   - host-bound destinations (service CIDR, overlay and BGP-learned pod
//     CIDRs, node subnets) get "to <cidr> lookup main" rules placed before
//     the per-pod rules, so they go through the host, not the VPC gateway.
//
// The ENI link answers ARP for its pods (proxy ARP), the host veth answers
// for the pod's link-local gateway.
package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	cloudnode "github.com/strata-net/strata/cloud-node"
	"github.com/strata-net/strata/cni/plugin"
	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/rtproto"
)

// Rule priorities: host-bound destinations first, then ingress to pods
// (PrioToPod: only pruned now; the agent's rule 100 makes local pod routes
// win), then per-pod egress tables; all before the main table's 32766.
const (
	PrioHostBound = 1000
	PrioToPod     = 1100
	PrioFromPod   = 2000
	TableBase     = 1000
)

// IPVlanSupported reports whether the kernel has ipvlan. It asks for an
// ipvlan link on a parent ifindex that does not exist: a kernel with ipvlan
// refuses the parent (ENODEV), one without refuses the kind (EOPNOTSUPP).
// Nothing is created either way.
func IPVlanSupported() bool {
	err := netlink.LinkAdd(&netlink.IPVlan{LinkAttrs: netlink.LinkAttrs{Name: "stprobeipvl0", ParentIndex: 0x7ffffff0}, Mode: netlink.IPVLAN_MODE_L2})
	if err == nil { // cannot happen without a parent, but never leave it behind
		if l, lerr := netlink.LinkByName("stprobeipvl0"); lerr == nil {
			_ = netlink.LinkDel(l)
		}
		return true
	}
	return !errors.Is(err, unix.EOPNOTSUPP) && !strings.Contains(err.Error(), "not supported")
}

// Node programs ENIs and pods in a node namespace (NS nil: the current one).
type Node struct {
	NS *nsutil.NS
	// HostBound are destinations pods reach through the host, never the ENI
	// gateway: service CIDR, overlay and BGP-learned pod CIDRs, node subnets.
	HostBound []netip.Prefix
	// LinkWait bounds the wait for an attached ENI's link to appear.
	LinkWait time.Duration
	Log      *slog.Logger
}

var _ cloudnode.ENIDatapath = (*Node)(nil)

func (n *Node) do(fn func() error) error {
	if n.NS == nil {
		return fn()
	}
	return n.NS.Do(fn)
}

func linkByMAC(mac string) (netlink.Link, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return nil, fmt.Errorf("bad ENI MAC %q: %w", mac, err)
	}
	links, err := nlretry.Dump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if l.Attrs().HardwareAddr.String() == hw.String() {
			return l, nil
		}
	}
	return nil, nil
}

func sysctl(path, val string) error {
	if err := os.WriteFile("/proc/sys/"+path, []byte(val), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", path, val, err)
	}
	return nil
}

// ENIUp finds the ENI's link by MAC, brings it up and fills its table.
func (n *Node) ENIUp(ctx context.Context, eni cloudnode.ENIInfo) (string, int, error) {
	wait := n.LinkWait
	if wait == 0 {
		wait = 30 * time.Second
	}
	deadline := time.Now().Add(wait)
	var name string
	var table int
	for {
		var found bool
		err := n.do(func() error {
			l, err := linkByMAC(eni.MAC)
			if err != nil || l == nil {
				return err
			}
			found = true
			name, table = l.Attrs().Name, TableBase+l.Attrs().Index
			return n.programENI(l, eni, table)
		})
		if err != nil {
			return "", 0, fmt.Errorf("ENI %s: %w", eni.ID, err)
		}
		if found {
			return name, table, nil
		}
		if time.Now().After(deadline) {
			return "", 0, fmt.Errorf("ENI %s: no link with MAC %s appeared within %s (is the ENI attached to this instance?)", eni.ID, eni.MAC, wait)
		}
		select {
		case <-ctx.Done():
			return "", 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (n *Node) programENI(l netlink.Link, eni cloudnode.ENIInfo, table int) error {
	name := l.Attrs().Name
	for _, s := range [][2]string{
		{"net/ipv4/conf/" + name + "/proxy_arp", "1"}, // answer the vSwitch for our pods
		// loose, not 0: the kernel uses max(all, dev), so 0 would still be
		// strict on hosts with conf/all/rp_filter=1, and strict drops what
		// ipvlan pods send up the ENI (their /32 routes point at the stv slave)
		{"net/ipv4/conf/" + name + "/rp_filter", "2"},
		{"net/ipv4/ip_forward", "1"},
	} {
		if err := sysctl(s[0], s[1]); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	// the primary IP as a /32: ARP source on the ENI, no main-table subnet route
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: eni.PrimaryIP.AsSlice(), Mask: net.CIDRMask(32, 32)}, Flags: unix.IFA_F_NOPREFIXROUTE}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", eni.PrimaryIP, name, err)
	}
	cidr := eni.CIDR.Masked()
	routes := []*netlink.Route{
		{LinkIndex: l.Attrs().Index, Dst: prefixNet(cidr), Scope: netlink.SCOPE_LINK, Table: table, Protocol: rtproto.ENI},
		{LinkIndex: l.Attrs().Index, Dst: prefixNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: eni.Gateway.AsSlice(),
			Flags: int(netlink.FLAG_ONLINK), Table: table, Protocol: rtproto.ENI},
	}
	for _, r := range routes {
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s in table %d: %w", r.Dst, table, err)
		}
	}
	for _, p := range n.HostBound {
		if err := ensureRule(PrioHostBound, netip.Prefix{}, p, unix.RT_TABLE_MAIN); err != nil {
			return err
		}
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ruleMatches(r netlink.Rule, prio int, src, dst netip.Prefix, table int) bool {
	same := func(n *net.IPNet, p netip.Prefix) bool {
		if !p.IsValid() {
			return n == nil
		}
		return n != nil && n.String() == p.String()
	}
	return r.Priority == prio && r.Table == table && same(r.Src, src) && same(r.Dst, dst)
}

func ensureRule(prio int, src, dst netip.Prefix, table int) error {
	rules, err := nlretry.Dump(func() ([]netlink.Rule, error) { return netlink.RuleList(netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	for _, r := range rules {
		if ruleMatches(r, prio, src, dst, table) {
			return nil
		}
	}
	r := netlink.NewRule()
	r.Priority, r.Table, r.Family = prio, table, netlink.FAMILY_V4
	if src.IsValid() {
		r.Src = prefixNet(src)
	}
	if dst.IsValid() {
		r.Dst = prefixNet(dst)
	}
	if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("rule prio %d from %v to %v lookup %d: %w", prio, src, dst, table, err)
	}
	return nil
}

func deleteRules(match func(netlink.Rule) bool) error {
	rules, err := nlretry.Dump(func() ([]netlink.Rule, error) { return netlink.RuleList(netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	var errs []error
	for _, r := range rules {
		if match(r) {
			if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// ENIDown removes the ENI's table routes (its link goes away with detach).
func (n *Node) ENIDown(ctx context.Context, eni cloudnode.ENIInfo) error {
	return n.do(func() error {
		l, err := linkByMAC(eni.MAC)
		if err != nil || l == nil {
			return err
		}
		table := TableBase + l.Attrs().Index
		routes, err := nlretry.Dump(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: table, Protocol: rtproto.ENI},
				netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			return err
		}
		for _, r := range routes {
			_ = netlink.RouteDel(&r)
		}
		return nil
	})
}

// Prune removes per-pod rules and routes of addresses not in keep.
func (n *Node) Prune(ctx context.Context, keep map[netip.Addr]bool) error {
	return n.do(func() error {
		stale := func(ipn *net.IPNet) bool {
			if ipn == nil {
				return false
			}
			p, ok := netip.AddrFromSlice(ipn.IP)
			ones, _ := ipn.Mask.Size()
			return ok && ones == 32 && !keep[p.Unmap()]
		}
		if err := deleteRules(func(r netlink.Rule) bool {
			return (r.Priority == PrioFromPod && stale(r.Src)) || (r.Priority == PrioToPod && stale(r.Dst))
		}); err != nil {
			return err
		}
		routes, err := nlretry.Dump(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: rtproto.ENI},
				netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			return err
		}
		for _, r := range routes {
			if stale(r.Dst) {
				_ = netlink.RouteDel(&r)
			}
		}
		// host routes of ipvlan pods (on the node's own slaves of the ENIs)
		// whose DEL never came: only the plugin's pod records name them
		podRoutes, err := nlretry.Dump(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: rtproto.Pod},
				netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			return err
		}
		for _, r := range podRoutes {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && strings.HasPrefix(l.Attrs().Name, plugin.HostIPVlanPrefix) && stale(r.Dst) {
				_ = netlink.RouteDel(&r)
			}
		}
		return nil
	})
}
