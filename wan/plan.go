package wan

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Program is one peer of this node as the topology programs it, in the
// WAN's terms (the agent copies each topology.PeerProgram into one). It is
// its own type so this package needs nothing of topology's.
type Program struct {
	// Peer is the peer's node name.
	Peer string
	// WAN: the pair's path is the WAN, so the peer's pod prefixes are
	// routed into the device (directly, or through Relay). Otherwise the
	// peer is a standby: its session is kept ready and nothing is routed.
	WAN bool
	// PodPrefixes are the peer's pod addresses (its probe address included).
	PodPrefixes []netip.Prefix
	// ProbeIP is the peer's probe address, probed through the tunnel.
	ProbeIP netip.Addr
	// PublicKey is the peer's WAN key; empty: the peer has no WAN.
	PublicKey string
	// Endpoint is the peer's public endpoint (declared: reachable from the
	// internet); zero: it is behind NAT and must initiate.
	Endpoint netip.AddrPort
	// LastSeen is where the device last saw the peer (kept across a
	// restart): used as the endpoint to send to when Endpoint is zero, so
	// a restarted gateway can start the handshake through the peer's NAT
	// mapping instead of waiting for the peer to notice. Not a claim that
	// the peer is reachable.
	LastSeen netip.AddrPort
	// Relay names the gateway that carries this pair when neither side is
	// reachable from the internet; the peer itself is then not a WireGuard
	// peer: its prefixes belong to the relay's.
	Relay string
	// Gateway: the peer may relay (strata.io/wan-gateway); its liveness
	// decides failovers, so it is probed every period.
	Gateway bool
}

// Self is what the programming needs of this node.
type Self struct {
	// Reachable: this node has a declared public endpoint, so peers can
	// initiate to it and it holds no NAT mapping open.
	Reachable bool
}

// ProbeTarget is one WireGuard peer's probe address, probed through the
// tunnel.
type ProbeTarget struct {
	Peer string
	Addr netip.Addr
	// Priority targets (gateways, the relays in use, peers on the WAN now)
	// are probed every period; the others share what the rate cap leaves.
	Priority bool
}

// Programming is the device's wanted state for one plan.
type Programming struct {
	Peers  []Peer        // sorted by name
	Probes []ProbeTarget // sorted by peer
	// Errors are programs that could not be applied (one *PeerError each);
	// the rest are programmed.
	Errors []error
}

// PeersFor turns the plan's programs for this node into WireGuard peers:
// one per peer with a WAN key that one side can reach (standby included),
// whose allowed IPs are its pod prefixes plus those of the peers it relays
// for; a relayed peer is no WireGuard peer itself. Kernel routes go only to
// prefixes whose pair is on the WAN. Each prefix belongs to one peer: the
// first in name order keeps one claimed twice. One bad program never stops
// the others. It is pure.
func PeersFor(self Self, progs []Program) Programming {
	sorted := slices.Clone(progs)
	slices.SortStableFunc(sorted, func(a, b Program) int { return strings.Compare(a.Peer, b.Peer) })
	var out Programming
	fail := func(peer string, err error) { out.Errors = append(out.Errors, &PeerError{Peer: peer, Err: err}) }
	byName := map[string]*Program{}
	for i := range sorted {
		p := &sorted[i]
		if p.Peer == "" {
			fail("", errors.New("a program without a peer name"))
			continue
		}
		if _, dup := byName[p.Peer]; dup {
			fail(p.Peer, errors.New("programmed twice: one program per peer"))
			continue
		}
		byName[p.Peer] = p
	}
	// Relayed prefixes, per relay, in the relayed peers' name order.
	type relayed struct {
		peer   string
		prefix netip.Prefix
		routed bool
	}
	viaRelay := map[string][]relayed{}
	relaysInUse := map[string]bool{}
	for _, name := range sortedKeys(byName) {
		p := byName[name]
		if p.Relay == "" {
			continue
		}
		r, ok := byName[p.Relay]
		switch {
		case p.Relay == p.Peer:
			fail(p.Peer, errors.New("relayed through itself: a relay is a third node"))
			continue
		case !ok:
			fail(p.Peer, fmt.Errorf("relay %s is not a peer of this node: its prefixes stay unreachable until the plan names a relay this node knows", p.Relay))
			continue
		case r.PublicKey == "":
			fail(p.Peer, fmt.Errorf("relay %s has published no WAN key (strata.io/wan-public-key): is its agent running with --wan?", p.Relay))
			continue
		case r.Relay != "":
			fail(p.Peer, fmt.Errorf("relay %s is itself relayed through %s: one relay hop at most", p.Relay, r.Relay))
			continue
		case !r.Endpoint.IsValid() && !self.Reachable:
			fail(p.Peer, fmt.Errorf("relay %s has no public endpoint and neither has this node: a relay must be reachable (strata.io/public-endpoint)", p.Relay))
			continue
		}
		if p.WAN {
			relaysInUse[p.Relay] = true
		}
		for _, pf := range p.PodPrefixes {
			viaRelay[p.Relay] = append(viaRelay[p.Relay], relayed{peer: p.Peer, prefix: pf, routed: p.WAN})
		}
	}
	owner := map[netip.Prefix]string{}
	claim := func(peer string, pf netip.Prefix) bool {
		pf = pf.Masked()
		if o, taken := owner[pf]; taken {
			if o != peer {
				fail(peer, fmt.Errorf("prefix %s is also %s's: one prefix, one peer (kept by %s)", pf, o, o))
			}
			return false
		}
		owner[pf] = peer
		return true
	}
	for _, name := range sortedKeys(byName) {
		p := byName[name]
		if p.Relay != "" || p.PublicKey == "" {
			continue
		}
		if err := ParsePublicKey(p.PublicKey); err != nil {
			fail(p.Peer, fmt.Errorf("publicKey %q: %w", p.PublicKey, err))
			continue
		}
		// A standby pair where neither side can initiate has no session to
		// keep; a pair the plan puts on the WAN is programmed regardless.
		if !p.WAN && !relaysInUse[p.Peer] && !p.Endpoint.IsValid() && !p.LastSeen.IsValid() && !self.Reachable && len(viaRelay[p.Peer]) == 0 {
			continue
		}
		peer := Peer{Name: p.Peer, PublicKey: p.PublicKey, Endpoint: p.Endpoint}
		if !peer.Endpoint.IsValid() {
			peer.Endpoint = p.LastSeen
		}
		if self.Reachable {
			peer.Keepalive = NoKeepalive // the peer can reach us; it holds its own mapping
		}
		for _, pf := range p.PodPrefixes {
			if claim(p.Peer, pf) {
				peer.AllowedIPs = append(peer.AllowedIPs, pf.Masked())
				if p.WAN {
					peer.Routes = append(peer.Routes, pf.Masked())
				}
			}
		}
		for _, rp := range viaRelay[p.Peer] {
			if claim(rp.peer, rp.prefix) {
				peer.AllowedIPs = append(peer.AllowedIPs, rp.prefix.Masked())
				if rp.routed {
					peer.Routes = append(peer.Routes, rp.prefix.Masked())
				}
			}
		}
		out.Peers = append(out.Peers, peer)
		if p.ProbeIP.IsValid() && containsAddr(peer.AllowedIPs, p.ProbeIP) {
			out.Probes = append(out.Probes, ProbeTarget{Peer: p.Peer, Addr: p.ProbeIP, Priority: p.Gateway || p.WAN || relaysInUse[p.Peer]})
		}
	}
	return out
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
