package topology

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func labFacts(t testing.TB) Facts {
	t.Helper()
	b, err := os.ReadFile("testdata/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseFactsDoc(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func testCfg() Config { return Config{FailThreshold: 3, HoldDown: 10 * time.Second} }

func mustPath(t *testing.T, p *Plan, a, b string) PairPath {
	t.Helper()
	pp, ok := p.Path(a, b)
	if !ok {
		t.Fatalf("no path %s→%s", a, b)
	}
	return pp
}

func native(from, to string, ok bool, at time.Time) ProbeResult {
	return ProbeResult{From: from, To: to, Kind: ProbeNative, OK: ok, At: at}
}

func TestLabPlan(t *testing.T) {
	p, err := Decide(labFacts(t), testCfg())
	if err != nil {
		t.Fatal(err)
	}
	wantDP := map[string]Datapath{"cloud-1": DatapathENIMultiIP, "cloud-2": DatapathENIMultiIP,
		"edge-a1": DatapathBGPUnderlay, "edge-a2": DatapathBGPUnderlay, "edge-b1": DatapathVXLANOverlay}
	for _, n := range p.Nodes() {
		if n.Datapath != wantDP[n.Name] {
			t.Errorf("%s datapath %s, want %s (%s)", n.Name, n.Datapath, wantDP[n.Name], n.Reason)
		}
	}
	cases := []struct {
		name, a, b string
		want       Path
		reason     string
	}{
		{"cloud↔cloud native", "cloud-1", "cloud-2", PathNative, "same pool vpc"},
		{"cloud↔idc over leased line native", "cloud-1", "edge-a1", PathNative, "share the VPC routing domain"},
		{"idc↔cloud native", "edge-a2", "cloud-2", PathNative, "native"},
		{"idc↔idc same pool native", "edge-a1", "edge-a2", PathNative, "same pool idc-a"},
		{"cloud↔L3-only vxlan", "cloud-1", "edge-b1", PathVXLAN, "edge-b1 is vxlan-overlay"},
		{"L3-only↔idc vxlan", "edge-b1", "edge-a1", PathVXLAN, "edge-b1 is vxlan-overlay"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pp := mustPath(t, p, c.a, c.b)
			if pp.Path != c.want || !strings.Contains(pp.Reason, c.reason) {
				t.Fatalf("%s→%s = %s (%q), want %s containing %q", c.a, c.b, pp.Path, pp.Reason, c.want, c.reason)
			}
		})
	}
	counts := p.Counts()
	if counts[PathNative] != 12 || counts[PathVXLAN] != 8 || counts[PathUnreachable] != 0 {
		t.Fatalf("counts %v, want 12 native, 8 vxlan", counts)
	}
}

func TestInternetPoolWithBGPIsNotNativeAcrossPools(t *testing.T) {
	f := labFacts(t)
	for i := range f.Nodes {
		if f.Nodes[i].Name == "edge-b1" {
			f.Nodes[i].Capabilities.BGPPeers = 1 // BGP inside site B, but the WAN is L3-only
		}
	}
	p, err := Decide(f, testCfg())
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := p.Node("edge-b1"); n.Datapath != DatapathBGPUnderlay {
		t.Fatalf("edge-b1 datapath %s", n.Datapath)
	}
	if pp := mustPath(t, p, "cloud-1", "edge-b1"); pp.Path != PathVXLAN || !strings.Contains(pp.Reason, "no native interconnect") {
		t.Fatalf("cloud-1→edge-b1 = %+v", pp)
	}
}

func TestHysteresis(t *testing.T) {
	cfg := testCfg()
	steps := []struct {
		name   string
		probes []ProbeResult
		now    time.Time
		want   Path
		reason string
	}{
		{"two failures: still native", []ProbeResult{
			native("cloud-1", "edge-a1", false, t0.Add(100*time.Millisecond)),
			native("cloud-2", "edge-a2", false, t0.Add(200*time.Millisecond)),
		}, t0.Add(200 * time.Millisecond), PathNative, "native"},
		{"K-th consecutive failure: leased line down → vxlan", []ProbeResult{
			native("edge-a1", "cloud-2", false, t0.Add(300*time.Millisecond)),
		}, t0.Add(300 * time.Millisecond), PathVXLAN, "probe failed 3× since 12:00:00.100; node IPs reachable → vxlan"},
		{"healed: held down", []ProbeResult{
			native("cloud-1", "edge-a1", true, t0.Add(2*time.Second)),
		}, t0.Add(5 * time.Second), PathVXLAN, "held down until 12:00:12.000"},
		{"flapping: fails inside hold-down → stays vxlan", []ProbeResult{
			native("cloud-1", "edge-a2", false, t0.Add(6*time.Second)),
			native("cloud-1", "edge-a2", true, t0.Add(7*time.Second)),
		}, t0.Add(12500 * time.Millisecond), PathVXLAN, "held down until 12:00:17.000"},
		{"one more healthy probe is not enough before hold-down", []ProbeResult{
			native("cloud-2", "edge-a1", true, t0.Add(16*time.Second)),
		}, t0.Add(16999 * time.Millisecond), PathVXLAN, "held down"},
		{"healed and stable for hold-down → native", nil, t0.Add(17 * time.Second), PathNative, "native"},
	}
	d, err := NewDecider(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetNodes(labFacts(t).Nodes); err != nil {
		t.Fatal(err)
	}
	var all []ProbeResult
	for _, s := range steps {
		for _, r := range s.probes {
			d.Observe(r)
		}
		all = append(all, s.probes...)
		p, _ := d.Advance(s.now)
		for _, pair := range [][2]string{{"cloud-1", "edge-a1"}, {"edge-a2", "cloud-2"}, {"cloud-2", "edge-a1"}} {
			pp := mustPath(t, p, pair[0], pair[1])
			if pp.Path != s.want || !strings.Contains(pp.Reason, s.reason) {
				t.Fatalf("%s: %s→%s = %s (%q), want %s containing %q", s.name, pair[0], pair[1], pp.Path, pp.Reason, s.want, s.reason)
			}
		}
		// Unaffected pairs never move.
		for _, pair := range [][2]string{{"cloud-1", "cloud-2"}, {"edge-a1", "edge-a2"}} {
			if pp := mustPath(t, p, pair[0], pair[1]); pp.Path != PathNative {
				t.Fatalf("%s: unaffected %v = %+v", s.name, pair, pp)
			}
		}
		// The one-shot Decide over the same history agrees with the incremental Decider.
		f := labFacts(t)
		f.Probes, f.Now = all, s.now
		q, err := Decide(f, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(allPairs(p), allPairs(q)) {
			t.Fatalf("%s: incremental and one-shot plans differ", s.name)
		}
	}
}

func allPairs(p *Plan) []PairPath {
	var out []PairPath
	p.Pairs(func(pp PairPath) bool { out = append(out, pp); return true })
	return out
}

func TestSuccessesResetFailureStreak(t *testing.T) {
	f := labFacts(t)
	for i := range 10 {
		at := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		f.Probes = append(f.Probes, native("cloud-1", "edge-a1", i%3 == 2, at))
	}
	f.Now = t0.Add(time.Second)
	p, err := Decide(f, testCfg())
	if err != nil {
		t.Fatal(err)
	}
	if pp := mustPath(t, p, "cloud-1", "edge-a1"); pp.Path != PathNative {
		t.Fatalf("two failures then a success must not trip K=3: %+v", pp)
	}
}

func TestUnreachable(t *testing.T) {
	t.Run("node without underlay", func(t *testing.T) {
		f := labFacts(t)
		f.Nodes[4].UnderlayIPs = nil // edge-b1
		p, err := Decide(f, testCfg())
		if err != nil {
			t.Fatal(err)
		}
		pp := mustPath(t, p, "cloud-1", "edge-b1")
		if pp.Path != PathUnreachable || !strings.Contains(pp.Reason, "edge-b1 facts incomplete (missing strata.io/underlay-ips)") {
			t.Fatalf("%+v", pp)
		}
	})
	t.Run("node IPs down (gossip) keeps the path", func(t *testing.T) {
		f := labFacts(t)
		f.Probes = []ProbeResult{{From: "cloud-1", To: "edge-a1", Kind: ProbeNodeIP, OK: false, At: t0}}
		p, err := Decide(f, testCfg())
		if err != nil {
			t.Fatal(err)
		}
		// Liveness is the agent's: a restarting agent must not take its
		// node's pods off the network, so every path stays as it was.
		for peer, want := range map[string]Path{"cloud-2": PathNative, "edge-a2": PathNative, "edge-b1": PathVXLAN} {
			pp := mustPath(t, p, peer, "edge-a1")
			if pp.Path != want || !strings.Contains(pp.Reason, "node IPs of edge-a1 unreachable since 12:00:00.000") || !strings.Contains(pp.Reason, "the path stays") {
				t.Fatalf("%s→edge-a1 %+v, want %s kept with the liveness loss in the reason", peer, pp, want)
			}
		}
		if pp := mustPath(t, p, "cloud-1", "edge-a2"); pp.Path != PathNative {
			t.Fatalf("others stay native: %+v", pp)
		}
	})
	t.Run("link down and peer has no VTEP", func(t *testing.T) {
		f := labFacts(t)
		f.Nodes[2].VTEPMAC = "" // edge-a1
		f.Probes = []ProbeResult{native("cloud-1", "edge-a1", false, t0), native("cloud-1", "edge-a1", false, t0), native("cloud-1", "edge-a1", false, t0)}
		p, err := Decide(f, testCfg())
		if err != nil {
			t.Fatal(err)
		}
		pp := mustPath(t, p, "cloud-1", "edge-a1")
		if pp.Path != PathUnreachable || !strings.Contains(pp.Reason, "edge-a1 lacks overlay facts (missing strata.io/vtep-mac)") {
			t.Fatalf("%+v", pp)
		}
	})
}

// Removing any one fact from a native-capable node never leaves it native.
func TestIncompleteFactsNeverNative(t *testing.T) {
	strip := map[string]func(*NodeFacts){
		"location":                   func(f *NodeFacts) { f.Location = "" },
		"pool":                       func(f *NodeFacts) { f.Pool = "" },
		"underlay":                   func(f *NodeFacts) { f.UnderlayIPs = nil },
		"pod-cidr":                   func(f *NodeFacts) { f.PodCIDR = netip.Prefix{} },
		"probe-ip":                   func(f *NodeFacts) { f.ProbeIP = netip.Addr{} },
		"probe-ip outside pod space": func(f *NodeFacts) { f.ProbeIP = netip.MustParseAddr("192.168.10.11") },
		"interconnect":               func(f *NodeFacts) { f.Interconnect = "" },
		"bgp-peers":                  func(f *NodeFacts) { f.Capabilities.BGPPeers = 0 },
	}
	for name, fn := range strip {
		t.Run(name, func(t *testing.T) {
			f := labFacts(t)
			fn(&f.Nodes[2]) // edge-a1
			p, err := Decide(f, testCfg())
			if err != nil {
				t.Fatal(err)
			}
			for _, peer := range []string{"cloud-1", "edge-a2"} {
				for _, pp := range []PairPath{mustPath(t, p, peer, "edge-a1"), mustPath(t, p, "edge-a1", peer)} {
					if pp.Path == PathNative {
						t.Fatalf("without %s, %s→%s is native: %s", name, pp.From, pp.To, pp.Reason)
					}
				}
			}
			if pp := mustPath(t, p, "cloud-1", "edge-a2"); pp.Path != PathNative {
				t.Fatalf("edge-a2 unaffected: %+v", pp)
			}
		})
	}
	t.Run("cloud without eni capability", func(t *testing.T) {
		f := labFacts(t)
		f.Nodes[0].Capabilities.ENI = false
		f.Nodes[0].PodPrefixes = nil
		p, _ := Decide(f, testCfg())
		if pp := mustPath(t, p, "cloud-1", "cloud-2"); pp.Path == PathNative {
			t.Fatalf("%+v", pp)
		}
	})
}

func TestExclusiveENI(t *testing.T) {
	f := labFacts(t)
	f.Nodes[0].ENIMode = ENIModeExclusive
	f.Nodes[1].ENIMode = ENIModeExclusive
	f.Nodes[1].Capabilities.ENIQuota = 1
	p, _ := Decide(f, testCfg())
	if n, _ := p.Node("cloud-1"); n.Datapath != DatapathENIExclusive {
		t.Fatalf("cloud-1 %+v", n)
	}
	if n, _ := p.Node("cloud-2"); n.Datapath != DatapathENIMultiIP || !strings.Contains(n.Reason, "eni-quota=1") {
		t.Fatalf("cloud-2 %+v", n)
	}
}

func TestPeersOf(t *testing.T) {
	f := labFacts(t)
	f.Probes = []ProbeResult{native("cloud-1", "edge-a1", false, t0), native("cloud-1", "edge-a1", false, t0), native("cloud-1", "edge-a1", false, t0)}
	p, _ := Decide(f, testCfg())
	peers := p.PeersOf("cloud-1")
	if len(peers) != 4 {
		t.Fatalf("%d peers", len(peers))
	}
	byName := map[string]PeerProgram{}
	for _, pp := range peers {
		byName[pp.Peer] = pp
	}
	c2 := byName["cloud-2"]
	if c2.Path != PathNative || c2.NextHop != netip.MustParseAddr("10.0.1.12") || c2.PodPrefixes[0] != netip.MustParsePrefix("10.0.64.32/28") || c2.VTEPMAC != "" {
		t.Fatalf("cloud-2 %+v", c2)
	}
	a1 := byName["edge-a1"]
	if a1.Path != PathVXLAN || a1.VTEP != netip.MustParseAddr("192.168.10.11") || a1.VTEPMAC != "02:00:c0:a8:0a:0b" || a1.VTEPPort != 4789 || a1.PodPrefixes[0] != netip.MustParsePrefix("10.244.1.0/24") || a1.NextHop.IsValid() {
		t.Fatalf("edge-a1 %+v", a1)
	}
	if p.PeersOf("nope") != nil {
		t.Fatal("unknown node has peers")
	}
}

func changeSet(cs []PeerChange) []string {
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%s>%s:%s>%s", c.Local, peerName(c), c.Old.Path, c.New.Path))
	}
	return out
}

func TestDiff(t *testing.T) {
	d, _ := NewDecider(testCfg())
	p0, _ := d.SetNodes(labFacts(t).Nodes)
	if got := Diff(p0, p0); len(got) != 0 {
		t.Fatalf("self diff %v", got)
	}
	if got := Diff(nil, p0); len(got) != 20 {
		t.Fatalf("diff from nothing: %d changes, want 20", len(got))
	}
	for i := range 3 {
		d.Observe(native("cloud-1", "edge-a1", false, t0.Add(time.Duration(i)*time.Millisecond)))
	}
	p1 := d.Plan()
	want := []string{
		"cloud-1>edge-a1:native>vxlan", "cloud-1>edge-a2:native>vxlan",
		"cloud-2>edge-a1:native>vxlan", "cloud-2>edge-a2:native>vxlan",
		"edge-a1>cloud-1:native>vxlan", "edge-a1>cloud-2:native>vxlan",
		"edge-a2>cloud-1:native>vxlan", "edge-a2>cloud-2:native>vxlan",
	}
	if got := changeSet(Diff(p0, p1)); !reflect.DeepEqual(got, want) {
		t.Fatalf("link down diff:\n got %v\nwant %v", got, want)
	}
	if got := changeSet(DiffPeers(p0, p1, "edge-a2")); !reflect.DeepEqual(got, want[6:]) {
		t.Fatalf("edge-a2 diff %v", got)
	}
	if got := DiffPeers(p0, p1, "edge-b1"); len(got) != 0 {
		t.Fatalf("edge-b1 unaffected, got %v", got)
	}
	// A reason-only change (more failures) is not a programming change.
	d.Observe(native("cloud-1", "edge-a1", false, t0.Add(time.Second)))
	if got := Diff(p1, d.Plan()); len(got) != 0 {
		t.Fatalf("reason-only diff %v", got)
	}
	// New pod prefix on edge-b1: every peer reprograms edge-b1, nothing else.
	f := labFacts(t).Nodes[4]
	f.PodPrefixes = []netip.Prefix{netip.MustParsePrefix("10.244.33.0/24")}
	p2, err := d.UpsertNode(f)
	if err != nil {
		t.Fatal(err)
	}
	got := changeSet(Diff(p1, p2))
	want = []string{"cloud-1>edge-b1:vxlan>vxlan", "cloud-2>edge-b1:vxlan>vxlan", "edge-a1>edge-b1:vxlan>vxlan", "edge-a2>edge-b1:vxlan>vxlan"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("prefix diff %v", got)
	}
	// Removing a node: every peer drops it, and it drops every peer.
	p3 := d.RemoveNode("edge-b1")
	if got := Diff(p2, p3); len(got) != 8 {
		t.Fatalf("remove diff %v", changeSet(got))
	}
}

func TestUpsertNodeMetaKeepsLastGood(t *testing.T) {
	d, _ := NewDecider(testCfg())
	good := labFacts(t).Nodes[2]
	labels, ann := Format(good)
	if _, err := d.UpsertNodeMeta(good.Name, labels, ann); err != nil {
		t.Fatal(err)
	}
	bad := maps.Clone(ann)
	bad[AnnotationPodCIDR] = "10.244.1.7/24"
	_, err := d.UpsertNodeMeta(good.Name, labels, bad)
	if err == nil || !strings.Contains(err.Error(), "node edge-a1: strata.io/pod-cidr=\"10.244.1.7/24\" is malformed: want one network prefix") {
		t.Fatalf("err %v", err)
	}
	n, _ := d.Plan().Node("edge-a1")
	if n.Facts.PodCIDR != good.PodCIDR {
		t.Fatalf("last good facts lost: %+v", n.Facts)
	}
}

func TestParseNodeErrors(t *testing.T) {
	cases := []struct{ key, val, want string }{
		{LabelLocation, "aws", "one of cloud, ens, idc"},
		{LabelPool, "Pool_A", "a DNS label"},
		{LabelInterconnect, "vpn", "one of leased-line, internet"},
		{LabelENIMode, "shared", "one of multi-ip, exclusive"},
		{AnnotationUnderlayIPs, "10.0.0.1,banana", "comma-separated IP addresses"},
		{AnnotationWANIP, "1.2.3", "one IP address"},
		{AnnotationProbeIP, "", "one IP address"},
		{AnnotationVTEPMAC, "02:00:00:00:00", "a 48-bit MAC"},
		{AnnotationVTEPPort, "0", "a UDP port 1-65535"},
		{AnnotationVTEPPort, "70000", "a UDP port 1-65535"},
		{AnnotationPodCIDR, "10.244.0.1/24", "host bits zero"},
		{AnnotationPodPrefixes, "10.0.64.5/32,x", "comma-separated prefixes"},
		{AnnotationCapabilities, "eni,warp", "comma list of eni"},
		{AnnotationCapabilities, "eni-quota", "comma list of eni"},
		{AnnotationCapabilities, "eni,eni", "comma list of eni"},
	}
	for _, c := range cases {
		t.Run(c.key+"="+c.val, func(t *testing.T) {
			labels, ann := map[string]string{}, map[string]string{}
			if strings.HasPrefix(c.key, "strata.io/") && (c.key == LabelLocation || c.key == LabelPool || c.key == LabelInterconnect || c.key == LabelENIMode) {
				labels[c.key] = c.val
			} else {
				ann[c.key] = c.val
			}
			_, err := ParseNode("n1", labels, ann)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			for _, w := range []string{"node n1", c.key, c.want} {
				if !strings.Contains(msg, w) {
					t.Fatalf("error %q lacks %q", msg, w)
				}
			}
		})
	}
	if _, err := ParseNode("", nil, nil); err == nil {
		t.Fatal("empty name accepted")
	}
}

func TestFormatRoundTrip(t *testing.T) {
	for _, f := range labFacts(t).Nodes {
		labels, ann := Format(f)
		g, err := ParseNode(f.Name, labels, ann)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(f, g) {
			t.Fatalf("round trip\n got %+v\nwant %+v", g, f)
		}
	}
	empty, err := ParseNode("x", nil, nil)
	if err != nil || !reflect.DeepEqual(empty, NodeFacts{Name: "x"}) {
		t.Fatalf("%+v %v", empty, err)
	}
}

func TestBadInput(t *testing.T) {
	if _, err := Decide(Facts{Nodes: []NodeFacts{{Name: "a"}, {Name: "a"}}}, testCfg()); err == nil || !strings.Contains(err.Error(), "node a listed twice") {
		t.Fatalf("dup: %v", err)
	}
	if _, err := Decide(Facts{}, Config{}); err == nil || !strings.Contains(err.Error(), "failThreshold=0") {
		t.Fatalf("cfg: %v", err)
	}
	f := labFacts(t)
	f.Probes = []ProbeResult{native("cloud-1", "edge-a1", false, t0.Add(time.Second)), native("cloud-1", "edge-a1", false, t0)}
	if _, err := Decide(f, testCfg()); err == nil || !strings.Contains(err.Error(), "time order") {
		t.Fatalf("order: %v", err)
	}
	if _, err := ParseFactsDoc([]byte("nodes: [{name: a, colour: red}]")); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Fatalf("unknown field: %v", err)
	}
}

func TestCountsMatchPairs(t *testing.T) {
	f := labFacts(t)
	f.Probes = []ProbeResult{native("cloud-1", "edge-a1", false, t0), native("cloud-1", "edge-a1", false, t0), native("cloud-1", "edge-a1", false, t0),
		{From: "cloud-1", To: "edge-b1", Kind: ProbeNodeIP, OK: false, At: t0}}
	p, _ := Decide(f, testCfg())
	want := map[Path]int{}
	for _, pp := range allPairs(p) {
		want[pp.Path]++
	}
	if got := p.Counts(); !reflect.DeepEqual(got, want) {
		t.Fatalf("counts %v, pairs %v", got, want)
	}
}

func FuzzParseNode(f *testing.F) {
	for _, n := range []NodeFacts{{Name: "seed"}} {
		l, a := Format(n)
		f.Add(n.Name, l[LabelLocation], l[LabelPool], a[AnnotationUnderlayIPs], a[AnnotationVTEPMAC], a[AnnotationVTEPPort], a[AnnotationPodCIDR], a[AnnotationPodPrefixes], a[AnnotationCapabilities],
			l[LabelWANGateway], a[AnnotationWANPublicKey], a[AnnotationPublicEndpoint])
	}
	f.Add("edge-a1", "idc", "idc-a", "192.168.10.11", "02:00:c0:a8:0a:0b", "4789", "10.244.1.0/24", "", "tcx,bgp-peers=1", "false", "MDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk8=", "198.51.100.5:51871")
	f.Add("cloud-1", "cloud", "vpc", "10.0.1.11,fd00::1", "02:00:0A:00:01:0B", "65535", "", "10.0.64.16/28, 10.0.64.1/32", "eni,eni-quota=4", "true", " EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8= ", "[::ffff:203.0.113.11]:51871")
	f.Add("x", "mars", "-bad", "::ffff:1.2.3.4%eth0", "zz", "-1", "1.2.3.4/33", ",,", "eni=1,bgp-peers=x", "yes", "bm90IGEga2V5", "0.0.0.0:0")
	f.Add("y", "ens", "p", "10.0.0.1", "", "", "", "", "", "", "EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8", "[2001:db8::1]:0")
	f.Fuzz(func(t *testing.T, name, loc, pool, under, mac, port, cidr, prefixes, caps, gateway, wanKey, endpoint string) {
		labels := map[string]string{LabelLocation: loc, LabelPool: pool, LabelWANGateway: gateway}
		ann := map[string]string{AnnotationUnderlayIPs: under, AnnotationVTEPMAC: mac, AnnotationVTEPPort: port,
			AnnotationPodCIDR: cidr, AnnotationPodPrefixes: prefixes, AnnotationCapabilities: caps,
			AnnotationWANPublicKey: wanKey, AnnotationPublicEndpoint: endpoint}
		nf, err := ParseNode(name, labels, ann)
		if err != nil {
			if !strings.Contains(err.Error(), "node ") {
				t.Fatalf("error does not name the node: %v", err)
			}
			return
		}
		// Whatever parses must survive Format → ParseNode unchanged.
		l2, a2 := Format(nf)
		again, err := ParseNode(name, l2, a2)
		if err != nil {
			t.Fatalf("reparse of formatted facts failed: %v", err)
		}
		if !reflect.DeepEqual(nf, again) {
			t.Fatalf("round trip:\n%+v\n%+v", nf, again)
		}
		if _, err := Decide(Facts{Nodes: []NodeFacts{nf}}, DefaultConfig()); err != nil {
			t.Fatalf("parsed facts rejected by Decide: %v", err)
		}
	})
}

func TestDeciderEdges(t *testing.T) {
	d, err := NewDecider(testCfg())
	if err != nil {
		t.Fatal(err)
	}
	p0, _ := d.SetNodes(labFacts(t).Nodes)
	t.Run("unknown nodes are ignored", func(t *testing.T) {
		if p, changed := d.Observe(native("ghost", "edge-a1", false, t0)); changed || p != p0 {
			t.Fatal("probe from an unknown node changed the plan")
		}
	})
	t.Run("native failures towards a dead node do not count against the link", func(t *testing.T) {
		if _, changed := d.SetLiveness("edge-a1", false, t0); !changed {
			t.Fatal("liveness change not applied")
		}
		for i := range 5 {
			d.Observe(native("cloud-1", "edge-a1", false, t0.Add(time.Duration(i)*time.Millisecond)))
		}
		p := d.Plan()
		if pp := mustPath(t, p, "cloud-1", "edge-a2"); pp.Path != PathNative {
			t.Fatalf("link tripped by a dead peer: %+v", pp)
		}
		if pp := mustPath(t, p, "cloud-1", "edge-a1"); pp.Path != PathNative {
			t.Fatalf("dead peer (its agent may be restarting): %+v, want its native path kept", pp)
		}
		p2, changed := d.SetLiveness("edge-a1", true, t0.Add(time.Second))
		if !changed || mustPath(t, p2, "cloud-1", "edge-a1").Path != PathNative {
			t.Fatal("revived peer not native")
		}
		if got := Diff(p0, p2); len(got) != 0 {
			t.Fatalf("dead then alive again leaves programming as it was, got %v", changeSet(got))
		}
	})
	t.Run("identical facts are no change", func(t *testing.T) {
		before := d.Plan()
		if p, err := d.UpsertNode(labFacts(t).Nodes[0]); err != nil || p != before {
			t.Fatalf("identical upsert made a new plan (%v)", err)
		}
	})
	t.Run("pool change rebuilds", func(t *testing.T) {
		f := labFacts(t).Nodes[3] // edge-a2 moves to site-b's pool (internet)
		f.Pool, f.Interconnect = "site-b", InterconnectInternet
		p, err := d.UpsertNode(f)
		if err != nil {
			t.Fatal(err)
		}
		if pp := mustPath(t, p, "cloud-1", "edge-a2"); pp.Path != PathVXLAN {
			t.Fatalf("%+v", pp)
		}
		if got := p.Pools(); !reflect.DeepEqual(got, []string{"idc-a", "site-b", "vpc"}) {
			t.Fatalf("pools %v", got)
		}
	})
	t.Run("bad facts are refused whole", func(t *testing.T) {
		before := d.Plan()
		if _, err := d.UpsertNode(NodeFacts{Name: "x", Pool: "Bad_Pool"}); err == nil || !strings.Contains(err.Error(), "not a DNS label") {
			t.Fatalf("err %v", err)
		}
		if _, err := d.SetNodes([]NodeFacts{{Name: "a"}, {Name: ""}}); err == nil {
			t.Fatal("empty name accepted")
		}
		if d.Plan() != before {
			t.Fatal("a refused update changed the plan")
		}
	})
}

func TestView(t *testing.T) {
	p, _ := Decide(labFacts(t), testCfg())
	v := p.View("cloud-1", 100)
	if len(v.Nodes) != 5 || len(v.Pairs) != 20 || len(v.Peers) != 4 || v.Counts[PathNative] != 12 || v.Now != "2026-11-22T12:00:00.000Z" {
		t.Fatalf("%+v", v)
	}
	if v := p.View("", 10); v.Pairs != nil || v.Peers != nil {
		t.Fatal("pairs listed above the limit")
	}
}

// A single node whose pod path breaks (e.g. its pod CIDR is withdrawn) while
// its pool's link is fine: rotating probes alternate between it and a
// healthy peer, so the pool link never sees K failures in a row, yet the
// node's own pairs must leave native, and only those.
func TestPerNodeException(t *testing.T) {
	d, _ := NewDecider(testCfg())
	p0, _ := d.SetNodes(labFacts(t).Nodes)
	var all []ProbeResult
	for i := range 6 {
		to, ok := "edge-a1", false
		if i%2 == 1 {
			to, ok = "edge-a2", true
		}
		r := native("cloud-1", to, ok, t0.Add(time.Duration(i)*100*time.Millisecond))
		all = append(all, r)
		d.Observe(r)
	}
	p1 := d.Plan()
	for _, pair := range [][2]string{{"cloud-1", "edge-a1"}, {"edge-a1", "cloud-2"}, {"edge-a2", "edge-a1"}} {
		pp := mustPath(t, p1, pair[0], pair[1])
		if pp.Path != PathVXLAN || !strings.Contains(pp.Reason, "native pod path to edge-a1 probe failed 3× since 12:00:00.000 while pools") {
			t.Fatalf("%v: %+v", pair, pp)
		}
		if pi, _ := p1.Pair(pair[0], pair[1]); !pi.NativeFailed {
			t.Fatalf("%v not drawn as failed native", pair)
		}
	}
	for _, pair := range [][2]string{{"cloud-1", "edge-a2"}, {"cloud-2", "cloud-1"}} {
		if pp := mustPath(t, p1, pair[0], pair[1]); pp.Path != PathNative {
			t.Fatalf("healthy %v moved: %+v", pair, pp)
		}
	}
	want := []string{
		"cloud-1>edge-a1:native>vxlan", "cloud-2>edge-a1:native>vxlan",
		"edge-a1>cloud-1:native>vxlan", "edge-a1>cloud-2:native>vxlan", "edge-a1>edge-a2:native>vxlan",
		"edge-a2>edge-a1:native>vxlan",
	}
	if got := changeSet(Diff(p0, p1)); !reflect.DeepEqual(got, want) {
		t.Fatalf("diff\n got %v\nwant %v", got, want)
	}
	counts := map[Path]int{}
	for _, pp := range allPairs(p1) {
		counts[pp.Path]++
	}
	if !reflect.DeepEqual(counts, p1.Counts()) {
		t.Fatalf("Counts %v vs pairs %v", p1.Counts(), counts)
	}
	f := labFacts(t)
	f.Probes, f.Now = all, t0.Add(time.Second)
	if q, _ := Decide(f, testCfg()); !reflect.DeepEqual(allPairs(q), allPairs(p1)) {
		t.Fatal("one-shot and incremental disagree")
	}
	// Recovery: healthy again, held down, then native.
	d.Observe(native("cloud-1", "edge-a1", true, t0.Add(2*time.Second)))
	if p, _ := d.Advance(t0.Add(11 * time.Second)); mustPath(t, p, "cloud-1", "edge-a1").Path != PathVXLAN ||
		!strings.Contains(mustPath(t, p, "cloud-1", "edge-a1").Reason, "held down until 12:00:12.000") {
		t.Fatalf("released before hold-down: %+v", mustPath(t, p, "cloud-1", "edge-a1"))
	}
	p3, changed := d.Advance(t0.Add(12 * time.Second))
	if !changed || mustPath(t, p3, "cloud-1", "edge-a1").Path != PathNative {
		t.Fatalf("not back after hold-down: %+v", mustPath(t, p3, "cloud-1", "edge-a1"))
	}
	if got := Diff(p0, p3); len(got) != 0 {
		t.Fatalf("fully healed plan differs from the start: %v", changeSet(got))
	}
}

func FuzzParseFactsDoc(f *testing.F) {
	for _, name := range []string{"testdata/lab.yaml", "testdata/lab-failover.yaml", "testdata/lab-wan.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"nodes":[{"name":"a","vtepMAC":"zz"}]}`))
	f.Add([]byte("probes: [{kind: nope}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		facts, err := ParseFactsDoc(b)
		if err != nil {
			return
		}
		// Whatever parses is either decided or refused with an error; never a panic.
		if p, err := Decide(facts, DefaultConfig()); err == nil {
			_ = p.Counts()
			p.Pairs(func(PairPath) bool { return true })
		}
	})
}

func TestRoleForNeedsNoPodAddresses(t *testing.T) {
	cloud := NodeFacts{Name: "c1", Location: LocationCloud, Pool: "vpc", UnderlayIPs: []netip.Addr{netip.MustParseAddr("10.0.1.11")},
		Capabilities: Capabilities{ENI: true}}
	if dp, why := RoleFor(cloud); dp != DatapathENIMultiIP {
		t.Fatalf("cloud node with ENIs and no pods yet: %s (%s), want %s", dp, why, DatapathENIMultiIP)
	}
	noPool := cloud
	noPool.Pool = ""
	if dp, _ := RoleFor(noPool); dp != DatapathVXLANOverlay {
		t.Fatalf("node without a pool: %s, want %s", dp, DatapathVXLANOverlay)
	}
}
