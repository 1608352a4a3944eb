package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/internal/rtproto"
)

// ENIIP over ipvlan (Terway's layout). The pod's interface is an ipvlan L2
// slave of the ENI, so its frames leave by the ENI with the ENI's MAC and no
// host routing: egress needs no per-pod rule to pick the ENI.
//
// An ipvlan master never hands its own transmissions to its slaves, so the
// node cannot reach its pods through the ENI. The node therefore owns one
// more slave of each ENI, HostIPVlanPrefix + 12 hex digits derived from the
// ENI's link name, carrying HostVia (the ENI's primary IP) as a /32, and a
// main-table route `<pod>/32 dev <that slave>` per pod. In the pod, HostVia is
// on-link. Allocation.Direct (the VPC CIDR) goes to the vSwitch gateway and
// the default route via HostVia, so destinations the node learns after ADD
// (overlay and BGP pod CIDRs, unknown to the VPC) reach the host without a
// change in the pod; host-bound CIDRs (Allocation.Routes: the service CIDR)
// go via HostVia even inside the VPC. Without Direct (an agent that does not
// know its VPC) the default goes to the gateway and only Routes take the
// host. A frame the pod sends to HostVia's MAC
// (the ENI's, shared by all slaves) is switched inside ipvlan: to the slave
// owning the destination IP, else up the ENI's own stack, so the host
// routes it. The rule `from <pod> lookup <ENI table>` is still added: what
// the host forwards on a pod's behalf (e.g. after service DNAT) must leave by
// the ENI that owns the source address.
//
// Per-pod fallback: a kernel without ipvlan refuses the first ipvlan link
// with EOPNOTSUPP before anything exists; setup then wires the same address
// veth-routed (vethFallback), which CHECK, DEL and GC recognise by its host
// veth.

// HostIPVlanPrefix starts the name of the node's own ipvlan slave of an ENI.
const HostIPVlanPrefix = "stv"

// ipvlanAliasPrefix labels a pod's ipvlan slave "strata-ipvl:<ip>/<table>/<host slave>",
// so DEL finds the host side from the pod alone.
const ipvlanAliasPrefix = "strata-ipvl:"

// VethGateway is the link-local gateway of veth-routed pods (cloudnode.PodGateway).
var VethGateway = netip.MustParseAddr("169.254.1.1")

// addIPVlan creates an ipvlan link; tests replace it to play a kernel
// without ipvlan on one that has it.
var addIPVlan = func(l *netlink.IPVlan) error { return netlink.LinkAdd(l) }

// errIPVlanUnsupported marks a kernel without ipvlan.
var errIPVlanUnsupported = errors.New("the kernel has no ipvlan")

func hostIPVlanName(eniLink string) string {
	h := sha256.Sum256([]byte(eniLink))
	return HostIPVlanPrefix + hex.EncodeToString(h[:])[:12]
}

// plannedRoute is one route inside the pod; an invalid Via means on-link.
type plannedRoute struct {
	Dst netip.Prefix
	Via netip.Addr
}

// ipvlanPlan is everything ADD creates for an ipvlan pod, computed without
// touching the kernel.
type ipvlanPlan struct {
	Parent    string       // the ENI link, master of both slaves
	HostLink  string       // the node's own slave of the ENI
	HostAddr  netip.Prefix // HostVia/32 on HostLink
	PodLink   string       // CNI_IFNAME, created directly in the pod
	PodAddr   netip.Prefix
	MTU       int
	PodRoutes []plannedRoute // HostVia on-link first, then default, then direct, then host-bound
	HostRoute netip.Prefix   // <pod>/32 dev HostLink src HostVia, main table, proto rtproto.Pod
	RuleTable int            // `from <pod> lookup RuleTable` at rulePriority; 0: none
	Alias     string         // on the pod link, for DEL
}

var defaultRoute = netip.MustParsePrefix("0.0.0.0/0")

// planIPVlan checks the allocation and lays out the ipvlan wiring.
func planIPVlan(ifName string, a wire.Allocation) (ipvlanPlan, error) {
	if err := validateAlloc(a); err != nil {
		return ipvlanPlan{}, err
	}
	if a.ENILink == "" {
		return ipvlanPlan{}, errors.New(`agent asked for datapath "ipvlan" but named no ENI link (field "eniLink")`)
	}
	if !a.HostVia.IsValid() || !a.HostVia.Is4() {
		return ipvlanPlan{}, fmt.Errorf(`agent asked for datapath "ipvlan" with host address %v (field "hostVia"): want the ENI's primary IPv4 address`, a.HostVia)
	}
	if a.HostVia == a.Addr.Addr() || a.Gateway == a.Addr.Addr() {
		return ipvlanPlan{}, fmt.Errorf("agent gave pod address %s that is also its gateway %s or host address %s", a.Addr, a.Gateway, a.HostVia)
	}
	if a.Table < 0 {
		return ipvlanPlan{}, fmt.Errorf(`agent returned table %d (field "table"): want 0 or a table number`, a.Table)
	}
	if a.MTU == 0 {
		a.MTU = 1500
	}
	pod := a.Addr.Addr()
	p := ipvlanPlan{
		Parent: a.ENILink, HostLink: hostIPVlanName(a.ENILink), HostAddr: netip.PrefixFrom(a.HostVia, 32),
		PodLink: ifName, PodAddr: a.Addr, MTU: a.MTU,
		PodRoutes: []plannedRoute{{Dst: netip.PrefixFrom(a.HostVia, 32)}, {Dst: defaultRoute, Via: a.Gateway}},
		HostRoute: netip.PrefixFrom(pod, 32), RuleTable: a.Table,
		Alias: fmt.Sprintf("%s%s/%d/%s", ipvlanAliasPrefix, pod, a.Table, hostIPVlanName(a.ENILink)),
	}
	if len(a.Direct) > 0 {
		// Only the VPC goes straight to the vSwitch gateway; everything else
		// takes the host, which knows the overlay and BGP routes of the day.
		p.PodRoutes[1].Via = a.HostVia
		for _, d := range a.Direct {
			if !d.IsValid() || !d.Addr().Is4() || d.Bits() == 0 {
				return ipvlanPlan{}, fmt.Errorf(`agent returned direct destination %v (field "direct"): want the VPC's IPv4 CIDR, not the default`, d)
			}
			p.PodRoutes = append(p.PodRoutes, plannedRoute{Dst: d.Masked(), Via: a.Gateway})
		}
	}
	for _, r := range a.Routes {
		if !r.IsValid() || !r.Addr().Is4() || r.Bits() == 0 {
			return ipvlanPlan{}, fmt.Errorf(`agent returned route %v (field "routes"): want an IPv4 prefix other than the default`, r)
		}
		p.PodRoutes = append(p.PodRoutes, plannedRoute{Dst: r.Masked(), Via: a.HostVia})
	}
	return p, nil
}

// parseIPVlanAlias reads a pod slave's alias back: pod address, table, host slave.
func parseIPVlanAlias(alias string) (netip.Addr, int, string, bool) {
	rest, ok := strings.CutPrefix(alias, ipvlanAliasPrefix)
	if !ok {
		return netip.Addr{}, 0, "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return netip.Addr{}, 0, "", false
	}
	ip, err := netip.ParseAddr(parts[0])
	table, terr := strconv.Atoi(parts[1])
	if err != nil || terr != nil || !strings.HasPrefix(parts[2], HostIPVlanPrefix) {
		return netip.Addr{}, 0, "", false
	}
	return ip, table, parts[2], true
}

// vethFallback is the veth-routed form of an ipvlan allocation: same address
// and ENI table, the link-local gateway, and no host-bound routes (a veth pod
// sends everything to the host anyway).
func vethFallback(a wire.Allocation) wire.Allocation {
	a.Datapath, a.Gateway, a.Routes, a.HostVia, a.Direct = role.DatapathVethRouted, VethGateway, nil, netip.Addr{}, nil
	return a
}

func isUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || (err != nil && strings.Contains(err.Error(), "not supported"))
}

// ensureHostIPVlan makes (or keeps) the node's slave of the ENI with HostVia.
func ensureHostIPVlan(p ipvlanPlan, eni netlink.Link) error {
	l, err := netlink.LinkByName(p.HostLink)
	if err == nil {
		if iv, ok := l.(*netlink.IPVlan); ok && iv.ParentIndex == eni.Attrs().Index {
			return configureHostIPVlan(p, l)
		}
		// left from an earlier link of that name (the ENI was re-attached)
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
			return fmt.Errorf("replace stale host ipvlan %s: %w", p.HostLink, err)
		}
	} else if !isNotFound(err) {
		return fmt.Errorf("look up host ipvlan %s: %w", p.HostLink, err)
	}
	hl := &netlink.IPVlan{LinkAttrs: netlink.LinkAttrs{Name: p.HostLink, ParentIndex: eni.Attrs().Index, MTU: eni.Attrs().MTU},
		Mode: netlink.IPVLAN_MODE_L2}
	if err := addIPVlan(hl); err != nil && !errors.Is(err, unix.EEXIST) {
		if isUnsupported(err) {
			return fmt.Errorf("create host ipvlan %s on %s: %w (%w)", p.HostLink, p.Parent, errIPVlanUnsupported, err)
		}
		return fmt.Errorf("create host ipvlan %s on %s: %w", p.HostLink, p.Parent, err)
	}
	l, err = netlink.LinkByName(p.HostLink)
	if err != nil {
		return fmt.Errorf("find host ipvlan %s: %w", p.HostLink, err)
	}
	return configureHostIPVlan(p, l)
}

func configureHostIPVlan(p ipvlanPlan, l netlink.Link) error {
	addr := &netlink.Addr{IPNet: toIPNet(p.HostAddr), Flags: unix.IFA_F_NOPREFIXROUTE}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("address %s on host ipvlan %s: %w", p.HostAddr, p.HostLink, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set host ipvlan %s up: %w", p.HostLink, err)
	}
	return nil
}

func hostIPVlanRoute(p ipvlanPlan, hostIndex int) *netlink.Route {
	return &netlink.Route{LinkIndex: hostIndex, Dst: toIPNet(p.HostRoute), Src: p.HostAddr.Addr().AsSlice(),
		Scope: netlink.SCOPE_LINK, Protocol: rtproto.Pod}
}

// setupIPVlan wires an ipvlan pod. On error nothing of the pod's is left;
// the host slave stays (it is the ENI's, shared by its pods). An error
// wrapping errIPVlanUnsupported means nothing was made at all.
func setupIPVlan(netns ns.NetNS, args *skel.CmdArgs, a wire.Allocation) (res *current.Result, err error) {
	p, err := planIPVlan(args.IfName, a)
	if err != nil {
		return nil, err
	}
	eni, err := netlink.LinkByName(p.Parent)
	if err != nil {
		return nil, fmt.Errorf("find ENI %s on the node: %w", p.Parent, err)
	}
	if a.ENIMAC != "" && !strings.EqualFold(eni.Attrs().HardwareAddr.String(), a.ENIMAC) {
		return nil, fmt.Errorf("ENI %s has MAC %s, the agent expects %s: refusing to wire pods to the wrong interface", p.Parent, eni.Attrs().HardwareAddr, a.ENIMAC)
	}
	if err := ensureHostIPVlan(p, eni); err != nil {
		return nil, err
	}
	host, err := netlink.LinkByName(p.HostLink)
	if err != nil {
		return nil, fmt.Errorf("find host ipvlan %s: %w", p.HostLink, err)
	}
	podLink := &netlink.IPVlan{LinkAttrs: netlink.LinkAttrs{Name: p.PodLink, ParentIndex: eni.Attrs().Index, MTU: p.MTU,
		Namespace: netlink.NsFd(int(netns.Fd()))}, Mode: netlink.IPVLAN_MODE_L2}
	if err := addIPVlan(podLink); err != nil {
		if isUnsupported(err) {
			return nil, fmt.Errorf("create ipvlan %s on %s in the pod: %w (%w)", p.PodLink, p.Parent, errIPVlanUnsupported, err)
		}
		return nil, fmt.Errorf("create ipvlan %s on %s in the pod: %w", p.PodLink, p.Parent, err)
	}
	defer func() {
		if err != nil {
			if rerr := removeIPVlanPod(netns, p.PodLink, p.HostRoute.Addr(), p.RuleTable); rerr != nil {
				err = fmt.Errorf("%w; cleanup also failed: %v", err, rerr)
			}
		}
	}()
	if err := netlink.RouteReplace(hostIPVlanRoute(p, host.Attrs().Index)); err != nil {
		return nil, fmt.Errorf("add host route %s dev %s: %w", p.HostRoute, p.HostLink, err)
	}
	if p.RuleTable != 0 {
		if err := netlink.RuleAdd(podRule(a)); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("add rule from %s lookup %d: %w", p.HostRoute.Addr(), p.RuleTable, err)
		}
	}
	var mac string
	var routes []*types.Route
	err = netns.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(p.PodLink)
		if err != nil {
			return fmt.Errorf("find %s in the pod: %w", p.PodLink, err)
		}
		mac = link.Attrs().HardwareAddr.String()
		if err := netlink.LinkSetAlias(link, p.Alias); err != nil {
			return fmt.Errorf("label %s in the pod: %w", p.PodLink, err)
		}
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: toIPNet(p.PodAddr)}); err != nil {
			return fmt.Errorf("add address %s to %s in the pod: %w", p.PodAddr, p.PodLink, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up in the pod: %w", p.PodLink, err)
		}
		for _, pr := range p.PodRoutes {
			r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: toIPNet(pr.Dst)}
			if pr.Via.IsValid() {
				r.Gw, r.Flags = pr.Via.AsSlice(), int(netlink.FLAG_ONLINK)
			} else {
				r.Scope = netlink.SCOPE_LINK
			}
			if err := netlink.RouteReplace(r); err != nil {
				return fmt.Errorf("add route %s via %v in the pod: %w", pr.Dst, pr.Via, err)
			}
			rt := &types.Route{Dst: *toIPNet(pr.Dst)}
			if pr.Via.IsValid() {
				rt.GW = pr.Via.AsSlice()
			}
			routes = append(routes, rt)
		}
		return addBlockedRoutes(a)
	})
	if err != nil {
		return nil, err
	}
	zero := 0
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: p.PodLink, Mac: mac, Mtu: p.MTU, Sandbox: args.Netns}},
		IPs:        []*current.IPConfig{{Interface: &zero, Address: *toIPNet(p.PodAddr), Gateway: a.Gateway.AsSlice()}},
		Routes:     routes,
	}, nil
}

// removeIPVlanHost deletes a pod's host route (on a node ipvlan slave only)
// and its egress rule. Missing pieces are fine.
func removeIPVlanHost(pod netip.Addr, table int) error {
	dst := toIPNet(netip.PrefixFrom(pod, 32))
	routes, err := nlretry.Dump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst, Protocol: rtproto.Pod}, netlink.RT_FILTER_DST|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return fmt.Errorf("list host routes to %s: %w", pod, err)
	}
	var errs []error
	for _, r := range routes {
		l, lerr := netlink.LinkByIndex(r.LinkIndex)
		if lerr != nil || !strings.HasPrefix(l.Attrs().Name, HostIPVlanPrefix) {
			continue // a veth pod's route is its veth's to remove
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete host route %s dev %s: %w", pod, l.Attrs().Name, err))
		}
	}
	if table != 0 {
		if err := netlink.RuleDel(podRule(wire.Allocation{Addr: netip.PrefixFrom(pod, 32), Table: table})); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete rule from %s lookup %d: %w", pod, table, err))
		}
	}
	return errors.Join(errs...)
}

// removeIPVlanPod deletes the pod's slave (if its namespace is still there)
// and the pod's host side.
func removeIPVlanPod(netns ns.NetNS, ifName string, pod netip.Addr, table int) error {
	var errs []error
	if netns != nil {
		errs = append(errs, netns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(ifName)
			if isNotFound(err) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("look up %s in the pod: %w", ifName, err)
			}
			if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
				return fmt.Errorf("delete %s in the pod: %w", ifName, err)
			}
			return nil
		}))
	}
	errs = append(errs, removeIPVlanHost(pod, table))
	return errors.Join(errs...)
}

// checkIPVlanHost verifies the node's side of an ipvlan pod.
func checkIPVlanHost(a wire.Allocation, ifName string) error {
	p, err := planIPVlan(ifName, a)
	if err != nil {
		return err
	}
	host, err := netlink.LinkByName(p.HostLink)
	if err != nil {
		return fmt.Errorf("host ipvlan %s: %w", p.HostLink, err)
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host ipvlan %s is down", p.HostLink)
	}
	if err := hasHostRoute(host, p.HostRoute); err != nil {
		return err
	}
	return nil
}

// hasHostRoute checks the proto rtproto.Pod /32 route to the pod on link.
func hasHostRoute(link netlink.Link, dst netip.Prefix) error {
	routes, err := nlretry.Dump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: toIPNet(dst), Protocol: rtproto.Pod}, netlink.RT_FILTER_DST|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return fmt.Errorf("list host routes: %w", err)
	}
	for _, r := range routes {
		if r.LinkIndex == link.Attrs().Index {
			return nil
		}
	}
	return fmt.Errorf("host route %s dev %s is missing", dst, link.Attrs().Name)
}
