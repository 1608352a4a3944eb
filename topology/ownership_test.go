package topology

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// labDecider is the lab's plan with its authority enforced.
func labDecider(t testing.TB) (*Decider, Facts) {
	t.Helper()
	facts := labFacts(t)
	if facts.Authority == nil {
		t.Fatal("testdata/lab.yaml has no authority")
	}
	d, err := NewDecider(testCfg())
	if err != nil {
		t.Fatal(err)
	}
	d.SetAuthority(*facts.Authority)
	if _, err := d.SetNodes(facts.Nodes); err != nil {
		t.Fatal(err)
	}
	return d, facts
}

// programsOf is what every node programs for every peer, by "local→peer".
func programsOf(p *Plan, names []string) map[string]PeerProgram {
	out := map[string]PeerProgram{}
	for _, l := range names {
		for _, pp := range p.PeersOf(l) {
			out[l+"→"+pp.Peer] = pp
		}
	}
	return out
}

func names(facts Facts) []string {
	var out []string
	for _, n := range facts.Nodes {
		out = append(out, n.Name)
	}
	return out
}

func TestLabClaimsAllAccepted(t *testing.T) {
	d, facts := labDecider(t)
	p := d.Plan()
	for _, n := range p.Nodes() {
		if n.Isolated != "" || len(n.Withheld) > 0 {
			t.Errorf("lab node %s refused: %s %s %v", n.Name, n.Isolated, n.IsolatedReason, n.Withheld)
		}
		if len(n.PodPrefixes) == 0 {
			t.Errorf("lab node %s has no accepted pod prefixes", n.Name)
		}
	}
	for k, pp := range programsOf(p, names(facts)) {
		if pp.Path == PathUnreachable {
			t.Errorf("%s unreachable: %s", k, pp.Reason)
		}
	}
}

// badPeer is a node that claims what it must not. Each case failed before
// ownership existed: the bad prefix was programmed, or (duplicate, IPv6)
// the overlay plan failed for every peer.
func TestBadPeerIsolatedAlone(t *testing.T) {
	mk := func(loc Location, ul string, probe string, pfx ...string) NodeFacts {
		f := NodeFacts{Name: "evil", Location: loc, Pool: "site-b", Interconnect: InterconnectInternet,
			UnderlayIPs: []netip.Addr{netip.MustParseAddr(ul)}, VTEPMAC: "02:00:00:00:00:99", VTEPPort: 4789}
		for _, s := range pfx {
			p := netip.MustParsePrefix(s)
			if f.Location != LocationCloud && !f.PodCIDR.IsValid() {
				f.PodCIDR = p
				continue
			}
			f.PodPrefixes = append(f.PodPrefixes, p)
		}
		if probe != "" {
			f.ProbeIP = netip.MustParseAddr(probe)
		}
		return f
	}
	cases := []struct {
		name  string
		f     NodeFacts
		alloc []string // what the API server allocated to evil
		code  IsolationCode
	}{
		{"/25 inside edge-a1's /24", mk(LocationIDC, "192.168.30.99", "10.244.1.129", "10.244.1.128/25"), []string{"10.244.9.0/24"}, IsolationUnauthorized},
		{"/25 inside edge-a1's /24, allocated by mistake", mk(LocationIDC, "192.168.30.99", "10.244.1.129", "10.244.1.128/25"), []string{"10.244.1.128/25"}, IsolationOverlap},
		{"0.0.0.0/1", mk(LocationIDC, "192.168.30.99", "", "0.0.0.0/1"), []string{"0.0.0.0/1"}, IsolationTooBroad},
		{"default route", mk(LocationIDC, "192.168.30.99", "", "0.0.0.0/0"), nil, IsolationTooBroad},
		{"the underlay subnet", mk(LocationIDC, "192.168.30.99", "", "192.168.10.0/24"), []string{"192.168.10.0/24"}, IsolationUnderlay},
		{"duplicate of edge-a1's /24", mk(LocationIDC, "192.168.30.99", "10.244.1.1", "10.244.1.0/24"), []string{"10.244.9.0/24"}, IsolationUnauthorized},
		{"duplicate of edge-a1's /24, allocated twice", mk(LocationIDC, "192.168.30.99", "10.244.1.1", "10.244.1.0/24"), []string{"10.244.1.0/24"}, IsolationOverlap},
		{"duplicate of cloud-1's /28", mk(LocationCloud, "10.0.1.99", "10.0.64.16", "10.0.64.16/28"), nil, IsolationOverlap},
		{"/32 inside cloud-2's /28", mk(LocationCloud, "10.0.1.99", "10.0.64.33", "10.0.64.33/32"), nil, IsolationOverlap},
		{"IPv6 pod prefix", mk(LocationIDC, "192.168.30.99", "", "fd00::/64"), []string{"fd00::/64"}, IsolationIPv6},
		{"IPv6 cloud prefix", mk(LocationCloud, "10.0.1.99", "", "fd00::/128"), nil, IsolationIPv6},
		{"IPv6 underlay", mk(LocationIDC, "fd00::99", "10.244.9.1", "10.244.9.0/24"), []string{"10.244.9.0/24"}, IsolationIPv6},
		{"link-local", mk(LocationCloud, "10.0.1.99", "", "169.254.169.254/32"), nil, IsolationSpecial},
		{"multicast", mk(LocationIDC, "192.168.30.99", "", "224.0.0.0/24"), []string{"224.0.0.0/24"}, IsolationSpecial},
		{"cloud prefix outside the pod vSwitch", mk(LocationCloud, "10.0.1.99", "", "10.0.200.7/32"), nil, IsolationUnauthorized},
		{"cloud /24 inside the pod vSwitch", mk(LocationCloud, "10.0.1.99", "", "10.0.65.0/24"), nil, IsolationUnauthorized},
		{"annotation-only pod CIDR", mk(LocationIDC, "192.168.30.99", "10.244.9.1", "10.244.9.0/24"), nil, IsolationUnauthorized},
		{"underlay of edge-a1", mk(LocationIDC, "192.168.10.11", "10.244.9.1", "10.244.9.0/24"), []string{"10.244.9.0/24"}, IsolationIdentity},
		{"underlay inside edge-a1's pods", mk(LocationIDC, "10.244.1.77", "10.244.9.1", "10.244.9.0/24"), []string{"10.244.9.0/24"}, IsolationIdentity},
		{"probe address outside its prefixes", mk(LocationIDC, "192.168.30.99", "10.244.1.1", "10.244.9.0/24"), []string{"10.244.9.0/24"}, IsolationProbeIP},
		{"VTEP MAC of cloud-1", func() NodeFacts {
			f := mk(LocationIDC, "192.168.30.99", "10.244.9.1", "10.244.9.0/24")
			f.VTEPMAC = "02:00:0a:00:01:0b"
			return f
		}(), []string{"10.244.9.0/24"}, IsolationIdentity},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, facts := labDecider(t)
			before := programsOf(d.Plan(), names(facts))
			var alloc []netip.Prefix
			for _, s := range tc.alloc {
				alloc = append(alloc, netip.MustParsePrefix(s))
			}
			d.SetNodeAuthority("evil", alloc, time.Time{})
			p, err := d.UpsertNode(tc.f)
			if err != nil {
				t.Fatal(err)
			}
			np, _ := p.Node("evil")
			if np.Isolated != tc.code {
				t.Fatalf("evil isolated %q (%s), want %q", np.Isolated, np.IsolatedReason, tc.code)
			}
			after := programsOf(p, names(facts))
			for k, old := range before {
				if !old.SameProgramming(after[k]) {
					t.Errorf("%s changed: %+v → %+v", k, old, after[k])
				}
			}
			for _, l := range names(facts) {
				pp, _ := p.PeerOf(l, "evil")
				if pp.Path != PathUnreachable || len(pp.PodPrefixes) != 0 || !strings.Contains(pp.Reason, string(tc.code)) {
					t.Errorf("%s programs evil: %+v", l, pp)
				}
			}
			// The isolated node still programs its peers: its own fault
			// does not cut it off from what others validly claim.
			for _, pp := range p.PeersOf("evil") {
				if pp.Path == PathUnreachable && strings.Contains(pp.Reason, "evil is isolated") {
					t.Errorf("evil's own isolation removed its route to %s", pp.Peer)
				}
			}
			pp, _ := p.Path("edge-a1", "evil")
			if pp.Path != PathUnreachable || !strings.Contains(pp.Reason, "isolated") {
				t.Errorf("pair edge-a1→evil %+v, want unreachable (isolated)", pp)
			}
		})
	}
}

// Two cloud nodes claim the same /32: the one that joined earlier keeps it,
// the other keeps the rest of its prefixes.
func TestDuplicateCloudPrefixOlderKeepsIt(t *testing.T) {
	d, facts := labDecider(t)
	c2 := facts.Nodes[1]
	if c2.Name != "cloud-2" {
		t.Fatalf("lab node 1 is %s", c2.Name)
	}
	c2.PodPrefixes = append(c2.PodPrefixes, netip.MustParsePrefix("10.0.64.17/32")) // inside cloud-1's /28
	p, err := d.UpsertNode(c2)
	if err != nil {
		t.Fatal(err)
	}
	n1, _ := p.Node("cloud-1")
	n2, _ := p.Node("cloud-2")
	if n1.Isolated != "" || len(n1.Withheld) != 0 {
		t.Fatalf("cloud-1 (older) lost: %+v", n1)
	}
	if n2.Isolated != "" || len(n2.Withheld) != 1 || n2.Withheld[0].Prefix.String() != "10.0.64.17/32" {
		t.Fatalf("cloud-2: isolated %q withheld %v, want only 10.0.64.17/32 withheld", n2.Isolated, n2.Withheld)
	}
	pp, _ := p.PeerOf("edge-b1", "cloud-2")
	if len(pp.PodPrefixes) != 1 || pp.PodPrefixes[0].String() != "10.0.64.32/28" {
		t.Fatalf("edge-b1 programs cloud-2 %v, want only its /28", pp.PodPrefixes)
	}
	// cloud-1 drops the /28: cloud-2 gets its /32 back on the next decision.
	c1 := facts.Nodes[0]
	c1.PodPrefixes, c1.ProbeIP = []netip.Prefix{netip.MustParsePrefix("10.0.64.48/28")}, netip.MustParseAddr("10.0.64.48")
	if p, err = d.UpsertNode(c1); err != nil {
		t.Fatal(err)
	}
	if n2, _ := p.Node("cloud-2"); len(n2.Withheld) != 0 || len(n2.PodPrefixes) != 2 {
		t.Fatalf("cloud-2 after cloud-1 let go: %+v", n2)
	}
	if ch := DiffPeers(nil, p, "edge-b1"); len(ch) == 0 {
		t.Fatal("no diff")
	}
}

// An isolated node's claims take nothing from others: a bad node claiming
// cloud-1's /28 and the underlay is isolated for the underlay, and cloud-1
// keeps everything.
func TestIsolatedClaimsDoNotCascade(t *testing.T) {
	d, _ := labDecider(t)
	evil := NodeFacts{Name: "aaa-evil", Location: LocationCloud, Pool: "vpc", UnderlayIPs: []netip.Addr{netip.MustParseAddr("10.0.1.99")},
		PodPrefixes: []netip.Prefix{netip.MustParsePrefix("10.0.64.16/28"), netip.MustParsePrefix("10.0.1.0/24")}}
	// Older than everyone: age must not let a bad claim win.
	d.SetNodeAuthority(evil.Name, nil, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC))
	p, err := d.UpsertNode(evil)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := p.Node("aaa-evil"); n.Isolated != IsolationUnderlay {
		t.Fatalf("evil: %q %s", n.Isolated, n.IsolatedReason)
	}
	if n, _ := p.Node("cloud-1"); n.Isolated != "" || len(n.Withheld) != 0 {
		t.Fatalf("cloud-1 lost to an isolated node: %+v", n)
	}
}

// Without an authority (facts files, tests) the structural checks still hold.
func TestNoAuthorityStillRefusesStructuralClaims(t *testing.T) {
	facts := labFacts(t)
	facts.Authority = nil
	facts.Nodes = append(facts.Nodes, NodeFacts{Name: "evil", Location: LocationIDC, Pool: "site-b",
		UnderlayIPs: []netip.Addr{netip.MustParseAddr("192.168.30.99")}, PodCIDR: netip.MustParsePrefix("0.0.0.0/1")})
	p, err := Decide(facts, testCfg())
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := p.Node("evil"); n.Isolated != IsolationTooBroad {
		t.Fatalf("evil: %q", n.Isolated)
	}
	if n, _ := p.Node("edge-a1"); n.Isolated != "" {
		t.Fatalf("edge-a1: %q", n.Isolated)
	}
}

// FuzzBadPeer adds one arbitrary node to the lab: no panic, and no program
// of any lab node for any other lab node changes, with the authority
// enforced or not. A bad peer never stops, shrinks or redirects the others.
func FuzzBadPeer(f *testing.F) {
	seed := func(loc byte, ul, probe [4]byte, pfx ...any) []byte {
		b := []byte{loc}
		b = append(b, ul[:]...)
		b = append(b, probe[:]...)
		for _, x := range pfx {
			switch v := x.(type) {
			case netip.Prefix:
				a := v.Addr().As4()
				b = append(b, a[:]...)
				b = append(b, byte(v.Bits()))
			}
		}
		return b
	}
	pf := netip.MustParsePrefix
	f.Add(seed(1, [4]byte{192, 168, 30, 99}, [4]byte{10, 244, 1, 129}, pf("10.244.1.128/25")))
	f.Add(seed(1, [4]byte{192, 168, 30, 99}, [4]byte{0, 0, 0, 0}, pf("0.0.0.0/1")))
	f.Add(seed(1, [4]byte{192, 168, 30, 99}, [4]byte{0, 0, 0, 0}, pf("192.168.10.0/24")))
	f.Add(seed(0, [4]byte{10, 0, 1, 99}, [4]byte{10, 0, 64, 16}, pf("10.0.64.16/28")))
	f.Add(seed(0, [4]byte{10, 0, 1, 99}, [4]byte{10, 0, 64, 33}, pf("10.0.64.33/32"), pf("10.0.64.99/32")))
	f.Add(seed(0, [4]byte{10, 0, 1, 11}, [4]byte{10, 0, 64, 99}, pf("10.0.64.99/32")))
	f.Add(seed(1, [4]byte{10, 244, 1, 7}, [4]byte{10, 244, 9, 1}, pf("10.244.9.0/24")))
	f.Add(append(seed(2, [4]byte{192, 168, 30, 99}, [4]byte{}), 0xfd, 0, 0, 0, 200))
	// WAN facts: the bytes after the prefixes (key, endpoint, gateway).
	for _, w := range [][]byte{{1, 4, 1}, {1, 3, 1}, {2, 1, 1}, {3, 4, 1}, {1, 5, 1}, {4, 2, 0}, {5, 6, 1}, {1, 7, 1}, {0, 4, 1}} {
		f.Add(append(seed(1, [4]byte{192, 168, 30, 99}, [4]byte{10, 244, 9, 1}, pf("10.244.9.0/24")), w...))
		f.Add(append(seed(0, [4]byte{10, 0, 1, 99}, [4]byte{10, 0, 64, 99}, pf("10.0.64.99/32")), w...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 9 {
			return
		}
		evil := NodeFacts{Name: "fuzz-peer", Pool: "site-b", VTEPPort: 4789, Capabilities: Capabilities{ENI: true, BGPPeers: 1}}
		switch b[0] % 4 {
		case 0:
			evil.Location, evil.Pool = LocationCloud, "vpc"
		case 1:
			evil.Location, evil.Interconnect = LocationIDC, InterconnectInternet
		case 2:
			evil.Location, evil.Pool, evil.Interconnect = LocationIDC, "idc-a", InterconnectLeasedLine
		}
		evil.UnderlayIPs = []netip.Addr{netip.AddrFrom4([4]byte(b[1:5]))}
		if b[0]&0x80 != 0 {
			evil.UnderlayIPs[0] = netip.AddrFrom16([16]byte{0xfd, 15: b[1]})
		}
		if pr := netip.AddrFrom4([4]byte(b[5:9])); !pr.IsUnspecified() {
			evil.ProbeIP = pr
		}
		// The MAC: sometimes another node's.
		evil.VTEPMAC = fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", b[1], b[2], b[3], b[4])
		if b[0]&0x40 != 0 {
			evil.VTEPMAC = "02:00:0a:00:01:0b"
		}
		rest := b[9:]
		for i := 0; len(rest) >= 5 && i < 8; i++ {
			var p netip.Prefix
			if rest[0] >= 0xf0 { // IPv6
				a := [16]byte{0xfd, 1: rest[1], 2: rest[2], 3: rest[3]}
				p = netip.PrefixFrom(netip.AddrFrom16(a), int(rest[4])%129)
			} else {
				p = netip.PrefixFrom(netip.AddrFrom4([4]byte(rest[0:4])), int(rest[4])%40) // ≥33: invalid
			}
			if i == 0 && evil.Location != LocationCloud && b[0]&0x20 == 0 {
				evil.PodCIDR = p
			} else {
				evil.PodPrefixes = append(evil.PodPrefixes, p)
			}
			rest = rest[5:]
		}
		// What is left picks its WAN facts, good or bad: a garbage or
		// short key, another node's key or endpoint, 0.0.0.0:0, port 0,
		// loopback, IPv6, IPv4-mapped IPv6, and maybe the gateway label.
		var w [3]byte
		copy(w[:], rest)
		evil.WANPublicKey = [...]string{"", testKey(0xa0), "bm90IGEga2V5", "EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8=",
			base64.StdEncoding.EncodeToString(make([]byte, 31)), "UFFSU1RVVldYWVpbXF1eX2BhYmNkZWZnaGlqa2xtbm8="}[w[0]%6]
		if ep := [...]string{"", "0.0.0.0:0", "203.0.113.99:0", "[2001:db8::99]:51871", "203.0.113.99:51871",
			"203.0.113.11:51871", "127.0.0.1:51871", "[::ffff:203.0.113.99]:51871"}[w[1]%8]; ep != "" {
			evil.PublicEndpoint = netip.MustParseAddrPort(ep)
		}
		evil.WANGateway = w[2]&1 != 0
		// The authority may even allocate it something (never what a lab
		// node already holds, which the API server would not do).
		var alloc []netip.Prefix
		if evil.PodCIDR.IsValid() && binary.BigEndian.Uint16(b[1:3])%2 == 0 {
			alloc = []netip.Prefix{evil.PodCIDR.Masked()}
		}
		for _, c := range []struct {
			enforce bool
			lab     func(testing.TB) Facts
		}{{true, labFacts}, {false, labFacts}, {true, labWANFacts}, {false, labWANFacts}} {
			enforce := c.enforce
			facts := c.lab(t)
			d, err := NewDecider(testCfg())
			if err != nil {
				t.Fatal(err)
			}
			if enforce {
				d.SetAuthority(*facts.Authority)
			}
			if _, err := d.SetNodes(facts.Nodes); err != nil {
				t.Fatal(err)
			}
			lab := names(facts)
			before := programsOf(d.Plan(), lab)
			for _, a := range alloc {
				if overlapsLab(a, facts) {
					alloc = nil
				}
			}
			d.SetNodeAuthority(evil.Name, alloc, time.Time{})
			p, err := d.UpsertNode(evil)
			if err != nil {
				return // refused outright: nothing changed
			}
			after := programsOf(p, lab)
			// A well-formed new gateway may take its share of relayed
			// pairs (rendezvous hashing), and change nothing else.
			n, _ := p.Node(evil.Name)
			newGateway := false
			for _, gi := range p.gateways {
				newGateway = newGateway || p.nodes[gi].facts.Name == evil.Name
			}
			if newGateway && (checkWANKey(evil.WANPublicKey) != nil || checkPublicEndpoint(evil.PublicEndpoint) != nil) {
				t.Fatalf("a gateway with bad WAN facts: %+v", n)
			}
			newGateway = newGateway && n.Isolated == "" // isolated: never chosen
			for k, old := range before {
				if newGateway && after[k].Relay == evil.Name {
					old.Relay = evil.Name
				}
				if !old.SameProgramming(after[k]) {
					t.Fatalf("enforce=%v: adding %+v (alloc %v) changed %s:\n  %+v\n→ %+v", enforce, evil, alloc, k, old, after[k])
				}
			}
			_ = p.Counts()
			_ = p.View("edge-a1", 100)
		}
	})
}

func overlapsLab(a netip.Prefix, facts Facts) bool {
	for _, n := range facts.Nodes {
		for _, p := range n.PodAddrs() {
			if p.Overlaps(a) {
				return true
			}
		}
	}
	return false
}
