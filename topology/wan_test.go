package topology

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func labWANFacts(t testing.TB) Facts {
	t.Helper()
	b, err := os.ReadFile("testdata/lab-wan.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseFactsDoc(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func wanProbe(from, to string, ok bool, at time.Time) ProbeResult {
	return ProbeResult{From: from, To: to, Kind: ProbeWAN, OK: ok, At: at}
}

func testKey(seed byte) string {
	b := make([]byte, WANKeyLen)
	for i := range b {
		b[i] = seed + byte(i)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func mustPeer(t *testing.T, p *Plan, local, peer string) PeerProgram {
	t.Helper()
	pp, ok := p.PeerOf(local, peer)
	if !ok {
		t.Fatalf("no program %s→%s", local, peer)
	}
	return pp
}

var (
	ep1  = netip.MustParseAddrPort("203.0.113.11:51871")
	ep2  = netip.MustParseAddrPort("203.0.113.12:51871")
	epA1 = netip.MustParseAddrPort("198.51.100.5:51871")
)

func TestWANLabPlan(t *testing.T) {
	f := labWANFacts(t)
	p, err := Decide(f, testCfg())
	if err != nil {
		t.Fatal(err)
	}
	key := map[string]string{}
	for _, n := range f.Nodes {
		key[n.Name] = n.WANPublicKey
	}
	relay := p.peerProgram("edge-a2", "edge-b1").Relay
	if relay != "cloud-1" && relay != "cloud-2" {
		t.Fatalf("edge-a2→edge-b1 relay %q, want a gateway", relay)
	}
	cases := []struct {
		local, peer string
		path        Path
		endpoint    netip.AddrPort
		relay       string
		reason      string
	}{
		{"cloud-1", "cloud-2", PathNative, ep2, "", "same pool vpc"}, // gateways keep a standby to everyone
		{"cloud-1", "edge-a1", PathNative, epA1, "", "share the VPC routing domain"},
		{"cloud-1", "edge-a2", PathNative, netip.AddrPort{}, "", "native"},
		{"edge-a1", "edge-a2", PathNative, netip.AddrPort{}, "", "same pool idc-a"},
		{"cloud-1", "edge-b1", PathWAN, netip.AddrPort{}, "", "pools vpc and site-b are different routing domains (site-b is internet) → wan direct: edge-b1 has no public endpoint and initiates to cloud-1's 203.0.113.11:51871"},
		{"edge-b1", "cloud-1", PathWAN, ep1, "", "pools site-b and vpc are different routing domains (site-b is internet) → wan direct to 203.0.113.11:51871"},
		{"edge-b1", "cloud-2", PathWAN, ep2, "", "→ wan direct to 203.0.113.12:51871"},
		{"edge-b1", "edge-a1", PathWAN, epA1, "", "→ wan direct to 198.51.100.5:51871"},
		{"edge-a1", "edge-b1", PathWAN, netip.AddrPort{}, "", "initiates to edge-a1's 198.51.100.5:51871"},
		{"edge-a2", "edge-b1", PathWAN, netip.AddrPort{}, relay, "→ wan via gateway " + relay + " (neither has a public endpoint)"},
		{"edge-b1", "edge-a2", PathWAN, netip.AddrPort{}, relay, "→ wan via gateway " + relay},
	}
	for _, c := range cases {
		pp := mustPeer(t, p, c.local, c.peer)
		if pp.Path != c.path || pp.WANEndpoint != c.endpoint || pp.Relay != c.relay || !strings.Contains(pp.Reason, c.reason) {
			t.Errorf("%s→%s = %s endpoint %v relay %q (%q)\n want %s endpoint %v relay %q containing %q", c.local, c.peer, pp.Path, pp.WANEndpoint, pp.Relay, pp.Reason, c.path, c.endpoint, c.relay, c.reason)
		}
		// Standby: the WireGuard peer is there towards every other pool and
		// between gateways and everyone, whatever the path; not inside a pool.
		standby := c.local[:6] != c.peer[:6] || strings.HasPrefix(c.local, "cloud") || strings.HasPrefix(c.peer, "cloud")
		if got := pp.WANPublicKey != ""; got != standby || (got && pp.WANPublicKey != key[c.peer]) {
			t.Errorf("%s→%s WAN key %q, want standby=%v", c.local, c.peer, pp.WANPublicKey, standby)
		}
		if pp.Path == PathWAN && (len(pp.PodPrefixes) == 0 || pp.NextHop.IsValid() || pp.VTEP.IsValid()) {
			t.Errorf("%s→%s wan program %+v", c.local, c.peer, pp)
		}
	}
	if n := mustPeer(t, p, "edge-a1", "edge-a2"); n.WANPublicKey != "" {
		t.Errorf("same-pool peer has a standby tunnel: %+v", n)
	}
	// The relay is a peer with a tunnel, even from its own pool's members.
	if g := mustPeer(t, p, "edge-a2", relay); g.WANPublicKey != key[relay] || g.WANEndpoint.Port() != 51871 {
		t.Errorf("relay program %+v", g)
	}
	if got := p.Counts(); !reflect.DeepEqual(got, map[Path]int{PathNative: 12, PathWAN: 8}) {
		t.Fatalf("counts %v, want 12 native, 8 wan", got)
	}
	if pi, _ := p.Pair("cloud-1", "edge-b1"); pi.NativeFailed {
		t.Error("a cross-domain pair is not a failed native path")
	}
}

// The lab without WAN facts is decided as before (TestLabPlan), and a
// WAN IP alone is not reachable from outside.
func TestWANIPAloneIsNotAnEndpoint(t *testing.T) {
	f := labWANFacts(t)
	for i := range f.Nodes {
		f.Nodes[i].PublicEndpoint = netip.AddrPort{}
		f.Nodes[i].WANIP = netip.MustParseAddr("198.51.100.9")
	}
	p, err := Decide(f, testCfg())
	if err != nil {
		t.Fatal(err)
	}
	pp := mustPath(t, p, "cloud-1", "edge-b1")
	if pp.Path != PathUnreachable || !strings.Contains(pp.Reason, "neither has a public endpoint and no node is a WAN gateway") {
		t.Fatalf("%+v", pp)
	}
}

func TestWANMissingKey(t *testing.T) {
	f := labWANFacts(t)
	f.Nodes[4].WANPublicKey = "" // edge-b1
	p, err := Decide(f, testCfg())
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]string{{"cloud-1", "edge-b1"}, {"edge-b1", "edge-a2"}} {
		pp := mustPeer(t, p, pair[0], pair[1])
		if pp.Path != PathUnreachable || !strings.Contains(pp.Reason, "edge-b1 lacks strata.io/wan-public-key") || pp.WANPublicKey != "" || len(pp.PodPrefixes) != 0 {
			t.Fatalf("%v: %+v", pair, pp)
		}
	}
	// A garbage key from a facts source that skipped ParseNode counts as none.
	f.Nodes[4].WANPublicKey = "bm90IGEga2V5"
	p, _ = Decide(f, testCfg())
	if pp := mustPath(t, p, "cloud-1", "edge-b1"); pp.Path != PathUnreachable || !strings.Contains(pp.Reason, "edge-b1 has an invalid strata.io/wan-public-key") {
		t.Fatalf("%+v", pp)
	}
	// Leased line: without WAN facts on both, a failed native path stays vxlan.
	f = labWANFacts(t)
	f.Nodes[3].WANPublicKey = "" // edge-a2
	f.Probes = []ProbeResult{native("cloud-1", "edge-a1", false, t0), native("cloud-1", "edge-a1", false, t0), native("cloud-1", "edge-a1", false, t0)}
	p, _ = Decide(f, testCfg())
	if pp := mustPath(t, p, "cloud-1", "edge-a2"); pp.Path != PathVXLAN {
		t.Fatalf("%+v", pp)
	}
	if pp := mustPath(t, p, "cloud-1", "edge-a1"); pp.Path != PathWAN {
		t.Fatalf("%+v", pp)
	}
}

// A leased-line cut (silent or not: only native probes tell) moves
// cloud↔edge-a pairs to the WAN, never to VXLAN (whose outer packets would
// follow the dead line), and back to native after the hold-down; pairs
// inside a pool stay native.
func TestWANLeasedLineFailover(t *testing.T) {
	d, _ := NewDecider(testCfg())
	p0, _ := d.SetNodes(labWANFacts(t).Nodes)
	for i := range 3 {
		d.Observe(native("cloud-1", "edge-a1", false, t0.Add(time.Duration(i)*100*time.Millisecond)))
	}
	p1 := d.Plan()
	want := map[[2]string]netip.AddrPort{
		{"cloud-1", "edge-a1"}: epA1, {"cloud-2", "edge-a1"}: epA1,
		{"cloud-1", "edge-a2"}: {}, {"cloud-2", "edge-a2"}: {},
		{"edge-a1", "cloud-1"}: ep1, {"edge-a2", "cloud-1"}: ep1,
		{"edge-a1", "cloud-2"}: ep2, {"edge-a2", "cloud-2"}: ep2,
	}
	for pair, ep := range want {
		pp := mustPeer(t, p1, pair[0], pair[1])
		if pp.Path != PathWAN || pp.Relay != "" || pp.WANEndpoint != ep || !strings.Contains(pp.Reason, "probe failed 3× since 12:00:00.000 (VXLAN would follow it) → wan direct") {
			t.Fatalf("%v after the cut: %+v", pair, pp)
		}
		if pi, _ := p1.Pair(pair[0], pair[1]); !pi.NativeFailed {
			t.Fatalf("%v not drawn as failed native", pair)
		}
	}
	var got []string
	for _, c := range Diff(p0, p1) {
		if c.New.Path != PathWAN || c.Old.Path != PathNative || c.Old.WANPublicKey != c.New.WANPublicKey || c.Old.WANEndpoint != c.New.WANEndpoint {
			t.Errorf("change %s>%s: %+v → %+v (the standby peer must already be the WAN peer)", c.Local, peerName(c), c.Old, c.New)
		}
		got = append(got, c.Local+">"+peerName(c))
	}
	if len(got) != len(want) {
		t.Fatalf("changes %v, want exactly the 8 cloud↔edge-a programs", got)
	}
	for _, pair := range [][2]string{{"cloud-1", "cloud-2"}, {"edge-a1", "edge-a2"}} {
		if pp := mustPath(t, p1, pair[0], pair[1]); pp.Path != PathNative {
			t.Fatalf("%v moved: %+v", pair, pp)
		}
	}
	// Healed: held down on the WAN, then native again, as at the start.
	d.Observe(native("cloud-1", "edge-a1", true, t0.Add(time.Second)))
	if p, _ := d.Advance(t0.Add(10 * time.Second)); mustPath(t, p, "cloud-1", "edge-a1").Path != PathWAN {
		t.Fatalf("left the WAN before the hold-down: %+v", mustPath(t, p, "cloud-1", "edge-a1"))
	}
	p2, _ := d.Advance(t0.Add(11 * time.Second))
	if got := Diff(p0, p2); len(got) != 0 {
		t.Fatalf("healed plan differs from the start: %v", changeSet(got))
	}
	// Within one pool a failed native path stays on VXLAN (one LAN).
	for i := range 3 {
		d.Observe(native("edge-a1", "edge-a2", false, t0.Add(20*time.Second+time.Duration(i)*100*time.Millisecond)))
	}
	if pp := mustPath(t, d.Plan(), "edge-a1", "edge-a2"); pp.Path != PathVXLAN {
		t.Fatalf("same pool after a native failure: %+v", pp)
	}
}

// manyRelayed is the WAN lab plus site-b nodes behind NAT, so that relayed
// pairs spread over both gateways.
func manyRelayed(t testing.TB) []NodeFacts {
	nodes := labWANFacts(t).Nodes
	b1 := nodes[4]
	for i := 2; i <= 12; i++ {
		n := b1
		n.Name = fmt.Sprintf("edge-b%d", i)
		n.UnderlayIPs = []netip.Addr{netip.AddrFrom4([4]byte{192, 168, 30, byte(10 + i)})}
		n.PodCIDR = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(10 + i), 0}), 24)
		n.ProbeIP = n.PodCIDR.Addr().Next()
		n.VTEPMAC = fmt.Sprintf("02:00:c0:a8:1e:%02x", 10+i)
		n.WANPublicKey = testKey(byte(0x60 + i))
		nodes = append(nodes, n)
	}
	return nodes
}

func relays(p *Plan) map[[2]string]string {
	out := map[[2]string]string{}
	for _, n := range p.Nodes() {
		for _, pp := range p.PeersOf(n.Name) {
			if pp.Relay != "" {
				out[[2]string{n.Name, pp.Peer}] = pp.Relay
			}
		}
	}
	return out
}

func TestWANGatewayFailover(t *testing.T) {
	d, _ := NewDecider(testCfg())
	p0, err := d.SetNodes(manyRelayed(t))
	if err != nil {
		t.Fatal(err)
	}
	r0 := relays(p0)
	per := map[string]int{}
	for pair, g := range r0 {
		per[g]++
		if back := r0[[2]string{pair[1], pair[0]}]; back != g {
			t.Fatalf("%v relays through %s one way and %q back", pair, g, back)
		}
	}
	if len(r0) != 24 || per["cloud-1"] == 0 || per["cloud-2"] == 0 {
		t.Fatalf("relayed programs %d (want edge-a2↔12 site-b nodes = 24) over %v: both gateways should carry some", len(r0), per)
	}

	t.Run("WAN probes from one observer fail: only its pairs through that gateway move", func(t *testing.T) {
		var moved string // a site-b node edge-a2 reaches through cloud-1
		for pair, g := range r0 {
			if pair[0] == "edge-a2" && g == "cloud-1" {
				moved = pair[1]
			}
		}
		for i := range 3 {
			d.Observe(wanProbe("edge-a2", "cloud-1", false, t0.Add(time.Duration(i)*100*time.Millisecond)))
		}
		p1 := d.Plan()
		for _, c := range Diff(p0, p1) {
			if !(c.Local == "edge-a2" || peerName(c) == "edge-a2") || c.Old.Relay != "cloud-1" || c.New.Relay != "cloud-2" || c.New.Path != PathWAN {
				t.Errorf("unexpected change %s>%s: %+v → %+v", c.Local, peerName(c), c.Old, c.New)
			}
		}
		if got := len(Diff(p0, p1)); got != per["cloud-1"] {
			t.Errorf("%d changes, want the %d programs through cloud-1", got, per["cloud-1"])
		}
		pp := mustPeer(t, p1, "edge-a2", moved)
		if !strings.Contains(pp.Reason, "→ wan via gateway cloud-2 (neither has a public endpoint; skipped cloud-1: WAN probes from edge-a2 failed 3× since 12:00:00.000)") {
			t.Errorf("reason %q", pp.Reason)
		}
		if got := DiffPeers(p0, p1, "edge-a2"); len(got) != per["cloud-1"]/2 {
			t.Errorf("DiffPeers edge-a2: %v", changeSet(got))
		}
		// Healed: held down, then back to cloud-1.
		d.Observe(wanProbe("edge-a2", "cloud-1", true, t0.Add(time.Second)))
		if p, _ := d.Advance(t0.Add(10 * time.Second)); mustPeer(t, p, "edge-a2", moved).Relay != "cloud-2" ||
			!strings.Contains(mustPeer(t, p, "edge-a2", moved).Reason, "cloud-1: WAN probes from edge-a2 healthy since 12:00:01.000, held down until 12:00:11.000") {
			t.Errorf("moved back before the hold-down: %+v", mustPeer(t, p, "edge-a2", moved))
		}
		p2, _ := d.Advance(t0.Add(11 * time.Second))
		if got := Diff(p0, p2); len(got) != 0 {
			t.Errorf("not back on cloud-1 after the hold-down: %v", changeSet(got))
		}
		// One-shot and incremental agree.
		f := Facts{Nodes: manyRelayed(t), Now: t0.Add(500 * time.Millisecond)}
		for i := range 3 {
			f.Probes = append(f.Probes, wanProbe("edge-a2", "cloud-1", false, t0.Add(time.Duration(i)*100*time.Millisecond)))
		}
		q, _ := Decide(f, testCfg())
		if !reflect.DeepEqual(relays(q), relays(p1)) || !reflect.DeepEqual(q.Counts(), p1.Counts()) {
			t.Error("one-shot and incremental disagree")
		}
	})

	t.Run("a gateway dies: its pairs move, no other relayed pair does", func(t *testing.T) {
		before := d.Plan()
		// Gossip liveness alone moves nothing: across the internet, or a
		// cut leased line, a live gateway's private node IP looks dead.
		pl, _ := d.SetLiveness("cloud-1", false, t0.Add(time.Minute))
		if !reflect.DeepEqual(relays(pl), r0) {
			t.Fatal("gossip liveness moved relayed pairs; only WAN probes may")
		}
		// Every node's WAN probes to cloud-1 fail: the gateway is gone.
		var p1 *Plan
		for i := range 3 {
			at := t0.Add(time.Minute + time.Duration(i)*100*time.Millisecond)
			for _, n := range before.Nodes() {
				if n.Name != "cloud-1" {
					p1, _ = d.Observe(wanProbe(n.Name, "cloud-1", false, at))
				}
			}
		}
		r1 := relays(p1)
		for pair, g := range r0 {
			want := g
			if g == "cloud-1" {
				want = "cloud-2"
			}
			if r1[pair] != want {
				t.Errorf("%v relays through %q, want %s", pair, r1[pair], want)
			}
		}
		for _, c := range Diff(before, p1) {
			if c.Local != "cloud-1" && peerName(c) != "cloud-1" && c.Old.Relay != "cloud-1" {
				t.Errorf("unrelated change %s>%s: %+v → %+v", c.Local, peerName(c), c.Old, c.New)
			}
		}
		// cloud-1's own pairs keep their paths (its agent may be
		// restarting; forwarding must not depend on it): nothing is lost.
		if counts := p1.Counts(); counts[PathUnreachable] != 0 {
			t.Errorf("counts %v", counts)
		}
		// Both gateways gone: relayed pairs are unreachable, and say why.
		var p2 *Plan
		for i := range 3 {
			at := t0.Add(time.Minute + time.Duration(i)*100*time.Millisecond)
			for _, n := range before.Nodes() {
				if n.Name != "cloud-2" {
					p2, _ = d.Observe(wanProbe(n.Name, "cloud-2", false, at))
				}
			}
		}
		pp := mustPeer(t, p2, "edge-a2", "edge-b1")
		if pp.Path != PathUnreachable || !strings.Contains(pp.Reason, "no WAN gateway is usable (cloud-1: WAN probes from edge-a2 failed 3×") || !strings.Contains(pp.Reason, "cloud-2: WAN probes from edge-a2 failed 3×") {
			t.Errorf("%+v", pp)
		}
		if pp := mustPeer(t, p2, "edge-a1", "edge-b1"); pp.Path != PathWAN {
			t.Errorf("direct pairs need no gateway: %+v", pp)
		}
		want := map[Path]int{}
		for _, x := range allPairs(p2) {
			want[x.Path]++
		}
		if !reflect.DeepEqual(p2.Counts(), want) {
			t.Errorf("Counts %v, pairs %v", p2.Counts(), want)
		}
		// Back: healthy WAN probes, then the hold-down.
		at := t0.Add(2 * time.Minute)
		d.SetLiveness("cloud-1", true, at)
		for _, n := range before.Nodes() {
			for _, g := range []string{"cloud-1", "cloud-2"} {
				if n.Name != g {
					d.Observe(wanProbe(n.Name, g, true, at))
				}
			}
		}
		p3, _ := d.Advance(at.Add(time.Minute)) // past any hold-down
		if !reflect.DeepEqual(relays(p3), r0) {
			t.Error("gateways back: relays differ from the start")
		}
	})
}

// Counts agrees with Pairs with WAN observers and failures in play.
func TestWANCountsMatchPairs(t *testing.T) {
	f := Facts{Nodes: manyRelayed(t), Now: t0.Add(time.Second)}
	for i := range 3 {
		at := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		f.Probes = append(f.Probes, wanProbe("edge-b3", "cloud-1", false, at), wanProbe("edge-b3", "cloud-2", false, at),
			wanProbe("edge-b5", "cloud-2", false, at), native("cloud-1", "edge-a1", false, at))
	}
	p, err := Decide(f, testCfg())
	if err != nil {
		t.Fatal(err)
	}
	want := map[Path]int{}
	for _, pp := range allPairs(p) {
		want[pp.Path]++
	}
	if got := p.Counts(); !reflect.DeepEqual(got, want) {
		t.Fatalf("counts %v, pairs %v", got, want)
	}
	if pp := mustPath(t, p, "edge-a2", "edge-b3"); pp.Path != PathUnreachable {
		t.Fatalf("edge-b3 reaches no gateway: %+v", pp)
	}
}

func TestParseWANFacts(t *testing.T) {
	good := map[string]string{AnnotationWANPublicKey: testKey(1), AnnotationPublicEndpoint: "203.0.113.11:51871"}
	f, err := ParseNode("n1", map[string]string{LabelWANGateway: "true"}, good)
	if err != nil || !f.WANGateway || f.WANPublicKey != testKey(1) || f.PublicEndpoint != ep1 {
		t.Fatalf("%+v %v", f, err)
	}
	if f, err := ParseNode("n1", nil, map[string]string{AnnotationPublicEndpoint: "[::ffff:203.0.113.11]:51871"}); err != nil || f.PublicEndpoint != ep1 {
		t.Fatalf("mapped: %+v %v", f, err)
	}
	if f, err := ParseNode("n1", nil, map[string]string{AnnotationPublicEndpoint: "[2001:db8::1]:51871"}); err != nil || !f.PublicEndpoint.Addr().Is6() {
		t.Fatalf("IPv6: %+v %v", f, err)
	}
	cases := []struct{ key, val, want string }{
		{LabelWANGateway, "yes", "true or false"},
		{AnnotationWANPublicKey, "garbage", "base64 of 32 bytes"},
		{AnnotationWANPublicKey, base64.StdEncoding.EncodeToString(make([]byte, 31)), "decodes to 31 bytes"},
		{AnnotationWANPublicKey, base64.StdEncoding.EncodeToString(make([]byte, 30)), "40 characters, want 44"},
		{AnnotationWANPublicKey, strings.Repeat("!", 44), "illegal base64"},
		{AnnotationWANPublicKey, "", "base64 of 32 bytes"},
		{AnnotationPublicEndpoint, "0.0.0.0:0", "ip:port reachable from the internet"},
		{AnnotationPublicEndpoint, "203.0.113.11:0", "port 0"},
		{AnnotationPublicEndpoint, "203.0.113.11", "ip:port"},
		{AnnotationPublicEndpoint, "127.0.0.1:51871", "not an address a peer can send to"},
		{AnnotationPublicEndpoint, "[fe80::1%eth0]:51871", "zone"},
		{AnnotationPublicEndpoint, "[ff02::1]:51871", "not an address a peer can send to"},
		{AnnotationPublicEndpoint, "[::]:51871", "not an address a peer can send to"},
	}
	for _, c := range cases {
		labels, ann := map[string]string{}, map[string]string{}
		if c.key == LabelWANGateway {
			labels[c.key] = c.val
		} else {
			ann[c.key] = c.val
		}
		_, err := ParseNode("n1", labels, ann)
		if err == nil {
			t.Errorf("%s=%q accepted", c.key, c.val)
			continue
		}
		for _, w := range []string{"node n1", c.key, fmt.Sprintf("%q", c.val), c.want} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s=%q: error %q lacks %q", c.key, c.val, err, w)
			}
		}
	}
	for _, n := range labWANFacts(t).Nodes {
		l, a := Format(n)
		g, err := ParseNode(n.Name, l, a)
		if err != nil || !reflect.DeepEqual(g, n) {
			t.Fatalf("round trip %s:\n got %+v\nwant %+v (%v)", n.Name, g, n, err)
		}
	}
	for _, doc := range []string{
		`nodes: [{name: a, wanPublicKey: "x"}]`,
		`nodes: [{name: a, publicEndpoint: "0.0.0.0:0"}]`,
		`nodes: [{name: a, publicEndpoint: "1.2.3.4:0"}]`,
	} {
		if _, err := ParseFactsDoc([]byte(doc)); err == nil || !strings.Contains(err.Error(), "nodes[0] (a)") {
			t.Errorf("%s: %v", doc, err)
		}
	}
	if _, err := ParseFactsDoc([]byte(`probes: [{from: a, to: b, kind: wan, ok: false}]`)); err != nil {
		t.Errorf("wan probe kind refused: %v", err)
	}
}

func TestWANConfig(t *testing.T) {
	if err := (Config{FailThreshold: 3, WANFailThreshold: -1}).Validate(); err == nil || !strings.Contains(err.Error(), "wanFailThreshold=-1") {
		t.Fatal(err)
	}
	if err := (Config{FailThreshold: 3, WANHoldDown: -time.Second}).Validate(); err == nil || !strings.Contains(err.Error(), "wanHoldDown") {
		t.Fatal(err)
	}
	c := DefaultConfig()
	if c.wanFailThreshold() != 3 || c.wanHoldDown() != 10*time.Second {
		t.Fatalf("%+v", c)
	}
	// Zero WAN knobs (configs written before them): defaults, WAN hold-down = HoldDown.
	old := Config{FailThreshold: 5, HoldDown: 2 * time.Second}
	if old.Validate() != nil || old.wanFailThreshold() != DefaultWANFailThreshold || old.wanHoldDown() != 2*time.Second {
		t.Fatalf("%+v", old)
	}
}

// DiffPeers is exact under WAN changes: random WAN and native probes,
// liveness flips and fact changes (keys, endpoints, the gateway label) on a
// cluster with relayed pairs; after each step every node's DiffPeers equals
// the brute-force comparison of all its programs, and Counts equals Pairs.
func TestWANDiffExact(t *testing.T) {
	nodes := manyRelayed(t)
	d, _ := NewDecider(Config{FailThreshold: 2, HoldDown: time.Second, WANFailThreshold: 2, WANHoldDown: 500 * time.Millisecond})
	p, err := d.SetNodes(nodes)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]NodeFacts{}
	for _, n := range nodes {
		byName[n.Name] = n
	}
	rng := uint64(1)
	next := func(n int) int {
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		return int(rng % uint64(n))
	}
	pick := func() string { return nodes[next(len(nodes))].Name }
	gateways := []string{"cloud-1", "cloud-2"}
	at := t0
	relayMoves, wanMoves, wanExcSteps := 0, 0, 0
	for step := range 400 {
		at = at.Add(100 * time.Millisecond)
		var what string
		switch next(7) {
		case 0, 1:
			// Few observers behind NAT, so that failures add up to K.
			from, g := [...]string{"edge-a2", "edge-b1", "edge-b2"}[next(3)], gateways[next(2)]
			ok := next(3) == 0
			what = fmt.Sprintf("wan %s→%s ok=%v", from, g, ok)
			d.Observe(wanProbe(from, g, ok, at))
		case 2:
			ok := next(2) == 0
			what = fmt.Sprintf("native cloud-1→edge-a1 ok=%v", ok)
			d.Observe(native("cloud-1", "edge-a1", ok, at))
		case 3:
			n, alive := pick(), next(3) != 0
			if next(2) == 0 {
				n = gateways[next(2)]
			}
			what = fmt.Sprintf("live %s=%v", n, alive)
			d.SetLiveness(n, alive, at)
		case 4:
			f := byName[gateways[next(2)]] // as it was, unless mutated
			switch next(6) {
			case 0:
				f.WANGateway = !f.WANGateway
			case 1:
				f.WANPublicKey = byName["edge-b3"].WANPublicKey // a duplicate key
			case 2:
				f.PublicEndpoint = netip.AddrPort{}
			}
			what = fmt.Sprintf("facts %s gw=%v ep=%v", f.Name, f.WANGateway, f.PublicEndpoint)
			if _, err := d.UpsertNode(f); err != nil {
				t.Fatal(err)
			}
		case 5:
			f := byName[pick()]
			if next(3) == 0 {
				f.WANPublicKey = ""
			}
			what = "facts " + f.Name + " key=" + f.WANPublicKey
			if _, err := d.UpsertNode(f); err != nil {
				t.Fatal(err)
			}
		case 6:
			what = "advance"
			d.Advance(at)
		}
		q := d.Plan()
		if !reflect.DeepEqual(p.wanExc, q.wanExc) {
			wanExcSteps++
		}
		for _, local := range nodes {
			want := map[string]bool{}
			for _, peer := range nodes {
				if peer.Name == local.Name {
					continue
				}
				if o, n := p.peerProgram(local.Name, peer.Name), q.peerProgram(local.Name, peer.Name); !o.SameProgramming(n) {
					want[peer.Name] = true
				}
			}
			got := map[string]bool{}
			for _, c := range DiffPeers(p, q, local.Name) {
				got[peerName(c)] = true
				if c.Old.Path == PathWAN && c.New.Path == PathWAN && c.Old.Relay != c.New.Relay {
					relayMoves++
				}
				if (c.Old.Path == PathWAN) != (c.New.Path == PathWAN) {
					wanMoves++
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("step %d (%s): DiffPeers(%s) = %v, want %v", step, what, local.Name, got, want)
			}
		}
		counts := map[Path]int{}
		for _, pp := range allPairs(q) {
			counts[pp.Path]++
		}
		if !reflect.DeepEqual(counts, q.Counts()) {
			t.Fatalf("step %d (%s): Counts %v, Pairs %v", step, what, q.Counts(), counts)
		}
		p = q
	}
	// The walk must have moved relays and paths, or it proved nothing.
	if relayMoves < 20 || wanMoves < 20 || wanExcSteps < 10 {
		t.Fatalf("only %d relay moves, %d moves onto or off the WAN, %d WAN liveness changes", relayMoves, wanMoves, wanExcSteps)
	}
	t.Logf("%d relay moves, %d moves onto or off the WAN, %d WAN liveness changes", relayMoves, wanMoves, wanExcSteps)
}
