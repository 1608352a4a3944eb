package topology

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Authority is what says which node may claim which pod prefixes. Every
// field comes from a source the claiming node cannot write: the API server
// (Node.spec.podCIDRs, Node.metadata.creationTimestamp), a NodePool
// allocation, or the cluster's own configuration. Never fill it from a
// node's annotations or from gossip: those are the claims being checked.
// See docs/trust.md.
type Authority struct {
	// Allocations are the pod CIDRs allocated to each node: Node.spec.podCIDRs
	// today; a NodePool allocation (edge-node) is the same input, so the
	// agent adds it here when it exists. A node may claim its allocation and
	// prefixes inside it.
	Allocations map[string][]netip.Prefix `json:"allocations,omitempty"`
	// Joined is when each node joined (Node.metadata.creationTimestamp).
	// Between equal claims the older node keeps the prefix; a node missing
	// here counts as the newest (ties: name order).
	Joined map[string]time.Time `json:"joined,omitempty"`
	// CloudPodCIDRs are the VPC's pod vSwitch CIDRs (--cloud-pod-cidrs). A
	// cloud node may claim /28 to /32 prefixes inside them (ENI secondary
	// IPs and ENI prefixes) without a per-node allocation.
	CloudPodCIDRs []netip.Prefix `json:"cloudPodCIDRs,omitempty"`
	// Reserved are underlay/node subnets: no pod prefix may overlap them,
	// except inside CloudPodCIDRs (a pod vSwitch may also be a node vSwitch).
	Reserved []netip.Prefix `json:"reserved,omitempty"`
}

func (a Authority) clone() Authority {
	out := Authority{CloudPodCIDRs: slices.Clone(a.CloudPodCIDRs), Reserved: slices.Clone(a.Reserved),
		Allocations: make(map[string][]netip.Prefix, len(a.Allocations)), Joined: make(map[string]time.Time, len(a.Joined))}
	for k, v := range a.Allocations {
		out.Allocations[k] = slices.Clone(v)
	}
	for k, v := range a.Joined {
		out.Joined[k] = v
	}
	return out
}

// IsolationCode says why a node's pod prefixes were refused; it is the
// reason label of strata_peer_isolated.
type IsolationCode string

const (
	IsolationMalformed    IsolationCode = "malformed"         // not a prefix with host bits zero
	IsolationIPv6         IsolationCode = "ipv6"              // the datapaths are IPv4-only
	IsolationTooBroad     IsolationCode = "too-broad"         // shorter than /8: 0.0.0.0/0, 0.0.0.0/1, ...
	IsolationSpecial      IsolationCode = "special-range"     // this-network, loopback, link-local, multicast, class E
	IsolationUnderlay     IsolationCode = "underlay-subnet"   // overlaps an underlay/node subnet or a node's own address
	IsolationUnauthorized IsolationCode = "unauthorized"      // outside its allocation / the cloud pod CIDRs
	IsolationOverlap      IsolationCode = "overlap"           // overlaps a prefix another node holds with more authority
	IsolationIdentity     IsolationCode = "identity-conflict" // another node's underlay address or VTEP MAC
	IsolationProbeIP      IsolationCode = "probe-ip"          // overlay/probe address outside its accepted prefixes
)

// MinPodPrefixBits is the shortest pod prefix one node may claim: anything
// broader (a /7, 0.0.0.0/1, a default route) covers other networks.
const MinPodPrefixBits = 8

// CloudPodPrefixBits bounds a cloud node's claims: a /28 ENI prefix down
// to a per-pod /32.
const (
	CloudPodPrefixMinBits = 28
	CloudPodPrefixMaxBits = 32
)

// specialRanges are never pod addresses.
var specialRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // this network
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("169.254.0.0/16"), // link-local (and the metadata service)
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // class E and broadcast
}

// RefusedPrefix is a claimed prefix that is not programmed, and why.
type RefusedPrefix struct {
	Prefix netip.Prefix `json:"prefix"`
	Reason string       `json:"reason"`
}

// ownership is one node's verdict on its claims. A nil *ownership means
// every claim is accepted.
type ownership struct {
	code     IsolationCode // set: the node is isolated
	reason   string
	withheld []RefusedPrefix // claims lost to an older node's equal claim
}

func (o *ownership) isolated() bool { return o != nil && o.code != "" }

func (o *ownership) equal(x *ownership) bool {
	if o == nil || x == nil {
		return o == x
	}
	return o.code == x.code && o.reason == x.reason && slices.Equal(o.withheld, x.withheld)
}

// claims are the node's pod prefixes, deduplicated, in PodAddrs order.
func claims(f *NodeFacts) []netip.Prefix {
	all := f.PodAddrs()
	out := all[:0:0]
	for _, p := range all {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// accepted is what peers program for the node: its claims minus the
// withheld ones, none when isolated.
func (o *ownership) accepted(f *NodeFacts) []netip.Prefix {
	if o.isolated() {
		return nil
	}
	cs := claims(f)
	if o == nil || len(o.withheld) == 0 {
		return cs
	}
	return slices.DeleteFunc(cs, func(p netip.Prefix) bool {
		return slices.ContainsFunc(o.withheld, func(w RefusedPrefix) bool { return w.Prefix == p })
	})
}

// ownershipInputs are the facts ownership depends on; a change elsewhere
// (pool, probes, capabilities) never re-runs it.
func ownershipInputs(a, b *NodeFacts) bool {
	return a.Location == b.Location && a.PodCIDR == b.PodCIDR && slices.Equal(a.PodPrefixes, b.PodPrefixes) &&
		slices.Equal(a.UnderlayIPs, b.UnderlayIPs) && a.VTEPMAC == b.VTEPMAC && a.ProbeIP == b.ProbeIP
}

const (
	rankPool      = 1 // backed by a pool-wide authority (cloud pod vSwitch), or no authority is enforced
	rankAllocated = 2 // inside the node's own allocation
)

// claimRank checks one claim on its own: the shape, special ranges,
// reserved subnets and, when enforce, the authority. It returns the
// claim's rank, or an isolation code and reason.
func (a *Authority) claimRank(f *NodeFacts, p netip.Prefix, enforce bool) (int, IsolationCode, string) {
	switch {
	case !p.IsValid() || p != p.Masked():
		return 0, IsolationMalformed, fmt.Sprintf("pod prefix %s is not a network prefix with host bits zero", p)
	case !p.Addr().Is4():
		return 0, IsolationIPv6, fmt.Sprintf("pod prefix %s is IPv6; Strata's datapaths are IPv4-only", p)
	case p.Bits() < MinPodPrefixBits:
		return 0, IsolationTooBroad, fmt.Sprintf("pod prefix %s is broader than /%d and would cover other networks", p, MinPodPrefixBits)
	}
	for _, s := range specialRanges {
		if s.Overlaps(p) {
			return 0, IsolationSpecial, fmt.Sprintf("pod prefix %s overlaps %s, which is never a pod range", p, s)
		}
	}
	inCloud := p.Bits() >= CloudPodPrefixMinBits && within(p, a.CloudPodCIDRs)
	if !inCloud {
		for _, r := range a.Reserved {
			if r.Overlaps(p) {
				return 0, IsolationUnderlay, fmt.Sprintf("pod prefix %s overlaps the underlay/node subnet %s", p, r)
			}
		}
	}
	if !enforce {
		return rankPool, "", ""
	}
	alloc := a.Allocations[f.Name]
	if within(p, alloc) {
		return rankAllocated, "", ""
	}
	if f.Location == LocationCloud {
		if inCloud && p.Bits() <= CloudPodPrefixMaxBits {
			return rankPool, "", ""
		}
		if len(a.CloudPodCIDRs) == 0 {
			return 0, IsolationUnauthorized, fmt.Sprintf("cloud pod prefix %s cannot be checked: no cloud pod vSwitch CIDRs are configured (set --cloud-pod-cidrs on every agent)", p)
		}
		return 0, IsolationUnauthorized, fmt.Sprintf("cloud pod prefix %s is not a /%d../%d inside the pod vSwitch CIDRs %s%s", p,
			CloudPodPrefixMinBits, CloudPodPrefixMaxBits, joinPrefixes(a.CloudPodCIDRs), allocNote(alloc))
	}
	if len(alloc) == 0 {
		return 0, IsolationUnauthorized, fmt.Sprintf("pod prefix %s has no allocation behind it: the node has no Node.spec.podCIDR (or NodePool block); its own annotations are not an authority", p)
	}
	return 0, IsolationUnauthorized, fmt.Sprintf("pod prefix %s is outside the node's allocation %s (Node.spec.podCIDRs)", p, joinPrefixes(alloc))
}

func allocNote(alloc []netip.Prefix) string {
	if len(alloc) == 0 {
		return ""
	}
	return " or its allocation " + joinPrefixes(alloc)
}

func within(p netip.Prefix, outer []netip.Prefix) bool {
	for _, o := range outer {
		if o.Bits() <= p.Bits() && o.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, ",") + "]"
}

// item is one claimed address space in the ownership sweep: a pod claim,
// or a node's underlay address as a /32 (nobody else may route it).
type item struct {
	pfx      netip.Prefix
	node     int // index into the nodes being resolved
	rank     int
	underlay bool
}

// resolveOwnership decides every node's claims together. Each node is first
// checked alone (claimRank, its own addresses, its probe address); then
// claims and underlay addresses of different nodes that overlap are
// resolved in priority order: higher rank, then older (Joined), then name.
// A node that loses to a higher-ranked claim, or whose identity (underlay
// address, VTEP MAC) is taken, is isolated; a claim that loses to an equal
// claim of an older node is withheld alone. An isolated node's claims then
// count for nothing, so resolution repeats until no node is newly isolated:
// one bad node never takes anything from a node that is otherwise valid.
// Without enforce only the checks that need no authority apply (facts
// files, tests). It returns the verdict of every node that has one.
func resolveOwnership(nodes []*NodeFacts, auth *Authority, enforce bool) map[string]*ownership {
	out := map[string]*ownership{}
	iso := make([]bool, len(nodes))
	isolate := func(i int, code IsolationCode, why string) {
		out[nodes[i].Name] = &ownership{code: code, reason: why}
		iso[i] = true
	}
	isolated := func(i int) bool { return iso[i] }
	// Oldest first: the order every conflict is resolved in.
	order := make([]int, len(nodes))
	for i := range order {
		order[i] = i
	}
	joined := make([]time.Time, len(nodes))
	for i, n := range nodes {
		joined[i] = auth.Joined[n.Name]
	}
	age := func(i int) (time.Time, bool) { return joined[i], !joined[i].IsZero() }
	older := func(i, j int) int {
		ti, oki := age(i)
		tj, okj := age(j)
		switch {
		case oki && !okj:
			return -1
		case !oki && okj:
			return 1
		case oki && okj && !ti.Equal(tj):
			return ti.Compare(tj)
		}
		return cmp.Compare(nodes[i].Name, nodes[j].Name)
	}
	slices.SortFunc(order, older)
	var items []item
	for _, i := range order {
		f := nodes[i]
		cs := claims(f)
		ranks := make([]int, len(cs))
		bad := false
		for k, p := range cs {
			r, code, why := auth.claimRank(f, p, enforce)
			if code != "" {
				isolate(i, code, why)
				bad = true
				break
			}
			ranks[k] = r
		}
		if bad {
			continue
		}
		if ul := f.Underlay(); ul.IsValid() && !ul.Is4() {
			isolate(i, IsolationIPv6, fmt.Sprintf("underlay address %s is IPv6; the overlay is IPv4-only", ul))
			continue
		}
		for _, u := range f.UnderlayIPs {
			for _, p := range cs {
				if p.Contains(u) {
					isolate(i, IsolationUnderlay, fmt.Sprintf("pod prefix %s covers the node's own underlay address %s", p, u))
					bad = true
					break
				}
			}
			if bad {
				break
			}
		}
		if bad {
			continue
		}
		if f.ProbeIP.IsValid() && !slices.ContainsFunc(cs, func(p netip.Prefix) bool { return p.Contains(f.ProbeIP) }) {
			// The overlay routes a peer's probe/overlay address even when no
			// pod prefix covers it: that would be an unchecked /32.
			isolate(i, IsolationProbeIP, fmt.Sprintf("its overlay/probe address %s is outside its pod prefixes", f.ProbeIP))
			continue
		}
		for k, p := range cs {
			items = append(items, item{pfx: p, node: i, rank: ranks[k]})
		}
		for _, u := range f.UnderlayIPs {
			if u.Is4() {
				items = append(items, item{pfx: netip.PrefixFrom(u, 32), node: i, rank: rankPool, underlay: true})
			}
		}
	}
	// Address order for the overlap sweep.
	slices.SortFunc(items, func(a, b item) int {
		if c := a.pfx.Addr().Compare(b.pfx.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.pfx.Bits(), b.pfx.Bits())
	})
	prio := func(a, b item) int {
		if a.rank != b.rank {
			return cmp.Compare(b.rank, a.rank)
		}
		if c := older(a.node, b.node); c != 0 {
			return c
		}
		if a.underlay != b.underlay { // a node's identity before its claims
			if a.underlay {
				return -1
			}
			return 1
		}
		return a.pfx.Addr().Compare(b.pfx.Addr())
	}
	for {
		newly := false
		withheld := map[int][]RefusedPrefix{}
		// VTEP MACs: the older node keeps its MAC.
		macs := map[string]int{}
		for _, i := range order {
			if isolated(i) || nodes[i].VTEPMAC == "" {
				continue
			}
			if j, dup := macs[nodes[i].VTEPMAC]; dup {
				isolate(i, IsolationIdentity, fmt.Sprintf("VTEP MAC %s is already node %s's", nodes[i].VTEPMAC, nodes[j].Name))
				newly = true
				continue
			}
			macs[nodes[i].VTEPMAC] = i
		}
		for _, g := range overlapGroups(items, isolated) {
			slices.SortFunc(g, prio)
			var kept []item
			lost := map[int]bool{}
			for _, it := range g {
				if lost[it.node] || isolated(it.node) {
					continue
				}
				blocker := -1
				for k, o := range kept {
					if o.node != it.node && o.pfx.Overlaps(it.pfx) {
						blocker = k
						break
					}
				}
				if blocker < 0 {
					kept = append(kept, it)
					continue
				}
				b := kept[blocker]
				owner := nodes[b.node].Name
				switch {
				case it.underlay && b.underlay:
					isolate(it.node, IsolationIdentity, fmt.Sprintf("underlay address %s is already node %s's", it.pfx.Addr(), owner))
				case it.underlay:
					isolate(it.node, IsolationIdentity, fmt.Sprintf("underlay address %s lies inside pod prefix %s of node %s", it.pfx.Addr(), b.pfx, owner))
				case b.underlay:
					isolate(it.node, IsolationUnderlay, fmt.Sprintf("pod prefix %s covers node %s's underlay address %s", it.pfx, owner, b.pfx.Addr()))
				case b.rank > it.rank:
					isolate(it.node, IsolationOverlap, fmt.Sprintf("pod prefix %s overlaps %s, allocated to node %s", it.pfx, b.pfx, owner))
				default:
					withheld[it.node] = append(withheld[it.node], RefusedPrefix{Prefix: it.pfx,
						Reason: fmt.Sprintf("overlaps %s, held by node %s, which joined earlier", b.pfx, owner)})
					continue
				}
				lost[it.node] = true
				newly = true
			}
		}
		// A node keeps only what it did not lose; its overlay/probe address
		// must stay inside that, or the overlay's gateway route would
		// reach into someone else's space.
		for _, i := range order {
			f := nodes[i]
			if isolated(i) {
				continue
			}
			w := withheld[i]
			if len(w) == 0 {
				delete(out, f.Name)
				continue
			}
			slices.SortFunc(w, func(a, b RefusedPrefix) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
			o := &ownership{withheld: w}
			acc := o.accepted(f)
			switch {
			case len(acc) == 0:
				isolate(i, IsolationOverlap, "every pod prefix it claims is held by nodes that joined earlier ("+w[0].Reason+")")
				newly = true
				continue
			case f.ProbeIP.IsValid() && !slices.ContainsFunc(acc, func(p netip.Prefix) bool { return p.Contains(f.ProbeIP) }):
				isolate(i, IsolationProbeIP, fmt.Sprintf("its overlay/probe address %s lies in a withheld prefix (%s)", f.ProbeIP, w[0].Reason))
				newly = true
				continue
			}
			out[f.Name] = o
		}
		if !newly {
			break
		}
	}
	return out
}

// overlapGroups returns the sets of items (of non-isolated nodes) that
// overlap an item of another node, transitively. items are in address
// order, so prefixes either nest or follow each other: a stack of the open
// prefixes finds every overlap in one pass.
func overlapGroups(items []item, isolated func(int) bool) [][]item {
	parent := make([]int, len(items))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	conflict := make([]bool, len(items))
	var stack []int
	for i, it := range items {
		if isolated(it.node) {
			continue
		}
		for len(stack) > 0 && !items[stack[len(stack)-1]].pfx.Overlaps(it.pfx) {
			stack = stack[:len(stack)-1]
		}
		for _, s := range stack {
			if items[s].node != it.node {
				conflict[s], conflict[i] = true, true
				parent[find(i)] = find(s)
			}
		}
		stack = append(stack, i)
	}
	groups := map[int][]item{}
	var roots []int
	for i := range items {
		if !conflict[i] {
			continue
		}
		r := find(i)
		if _, ok := groups[r]; !ok {
			roots = append(roots, r)
		}
		groups[r] = append(groups[r], items[i])
	}
	out := make([][]item, 0, len(roots))
	for _, r := range roots {
		out = append(out, groups[r])
	}
	return out
}
