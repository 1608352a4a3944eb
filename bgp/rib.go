package bgp

import (
	"net/netip"
	"slices"
	"sync"
)

// candidate is one peer's path to a prefix, reduced to what selection needs.
type candidate struct {
	NextHop   netip.Addr
	LocalPref uint32
	ASPathLen int
	MED       uint32
	// Reject is set when the import policy keeps the path out of
	// selection; the path is still held so a change of policy or of the
	// node's subnets can judge it again.
	Reject RejectReason
	Detail string
}

// better compares two candidates on the BGP decision steps that matter for a
// leaf (higher local-pref, shorter AS path, lower MED). 1: a wins, -1: b wins,
// 0: equal, so both are ECMP next hops.
func better(a, b candidate) int {
	switch {
	case a.LocalPref != b.LocalPref:
		if a.LocalPref > b.LocalPref {
			return 1
		}
		return -1
	case a.ASPathLen != b.ASPathLen:
		if a.ASPathLen < b.ASPathLen {
			return 1
		}
		return -1
	case a.MED != b.MED:
		if a.MED < b.MED {
			return 1
		}
		return -1
	}
	return 0
}

// rib holds every peer's accepted paths and yields best-path changes with
// ECMP. gobgp's own best-path watch reports one path per prefix; Strata
// needs the whole equal-cost set for the kernel, so it selects here.
type rib struct {
	mu    sync.Mutex
	paths map[netip.Prefix]map[netip.Addr]candidate // prefix -> peer -> path
	best  map[netip.Prefix][]netip.Addr
}

func newRIB() *rib {
	return &rib{paths: map[netip.Prefix]map[netip.Addr]candidate{}, best: map[netip.Prefix][]netip.Addr{}}
}

// update records (or, with withdraw, removes) peer's path and returns the
// prefix's new best set if it changed.
func (r *rib) update(peer netip.Addr, prefix netip.Prefix, c candidate, withdraw bool) (Route, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prefix = prefix.Masked()
	m := r.paths[prefix]
	if withdraw {
		if _, ok := m[peer]; !ok {
			return Route{}, false
		}
		delete(m, peer)
		if len(m) == 0 {
			delete(r.paths, prefix)
		}
	} else {
		if m == nil {
			m = map[netip.Addr]candidate{}
			r.paths[prefix] = m
		}
		m[peer] = c
	}
	return r.reselect(prefix)
}

// dropPeer removes every path learned from peer (session loss) and returns
// the routes whose best set changed.
func (r *rib) dropPeer(peer netip.Addr) []Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Route
	for p, m := range r.paths {
		if _, ok := m[peer]; !ok {
			continue
		}
		delete(m, peer)
		if len(m) == 0 {
			delete(r.paths, p)
		}
		if rt, changed := r.reselect(p); changed {
			out = append(out, rt)
		}
	}
	return out
}

// peerCounts is what one peer currently offers: accepted prefixes, and the
// rejected ones per reason with one example each.
type peerCounts struct {
	Accepted uint64
	Rejected map[RejectReason]uint64
	Example  map[RejectReason]string
}

// countFrom returns how many prefixes peer currently offers, by verdict.
func (r *rib) countFrom(peer netip.Addr) peerCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	pc := peerCounts{Rejected: map[RejectReason]uint64{}, Example: map[RejectReason]string{}}
	first := map[RejectReason]netip.Prefix{}
	for p, m := range r.paths {
		c, ok := m[peer]
		if !ok {
			continue
		}
		if c.Reject == "" {
			pc.Accepted++
			continue
		}
		pc.Rejected[c.Reject]++
		// The smallest prefix is the example, so it is stable across calls.
		if ex, ok := first[c.Reject]; !ok || comparePrefix(p, ex) < 0 {
			first[c.Reject] = p
			pc.Example[c.Reject] = p.String() + " " + c.Detail
		}
	}
	return pc
}

// rejudge runs judge over every held path and returns the routes whose best
// set changed (a path became rejected or accepted).
func (r *rib) rejudge(judge func(peer netip.Addr, prefix netip.Prefix, c candidate) ImportVerdict) []Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Route
	for p, m := range r.paths {
		dirty := false
		for peer, c := range m {
			v := judge(peer, p, c)
			if v.Reason != c.Reject || v.Detail != c.Detail {
				c.Reject, c.Detail = v.Reason, v.Detail
				m[peer] = c
				dirty = true
			}
		}
		if dirty {
			if rt, changed := r.reselect(p); changed {
				out = append(out, rt)
			}
		}
	}
	return out
}

// snapshot returns every current best route.
func (r *rib) snapshot() []Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Route, 0, len(r.best))
	for p, nh := range r.best {
		out = append(out, Route{Prefix: p, NextHops: slices.Clone(nh)})
	}
	slices.SortFunc(out, func(a, b Route) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

func (r *rib) reselect(prefix netip.Prefix) (Route, bool) {
	var winners []candidate
	for _, c := range r.paths[prefix] {
		if c.Reject != "" {
			continue
		}
		if len(winners) == 0 {
			winners = append(winners, c)
			continue
		}
		switch better(c, winners[0]) {
		case 1:
			winners = append(winners[:0], c)
		case 0:
			winners = append(winners, c)
		}
	}
	var hops []netip.Addr
	for _, c := range winners {
		if c.NextHop.IsValid() && !slices.Contains(hops, c.NextHop) {
			hops = append(hops, c.NextHop)
		}
	}
	slices.SortFunc(hops, netip.Addr.Compare)
	if slices.Equal(hops, r.best[prefix]) {
		return Route{}, false
	}
	if len(hops) == 0 {
		delete(r.best, prefix)
	} else {
		r.best[prefix] = hops
	}
	return Route{Prefix: prefix, NextHops: slices.Clone(hops)}, true
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
