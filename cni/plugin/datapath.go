package plugin

import (
	"crypto/rand"
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
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/internal/rtproto"
)

// HostVethPrefix starts the name of every host-side pod veth.
const HostVethPrefix = "stc"

// Link aliases let DEL and GC undo ADD without asking the agent: the host
// veth of a pod with a policy-routing table carries "strata:<ip>/<table>"; a
// moved ENI carries "strata-eni:<original name>" inside the pod.
const (
	tableAliasPrefix = "strata:"
	eniAliasPrefix   = "strata-eni:"
)

// rulePriority is the priority of `from <pod> lookup <table>` rules: after
// the local table, before main.
const rulePriority = 2000

// hostVethName is derived from the attachment, so DEL finds the link even
// when the pod's namespace is gone.
func hostVethName(containerID, ifName string) string {
	h := sha256.Sum256([]byte(containerID + "/" + ifName))
	return HostVethPrefix + hex.EncodeToString(h[:])[:12]
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// ifNameFree fails with code 4 when the pod already has ifName.
func ifNameFree(netns ns.NetNS, ifName string) error {
	return netns.Do(func(ns.NetNS) error {
		_, err := netlink.LinkByName(ifName)
		switch {
		case err == nil:
			return types.NewError(types.ErrInvalidEnvironmentVariables,
				fmt.Sprintf("CNI_IFNAME %q already exists in CNI_NETNS %s", ifName, netns.Path()),
				"choose another interface name, or DEL the previous attachment first")
		case isNotFound(err):
			return nil
		default:
			return fmt.Errorf("look up %s in %s: %w", ifName, netns.Path(), err)
		}
	})
}

func randomMAC() net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	_, _ = rand.Read(m)
	m[0] = (m[0] | 0x02) &^ 0x01 // locally administered, unicast
	return m
}

func toIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

var defaultDst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}

func validateAlloc(a wire.Allocation) error {
	if !a.Addr.IsValid() || !a.Addr.Addr().Is4() {
		return fmt.Errorf("agent returned address %v: want an IPv4 prefix", a.Addr)
	}
	if !a.Gateway.IsValid() || !a.Gateway.Is4() {
		return fmt.Errorf("agent returned gateway %v: want an IPv4 address", a.Gateway)
	}
	if a.MTU != 0 && (a.MTU < 576 || a.MTU > 65535) {
		return fmt.Errorf("agent returned MTU %d: want 576..65535", a.MTU)
	}
	return nil
}

// setup wires the pod and returns the result. On error nothing it made is
// left behind (the caller releases the address).
func setup(netns ns.NetNS, args *skel.CmdArgs, a wire.Allocation) (*current.Result, error) {
	if err := validateAlloc(a); err != nil {
		return nil, err
	}
	if a.MTU == 0 {
		a.MTU = 1500
	}
	switch a.Datapath {
	case role.DatapathVethRouted:
		return setupVeth(netns, args, a)
	case role.DatapathExclusiveENI:
		return setupENI(netns, args, a)
	case role.DatapathIPVlan:
		res, err := setupIPVlan(netns, args, a)
		if errors.Is(err, errIPVlanUnsupported) {
			// Nothing was made: wire the same address veth-routed instead.
			return setupVeth(netns, args, vethFallback(a))
		}
		return res, err
	default:
		return nil, fmt.Errorf("agent asked for datapath %q, which this strata-cni does not implement (it does %s, %s and %s)", a.Datapath, role.DatapathVethRouted, role.DatapathIPVlan, role.DatapathExclusiveENI)
	}
}

// podRoutes adds the default and extra routes via the gateway, onlink so no
// separate gateway route is needed.
func podRoutes(link netlink.Link, a wire.Allocation) ([]*types.Route, error) {
	gw := net.IP(a.Gateway.AsSlice())
	dsts := append([]*net.IPNet{defaultDst}, nil...)
	for _, r := range a.Routes {
		dsts = append(dsts, toIPNet(r))
	}
	out := make([]*types.Route, 0, len(dsts))
	for _, d := range dsts {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: d, Gw: gw, Flags: int(netlink.FLAG_ONLINK)}
		if err := netlink.RouteAdd(r); err != nil {
			return nil, fmt.Errorf("add route %s via %s in the pod: %w", d, gw, err)
		}
		out = append(out, &types.Route{Dst: *d, GW: gw})
	}
	return out, nil
}

// configurePod sets address, MTU, up and routes on the pod's interface.
func configurePod(link netlink.Link, a wire.Allocation) ([]*types.Route, error) {
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: toIPNet(a.Addr)}); err != nil {
		return nil, fmt.Errorf("add address %s to %s in the pod: %w", a.Addr, link.Attrs().Name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up in the pod: %w", link.Attrs().Name, err)
	}
	routes, err := podRoutes(link, a)
	if err != nil {
		return nil, err
	}
	return routes, addBlockedRoutes(a)
}

func setupVeth(netns ns.NetNS, args *skel.CmdArgs, a wire.Allocation) (res *current.Result, err error) {
	hostName := hostVethName(args.ContainerID, args.IfName)
	hostMAC, podMAC := randomMAC(), randomMAC()
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: hostName, MTU: a.MTU, HardwareAddr: hostMAC},
		PeerName:         args.IfName,
		PeerHardwareAddr: podMAC,
		PeerNamespace:    netlink.NsFd(int(netns.Fd())),
	}
	err = netlink.LinkAdd(veth)
	if errors.Is(err, unix.EEXIST) {
		// A host veth left by a crashed ADD of this same attachment (the pod
		// side was checked free): replace it.
		if rerr := removeHostVeth(hostName); rerr != nil {
			return nil, rerr
		}
		err = netlink.LinkAdd(veth)
	}
	if err != nil {
		return nil, fmt.Errorf("create veth %s <-> %s: %w", hostName, args.IfName, err)
	}
	defer func() {
		if err != nil {
			// Deleting one end deletes both, and the routes through them.
			if rerr := removeHostVeth(hostName); rerr != nil {
				err = fmt.Errorf("%w; cleanup also failed: %v", err, rerr)
			}
			if a.Table != 0 {
				_ = netlink.RuleDel(podRule(a))
			}
		}
	}()

	// Host side: proxy ARP answers the pod's link-local gateway at once.
	for _, kv := range [][2]string{
		{"net/ipv4/conf/" + hostName + "/proxy_arp", "1"},
		{"net/ipv4/neigh/" + hostName + "/proxy_delay", "0"},
	} {
		if _, err := sysctl.Sysctl(kv[0], kv[1]); err != nil {
			return nil, fmt.Errorf("set sysctl %s=%s: %w", kv[0], kv[1], err)
		}
	}
	if err := markHostVeth(veth, a); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return nil, fmt.Errorf("set host veth %s up: %w", hostName, err)
	}
	if err := netlink.RouteAdd(&netlink.Route{
		LinkIndex: veth.Attrs().Index, Dst: toIPNet(netip.PrefixFrom(a.Addr.Addr(), 32)),
		Scope: netlink.SCOPE_LINK, Protocol: rtproto.Pod,
	}); err != nil {
		return nil, fmt.Errorf("add host route %s dev %s: %w", a.Addr.Addr(), hostName, err)
	}
	if a.Table != 0 {
		if err := netlink.LinkSetAlias(veth, fmt.Sprintf("%s%s/%d", tableAliasPrefix, a.Addr.Addr(), a.Table)); err != nil {
			return nil, fmt.Errorf("label host veth %s: %w", hostName, err)
		}
		if err := netlink.RuleAdd(podRule(a)); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("add rule from %s lookup %d: %w", a.Addr.Addr(), a.Table, err)
		}
	}

	var routes []*types.Route
	err = netns.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("find %s in the pod: %w", args.IfName, err)
		}
		// The gateway's MAC is known: a permanent entry spares every pod its
		// first ARP round trip and works even when the node has no route to
		// 169.254.1.1 (which proxy ARP needs).
		if err := netlink.NeighAdd(&netlink.Neigh{
			LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: a.Gateway.AsSlice(), HardwareAddr: hostMAC,
		}); err != nil {
			return fmt.Errorf("add gateway neighbour %s in the pod: %w", a.Gateway, err)
		}
		routes, err = configurePod(link, a)
		return err
	})
	if err != nil {
		return nil, err
	}
	zero := 1
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: hostName, Mac: hostMAC.String(), Mtu: a.MTU},
			{Name: args.IfName, Mac: podMAC.String(), Mtu: a.MTU, Sandbox: args.Netns},
		},
		IPs:    []*current.IPConfig{{Interface: &zero, Address: *toIPNet(a.Addr), Gateway: a.Gateway.AsSlice()}},
		Routes: routes,
	}, nil
}

func podRule(a wire.Allocation) *netlink.Rule {
	r := netlink.NewRule()
	r.Src = toIPNet(netip.PrefixFrom(a.Addr.Addr(), 32))
	r.Table = a.Table
	r.Priority = rulePriority
	return r
}

// setupENI moves the whole ENI into the pod (exclusive mode).
func setupENI(netns ns.NetNS, args *skel.CmdArgs, a wire.Allocation) (res *current.Result, err error) {
	if a.ENILink == "" {
		return nil, errors.New("agent asked for an exclusive ENI but named no ENI link")
	}
	eni, err := netlink.LinkByName(a.ENILink)
	if err != nil {
		return nil, fmt.Errorf("find ENI %s on the node: %w", a.ENILink, err)
	}
	if a.ENIMAC != "" && !strings.EqualFold(eni.Attrs().HardwareAddr.String(), a.ENIMAC) {
		return nil, fmt.Errorf("ENI %s has MAC %s, the agent expects %s: refusing to move the wrong interface", a.ENILink, eni.Attrs().HardwareAddr, a.ENIMAC)
	}
	host, err := ns.GetCurrentNS()
	if err != nil {
		return nil, fmt.Errorf("open the node's namespace: %w", err)
	}
	defer func() { _ = host.Close() }()
	if err := netlink.LinkSetNsFd(eni, int(netns.Fd())); err != nil {
		return nil, fmt.Errorf("move ENI %s into the pod: %w", a.ENILink, err)
	}
	defer func() {
		if err != nil {
			if rerr := netns.Do(func(ns.NetNS) error {
				// The ENI may still carry its own name if the rename failed.
				if err := returnENI(args.IfName, a.ENILink, int(host.Fd())); err != nil {
					return err
				}
				return returnENI(a.ENILink, a.ENILink, int(host.Fd()))
			}); rerr != nil {
				err = fmt.Errorf("%w; returning ENI %s to the node also failed: %v", err, a.ENILink, rerr)
			}
		}
	}()
	var routes []*types.Route
	var mac string
	err = netns.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(a.ENILink)
		if err != nil {
			return fmt.Errorf("find ENI %s in the pod: %w", a.ENILink, err)
		}
		if err := netlink.LinkSetName(link, args.IfName); err != nil {
			return fmt.Errorf("rename ENI %s to %s: %w", a.ENILink, args.IfName, err)
		}
		link.Attrs().Name = args.IfName
		if err := netlink.LinkSetAlias(link, eniAliasPrefix+a.ENILink); err != nil {
			return fmt.Errorf("label ENI %s: %w", args.IfName, err)
		}
		if err := netlink.LinkSetMTU(link, a.MTU); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", a.MTU, args.IfName, err)
		}
		mac = link.Attrs().HardwareAddr.String()
		routes, err = configurePod(link, a)
		return err
	})
	if err != nil {
		return nil, err
	}
	zero := 0
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: args.IfName, Mac: mac, Mtu: a.MTU, Sandbox: args.Netns}},
		IPs:        []*current.IPConfig{{Interface: &zero, Address: *toIPNet(a.Addr), Gateway: a.Gateway.AsSlice()}},
		Routes:     routes,
	}, nil
}

// returnENI runs inside the pod: it gives a moved ENI back its name and
// moves it to the node's namespace hostFd.
func returnENI(ifName, origName string, hostFd int) error {
	link, err := netlink.LinkByName(ifName)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if origName == "" {
		origName = strings.TrimPrefix(link.Attrs().Alias, eniAliasPrefix)
	}
	_ = netlink.LinkSetDown(link)
	if addrs, err := nlretry.Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(link, netlink.FAMILY_ALL) }); err == nil {
		for _, ad := range addrs {
			_ = netlink.AddrDel(link, &ad)
		}
	}
	if err := netlink.LinkSetName(link, origName); err != nil {
		return fmt.Errorf("rename %s back to %s: %w", ifName, origName, err)
	}
	_ = netlink.LinkSetAlias(link, "")
	if err := netlink.LinkSetNsFd(link, hostFd); err != nil {
		return fmt.Errorf("move %s back to the node: %w", origName, err)
	}
	return nil
}

// removeHostVeth deletes a host veth (and with it the pod end and its
// routes) and the policy rule its alias records. Missing is fine.
func removeHostVeth(name string) error {
	link, err := netlink.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up host veth %s: %w", name, err)
	}
	return removeHostVethLink(link)
}

func removeHostVethLink(link netlink.Link) error {
	name := link.Attrs().Name
	if al := link.Attrs().Alias; strings.HasPrefix(al, tableAliasPrefix) {
		if ipStr, tStr, ok := strings.Cut(strings.TrimPrefix(al, tableAliasPrefix), "/"); ok {
			addr, aerr := netip.ParseAddr(ipStr)
			table, terr := strconv.Atoi(tStr)
			if aerr == nil && terr == nil {
				err := netlink.RuleDel(podRule(wire.Allocation{Addr: netip.PrefixFrom(addr, 32), Table: table}))
				if err != nil && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("delete rule from %s lookup %d: %w", addr, table, err)
				}
			}
		}
	}
	if err := netlink.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete host veth %s: %w", name, err)
	}
	return nil
}

// teardown undoes ADD's links. It is idempotent: a missing namespace,
// link or rule is not an error. found is false when it found no trace of the
// attachment on the node or in the pod (e.g. an ipvlan pod whose namespace is
// gone): the caller asks the agent what the attachment was.
func teardown(netnsPath, containerID, ifName string) (found bool, err error) {
	hostName := hostVethName(containerID, ifName)
	link, err := netlink.LinkByName(hostName)
	if err == nil {
		return true, removeHostVethLink(link)
	}
	if !isNotFound(err) {
		return false, fmt.Errorf("look up host veth %s: %w", hostName, err)
	}
	// No host veth: an exclusive ENI or an ipvlan slave may sit in the pod.
	if netnsPath == "" {
		return false, nil
	}
	netns, err := ns.GetNS(netnsPath)
	if err != nil {
		return false, nil // the namespace is gone, and a moved ENI went back with it
	}
	defer func() { _ = netns.Close() }()
	host, err := ns.GetCurrentNS()
	if err != nil {
		return false, fmt.Errorf("open the node's namespace: %w", err)
	}
	defer func() { _ = host.Close() }()
	var ipvlanPod netip.Addr
	var ipvlanTable int
	err = netns.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(ifName)
		if isNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("look up %s in the pod: %w", ifName, err)
		}
		if strings.HasPrefix(link.Attrs().Alias, eniAliasPrefix) {
			found = true
			return returnENI(ifName, "", int(host.Fd()))
		}
		if pod, table, _, ok := parseIPVlanAlias(link.Attrs().Alias); ok {
			found, ipvlanPod, ipvlanTable = true, pod, table
		}
		return nil
	})
	if err != nil || !ipvlanPod.IsValid() {
		return found, err
	}
	return true, removeIPVlanPod(netns, ifName, ipvlanPod, ipvlanTable)
}

// teardownByAllocation removes what teardown could not find from the node
// alone: the host route and rule of an ipvlan pod whose namespace is gone.
func teardownByAllocation(a wire.Allocation) error {
	if a.Datapath != role.DatapathIPVlan || !a.Addr.IsValid() {
		return nil
	}
	return removeIPVlanHost(a.Addr.Addr(), a.Table)
}

// checkVethHost verifies a host veth is up with proxy ARP and the pod's route.
func checkVethHost(hostName string, pod netip.Addr) error {
	link, err := netlink.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", hostName, err)
	}
	if link.Attrs().OperState == netlink.OperDown || link.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host veth %s is down", hostName)
	}
	if v, err := sysctl.Sysctl("net/ipv4/conf/" + hostName + "/proxy_arp"); err != nil || strings.TrimSpace(v) != "1" {
		return fmt.Errorf("proxy_arp is off on %s", hostName)
	}
	return hasHostRoute(link, netip.PrefixFrom(pod, 32))
}

// check verifies the pod and host side against the allocation.
func check(netns ns.NetNS, args *skel.CmdArgs, a wire.Allocation) error {
	if a.MTU == 0 {
		a.MTU = 1500
	}
	hostName := hostVethName(args.ContainerID, args.IfName)
	switch a.Datapath {
	case role.DatapathVethRouted:
		if err := checkVethHost(hostName, a.Addr.Addr()); err != nil {
			return err
		}
	case role.DatapathIPVlan:
		if _, err := netlink.LinkByName(hostName); err == nil {
			a = vethFallback(a) // ADD fell back: the kernel has no ipvlan
			if err := checkVethHost(hostName, a.Addr.Addr()); err != nil {
				return err
			}
		} else if err := checkIPVlanHost(a, args.IfName); err != nil {
			return err
		}
	}
	return netns.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("pod interface: %w", err)
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("pod interface %s is down", args.IfName)
		}
		if link.Attrs().MTU != a.MTU {
			return fmt.Errorf("pod interface %s has MTU %d, want %d", args.IfName, link.Attrs().MTU, a.MTU)
		}
		addrs, err := nlretry.Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(link, netlink.FAMILY_V4) })
		if err != nil {
			return fmt.Errorf("list pod addresses: %w", err)
		}
		ok := false
		for _, ad := range addrs {
			ok = ok || (ad.IP.Equal(a.Addr.Addr().AsSlice()) && ad.Mask.String() == net.CIDRMask(a.Addr.Bits(), 32).String())
		}
		if !ok {
			return fmt.Errorf("pod interface %s lacks address %s", args.IfName, a.Addr)
		}
		routes, err := nlretry.Dump(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index}, netlink.RT_FILTER_OIF)
		})
		if err != nil {
			return fmt.Errorf("list pod routes: %w", err)
		}
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(a.Gateway.AsSlice()) {
				return nil
			}
		}
		return fmt.Errorf("pod has no default route via %s on %s", a.Gateway, args.IfName)
	})
}

// Wire does ADD's work after the agent answered: it wires the pod at
// netnsPath for the allocation, from the node's namespace (the calling
// thread's). On error nothing is left. Tests and tools that already hold an
// allocation use it to wire pods exactly as strata-cni does.
func Wire(netnsPath, containerID, ifName string, a wire.Allocation) (*current.Result, error) {
	netns, err := ns.GetNS(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("open pod netns %s: %w", netnsPath, err)
	}
	defer func() { _ = netns.Close() }()
	return setup(netns, &skel.CmdArgs{ContainerID: containerID, IfName: ifName, Netns: netnsPath}, a)
}

// Unwire undoes Wire as DEL does, the agent's record given instead of asked
// for. A missing namespace, link or rule is not an error.
func Unwire(netnsPath, containerID, ifName string, a wire.Allocation) error {
	found, err := teardown(netnsPath, containerID, ifName)
	if err == nil && !found {
		err = teardownByAllocation(a)
	}
	return err
}
