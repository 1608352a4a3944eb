package bgp

import (
	"fmt"
	"net/netip"
	"slices"
)

// RejectReason says why a learned route is kept out of the kernel. The empty
// reason means the route is accepted.
type RejectReason string

// Reasons a learned route is rejected, in the order they are checked.
const (
	// RejectNextHop: the path has no usable next hop (missing, unspecified,
	// multicast, another address family, or one of this node's addresses).
	RejectNextHop RejectReason = "bad-next-hop"
	// RejectDefaultRoute: 0.0.0.0/0 or ::/0.
	RejectDefaultRoute RejectReason = "default-route"
	// RejectPodCIDR: the node's own pod CIDR or a more-specific of it; the
	// node is the authority for its pods.
	RejectPodCIDR RejectReason = "own-pod-cidr"
	// RejectUnderlay: overlaps a subnet the node's underlay address lives in.
	RejectUnderlay RejectReason = "underlay-subnet"
	// RejectConnected: replaces a connected or local route of the node (the
	// subnet of one of its interface addresses, or the address itself) or
	// is a more-specific of one. Installed over the connected route it sends
	// the node's own LAN to the gateway, and every next hop on that LAN
	// becomes unreachable.
	RejectConnected RejectReason = "connected-route"
)

// RejectReasons lists every reason, for metrics and tables.
var RejectReasons = []RejectReason{RejectNextHop, RejectDefaultRoute, RejectPodCIDR, RejectUnderlay, RejectConnected}

// ImportPolicy is one peer's import policy on top of the built-in rules.
type ImportPolicy struct {
	// Allow opens the built-in rejections (default route, own pod CIDR,
	// underlay and connected subnets) for learned prefixes equal to or more
	// specific than one of these prefixes. 0.0.0.0/0 and ::/0 open only the
	// default route itself. A bad next hop is never opened.
	Allow []netip.Prefix
}

// Validate names a bad allow entry.
func (p ImportPolicy) Validate() error {
	for i, a := range p.Allow {
		if !a.IsValid() {
			return fmt.Errorf("importPolicy.allow[%d] %q: not a CIDR (use e.g. 192.168.10.0/24)", i, a)
		}
		if a != a.Masked() {
			return fmt.Errorf("importPolicy.allow[%d] %s: host bits set (did you mean %s?)", i, a, a.Masked())
		}
	}
	return nil
}

func (p ImportPolicy) equal(o ImportPolicy) bool { return slices.Equal(p.Allow, o.Allow) }

// Protected is what a learned route must not take over: facts of the node,
// gathered by the speaker (connected subnets from the kernel) and its
// configuration (pod CIDRs, underlay addresses).
type Protected struct {
	// Connected are the subnets of the node's interface addresses and the
	// addresses themselves as host prefixes; LocalAddrs are the addresses.
	Connected  []netip.Prefix
	LocalAddrs []netip.Addr
	// PodCIDRs are the node's own pod prefixes.
	PodCIDRs []netip.Prefix
	// Underlay are the subnets the node's underlay addresses live in.
	Underlay []netip.Prefix
}

// ImportVerdict is JudgeImport's answer: Reason is empty when accepted, and
// Detail says what the route collided with.
type ImportVerdict struct {
	Reason RejectReason
	Detail string
}

// JudgeImport decides whether a route learned from a peer may be installed.
// It is pure: the same prefix, next hop, policy and facts give the same
// answer.
func JudgeImport(prefix netip.Prefix, nextHop netip.Addr, pol ImportPolicy, prot Protected) ImportVerdict {
	prefix = prefix.Masked()
	switch {
	case !nextHop.IsValid() || nextHop.IsUnspecified():
		return ImportVerdict{RejectNextHop, "the path carries no next hop"}
	case nextHop.IsMulticast():
		return ImportVerdict{RejectNextHop, fmt.Sprintf("next hop %s is a multicast address", nextHop)}
	case nextHop.Is4() != prefix.Addr().Is4():
		return ImportVerdict{RejectNextHop, fmt.Sprintf("next hop %s is another address family than %s", nextHop, prefix)}
	case slices.Contains(prot.LocalAddrs, nextHop):
		return ImportVerdict{RejectNextHop, fmt.Sprintf("next hop %s is this node's own address (a loop)", nextHop)}
	}
	for _, a := range pol.Allow {
		if a.Addr().Is4() != prefix.Addr().Is4() {
			continue
		}
		// A default entry matches only the default route: as a cover it
		// would open everything, the LAN included.
		if a == prefix || a.Bits() > 0 && a.Bits() <= prefix.Bits() && a.Contains(prefix.Addr()) {
			return ImportVerdict{}
		}
	}
	if prefix.Bits() == 0 {
		return ImportVerdict{RejectDefaultRoute, "a default route from a peer would take over all of the node's traffic"}
	}
	for _, p := range prot.PodCIDRs {
		if p.Bits() <= prefix.Bits() && p.Contains(prefix.Addr()) {
			return ImportVerdict{RejectPodCIDR, fmt.Sprintf("inside the node's own pod CIDR %s", p)}
		}
	}
	for _, u := range prot.Underlay {
		if u.Overlaps(prefix) {
			return ImportVerdict{RejectUnderlay, fmt.Sprintf("overlaps the node's underlay subnet %s", u)}
		}
	}
	// A less specific route than a connected subnet is left alone: the
	// kernel's longest-prefix match keeps the connected route in charge
	// (an aggregate such as the cluster's pod range covers the node's own
	// bridge subnet and is wanted).
	for _, c := range prot.Connected {
		if c.Bits() <= prefix.Bits() && c.Contains(prefix.Addr()) {
			verb := "replaces"
			if c.Bits() < prefix.Bits() {
				verb = "splits"
			}
			return ImportVerdict{RejectConnected, fmt.Sprintf("%s the connected subnet %s", verb, c)}
		}
	}
	return ImportVerdict{}
}
