package wan

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func testKey(t *testing.T) string {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}

func pfxs(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func peerNamed(ps []Peer, name string) (Peer, bool) {
	for _, p := range ps {
		if p.Name == name {
			return p, true
		}
	}
	return Peer{}, false
}

func errFor(errs []error, peer string) string {
	var out []string
	for _, e := range errs {
		var pe *PeerError
		if errors.As(e, &pe) && pe.Peer == peer {
			out = append(out, pe.Err.Error())
		}
	}
	return strings.Join(out, "; ")
}

var (
	gw1EP = netip.MustParseAddrPort("203.0.113.11:51871")
	gw2EP = netip.MustParseAddrPort("203.0.113.12:51871")
	fwdEP = netip.MustParseAddrPort("198.51.100.2:51871")
)

// A NAT'd node (edge-b1) reaches another NAT'd node through gateway gw1;
// gw2 is a standby gateway; edge-a1 is direct (port forward) but on its
// native path (standby); cloud-3 has no WAN key.
func TestPeersForRelayStandbyAndDirect(t *testing.T) {
	k := map[string]string{"gw1": testKey(t), "gw2": testKey(t), "edge-a1": testKey(t), "nat2": testKey(t)}
	progs := []Program{
		{Peer: "nat2", WAN: true, Relay: "gw1", PublicKey: k["nat2"], PodPrefixes: pfxs("10.244.9.0/24"), ProbeIP: netip.MustParseAddr("10.244.9.1")},
		{Peer: "gw2", PublicKey: k["gw2"], Endpoint: gw2EP, Gateway: true, PodPrefixes: pfxs("10.0.64.20/32", "10.0.64.21/32"), ProbeIP: netip.MustParseAddr("10.0.64.20")},
		{Peer: "gw1", WAN: true, PublicKey: k["gw1"], Endpoint: gw1EP, Gateway: true, PodPrefixes: pfxs("10.0.64.10/32"), ProbeIP: netip.MustParseAddr("10.0.64.10")},
		{Peer: "edge-a1", PublicKey: k["edge-a1"], Endpoint: fwdEP, PodPrefixes: pfxs("10.244.1.0/24"), ProbeIP: netip.MustParseAddr("10.244.1.1")},
		{Peer: "cloud-3", WAN: false, PodPrefixes: pfxs("10.0.64.30/32")},
	}
	got := PeersFor(Self{}, progs)
	if len(got.Errors) != 0 {
		t.Fatalf("errors: %v", got.Errors)
	}
	var names []string
	for _, p := range got.Peers {
		names = append(names, p.Name)
	}
	if !slices.Equal(names, []string{"edge-a1", "gw1", "gw2"}) {
		t.Fatalf("WireGuard peers %v: want edge-a1, gw1, gw2 (nat2 is relayed, cloud-3 has no key)", names)
	}
	gw1, _ := peerNamed(got.Peers, "gw1")
	if !slices.Equal(gw1.AllowedIPs, pfxs("10.0.64.10/32", "10.244.9.0/24")) || !slices.Equal(gw1.Routes, pfxs("10.0.64.10/32", "10.244.9.0/24")) {
		t.Fatalf("gw1 allowed %v routes %v: want its own prefix and the relayed 10.244.9.0/24, both routed", gw1.AllowedIPs, gw1.Routes)
	}
	if gw1.Endpoint != gw1EP || gw1.Keepalive != 0 {
		t.Fatalf("gw1 endpoint %v keepalive %v: want the declared endpoint and the default keepalive (this node is behind NAT)", gw1.Endpoint, gw1.Keepalive)
	}
	gw2, _ := peerNamed(got.Peers, "gw2")
	if len(gw2.Routes) != 0 || len(gw2.AllowedIPs) != 2 {
		t.Fatalf("standby gw2: allowed %v routes %v: want its prefixes accepted, none routed", gw2.AllowedIPs, gw2.Routes)
	}
	ea, _ := peerNamed(got.Peers, "edge-a1")
	if len(ea.Routes) != 0 || ea.Endpoint != fwdEP {
		t.Fatalf("standby edge-a1 %+v: want no routes and the port-forward endpoint", ea)
	}
	var probes []string
	for _, p := range got.Probes {
		probes = append(probes, p.Peer)
		if (p.Peer == "gw1" || p.Peer == "gw2") != p.Priority {
			t.Errorf("probe %s priority %v: gateways and WAN peers are probed every period", p.Peer, p.Priority)
		}
	}
	if !slices.Equal(probes, []string{"edge-a1", "gw1", "gw2"}) {
		t.Fatalf("probe targets %v", probes)
	}

	// Failover: gw1 is lost, the plan relays nat2 through gw2. Only
	// nat2's prefix moves; gw1 stays a standby peer with its own prefix.
	progs[0].Relay = "gw2"
	progs[2].WAN = false
	got = PeersFor(Self{}, progs)
	gw1, _ = peerNamed(got.Peers, "gw1")
	gw2, _ = peerNamed(got.Peers, "gw2")
	if !slices.Equal(gw1.AllowedIPs, pfxs("10.0.64.10/32")) || len(gw1.Routes) != 0 {
		t.Fatalf("after failover gw1 allowed %v routes %v", gw1.AllowedIPs, gw1.Routes)
	}
	if !slices.Contains(gw2.AllowedIPs, netip.MustParsePrefix("10.244.9.0/24")) || !slices.Equal(gw2.Routes, pfxs("10.244.9.0/24")) {
		t.Fatalf("after failover gw2 allowed %v routes %v: want the relayed prefix, routed (gw2's own pair stays standby)", gw2.AllowedIPs, gw2.Routes)
	}
}

func TestPeersForReachableSelfNeedsNoKeepaliveAndKeepsNATPeers(t *testing.T) {
	ka := testKey(t)
	progs := []Program{{Peer: "edge-b1", WAN: true, PublicKey: ka, PodPrefixes: pfxs("10.244.3.0/24")},
		{Peer: "edge-b2", PublicKey: testKey(t), PodPrefixes: pfxs("10.244.4.0/24")}}
	got := PeersFor(Self{Reachable: true}, progs)
	if len(got.Peers) != 2 {
		t.Fatalf("peers %+v: a reachable node keeps NAT'd peers, WAN and standby (they initiate)", got.Peers)
	}
	for _, p := range got.Peers {
		if p.Keepalive != NoKeepalive || p.Endpoint.IsValid() {
			t.Fatalf("%s: keepalive %v endpoint %v: a reachable node sends no keepalives and knows no NAT'd endpoint", p.Name, p.Keepalive, p.Endpoint)
		}
	}
	// Neither side reachable and not on the WAN: no session is possible.
	got = PeersFor(Self{}, progs[1:])
	if len(got.Peers) != 0 {
		t.Fatalf("peers %+v: two NAT'd nodes have no direct session", got.Peers)
	}
	// ... unless the device saw the peer before (a restart): then it is kept
	// and sent to where it was seen.
	seen := netip.MustParseAddrPort("198.51.100.7:40001")
	p := progs[1]
	p.LastSeen = seen
	got = PeersFor(Self{Reachable: true}, []Program{p})
	if len(got.Peers) != 1 || got.Peers[0].Endpoint != seen {
		t.Fatalf("peers %+v: want the last seen endpoint", got.Peers)
	}
}

func TestPeersForBadProgramsStopNothing(t *testing.T) {
	good := testKey(t)
	progs := []Program{
		{Peer: "a-self-relay", WAN: true, Relay: "a-self-relay", PodPrefixes: pfxs("10.244.10.0/24")},
		{Peer: "b-unknown-relay", WAN: true, Relay: "nobody", PodPrefixes: pfxs("10.244.11.0/24")},
		{Peer: "c-keyless-relay", WAN: true, Relay: "keyless", PodPrefixes: pfxs("10.244.12.0/24")},
		{Peer: "keyless", WAN: true, Endpoint: gw1EP, PodPrefixes: pfxs("10.0.64.50/32")},
		{Peer: "d-two-hops", WAN: true, Relay: "e-relayed", PodPrefixes: pfxs("10.244.13.0/24")},
		{Peer: "e-relayed", WAN: true, Relay: "gw", PublicKey: testKey(t), PodPrefixes: pfxs("10.244.14.0/24")},
		{Peer: "f-badkey", WAN: true, PublicKey: "not-a-key", Endpoint: gw2EP, PodPrefixes: pfxs("10.244.15.0/24")},
		{Peer: "g-steals", WAN: true, PublicKey: testKey(t), Endpoint: fwdEP, PodPrefixes: pfxs("10.0.64.60/32", "10.244.16.0/24")},
		{Peer: "gw", WAN: true, PublicKey: good, Endpoint: gw1EP, Gateway: true, PodPrefixes: pfxs("10.0.64.60/32")},
		{Peer: "h-unreachable-relay", WAN: true, Relay: "natgw", PodPrefixes: pfxs("10.244.17.0/24")},
		{Peer: "natgw", PublicKey: testKey(t), PodPrefixes: pfxs("10.0.64.70/32")},
		{Peer: "gw", PublicKey: good},
	}
	got := PeersFor(Self{}, progs)
	want := map[string]string{
		"a-self-relay":        "itself",
		"b-unknown-relay":     "not a peer",
		"c-keyless-relay":     "no WAN key",
		"d-two-hops":          "one relay hop",
		"f-badkey":            "publicKey",
		"gw":                  "also g-steals's",
		"h-unreachable-relay": "must be reachable",
	}
	for peer, frag := range want {
		if e := errFor(got.Errors, peer); !strings.Contains(e, frag) {
			t.Errorf("%s: error %q, want one containing %q", peer, e, frag)
		}
	}
	if e := errFor(got.Errors, "gw"); !strings.Contains(e, "programmed twice") {
		t.Errorf("gw listed twice: error %q, want 'programmed twice' (the first program is kept)", e)
	}
	gw, ok := peerNamed(got.Peers, "gw")
	if !ok {
		t.Fatal("the gateway was dropped for another program's fault")
	}
	// gw keeps its relayed prefix; its own prefix went to g-steals (first
	// in name order), reported above.
	if !slices.Equal(gw.AllowedIPs, pfxs("10.244.14.0/24")) {
		t.Fatalf("gw allowed %v", gw.AllowedIPs)
	}
	g, _ := peerNamed(got.Peers, "g-steals")
	if !slices.Equal(g.AllowedIPs, pfxs("10.0.64.60/32", "10.244.16.0/24")) {
		t.Fatalf("g-steals allowed %v", g.AllowedIPs)
	}
	if _, ok := peerNamed(got.Peers, "keyless"); ok {
		t.Fatal("a peer without a key became a WireGuard peer")
	}
	// Every prefix at most once over all peers.
	seen := map[netip.Prefix]string{}
	for _, p := range got.Peers {
		for _, pf := range p.AllowedIPs {
			if o, dup := seen[pf]; dup {
				t.Fatalf("prefix %s on %s and %s", pf, o, p.Name)
			}
			seen[pf] = p.Name
		}
		if err := validatePeer(p, ""); err != nil {
			t.Fatalf("adapter output %s rejected by the transport: %v", p.Name, err)
		}
	}
	// Order of the input changes nothing (but which of two programs of one
	// peer is first).
	rev := slices.Clone(progs[:len(progs)-1])
	slices.Reverse(rev)
	got = PeersFor(Self{}, progs[:len(progs)-1])
	again := PeersFor(Self{}, rev)
	if len(again.Peers) != len(got.Peers) {
		t.Fatalf("input order changed the peers: %d vs %d", len(again.Peers), len(got.Peers))
	}
	for i := range got.Peers {
		if got.Peers[i].Name != again.Peers[i].Name || !slices.Equal(got.Peers[i].AllowedIPs, again.Peers[i].AllowedIPs) {
			t.Fatalf("input order changed peer %d: %+v vs %+v", i, got.Peers[i], again.Peers[i])
		}
	}
}
