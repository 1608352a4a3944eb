package probe

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/strata-net/strata/topology"
)

// podPrefixes returns n distinct prefixes of the given length in 10.0.64.0/18
// (the lab's pod vSwitch), as a cloud node's pods (/32) or ENI prefixes (/28).
func podPrefixes(n, bits int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	step := uint32(1) << (32 - bits)
	for i := range n {
		v := uint32(10)<<24 | uint32(64)<<8 + uint32(i)*step
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), bits)
	}
	return out
}

func cloudFacts(name string, probe string, pfx []netip.Prefix) topology.NodeFacts {
	return topology.NodeFacts{Name: name, Location: topology.LocationCloud, Pool: "vpc", ENIMode: topology.ENIModeMultiIP,
		UnderlayIPs: []netip.Addr{netip.MustParseAddr("10.0.1.11"), netip.MustParseAddr("10.0.1.21")},
		VTEPMAC:     "02:aa:bb:cc:dd:ee", VTEPPort: 4789, ProbeIP: netip.MustParseAddr(probe), PodPrefixes: pfx,
		Capabilities: topology.Capabilities{ENI: true, ENIQuota: 8, TCX: true}}
}

// The summary stays far under memberlist's metadata limit whatever the
// number of pods; before, 16 /32 pods were enough to exceed it.
func TestGossipMetaIsBoundedWhateverThePods(t *testing.T) {
	for _, n := range []int{0, 1, 16, 100, MaxPodPrefixes} {
		b, _, err := encodeMeta(cloudFacts("cloud-1", "10.0.64.250", podPrefixes(n, 32)))
		if err != nil {
			t.Fatalf("%d pods: %v", n, err)
		}
		if len(b) > 400 {
			t.Errorf("%d pods: summary is %d bytes, want ≤ 400 (limit %d)", n, len(b), memberlist.MetaMaxSize)
		}
		f, ref, inline, err := decodeMeta("cloud-1", b)
		if err != nil || inline != nil || ref != digestPrefixes(podPrefixes(n, 32)) || f.PodPrefixes != nil || f.VTEPPort != 4789 {
			t.Fatalf("%d pods: decode %+v %+v %v %v", n, f, ref, inline, err)
		}
	}
}

// collector records the complete facts each prober reports, per peer.
type collector struct {
	mu    sync.Mutex
	facts map[string]map[string]topology.NodeFacts // observer → peer → facts
}

func (c *collector) onFacts(observer string) func(topology.NodeFacts) {
	return func(f topology.NodeFacts) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.facts[observer] == nil {
			c.facts[observer] = map[string]topology.NodeFacts{}
		}
		c.facts[observer][f.Name] = f
	}
}

// waitPrefixes waits until observer holds peer's facts with exactly want.
func (c *collector) waitPrefixes(t *testing.T, observer, peer string, want []netip.Prefix) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.mu.Lock()
		f, ok := c.facts[observer][peer]
		c.mu.Unlock()
		if ok && slices.Equal(sortedPrefixes(f.PodPrefixes), sortedPrefixes(want)) {
			if f.ProbeIP.IsValid() && f.Pool == "" {
				t.Fatalf("%s got %s's prefixes without its summary", observer, peer)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %s's facts %v with %d prefixes after 20 s, want %d", observer, peer, ok, len(f.PodPrefixes), len(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Cloud nodes with 100 pods on each pool kind (single-IP: 100 /32s; /28
// ENI prefixes: 7 prefixes holding 100 pods plus a warm one), and one at the
// quota bound, start gossip and their whole prefix sets reach every peer
// with no API server anywhere: over encrypted gossip, pulled from the
// owner. A change of the set converges too. Before, Start failed at about 16 /32s ("over gossip's
// 512-byte metadata limit").
func TestGossipPullsWholePrefixSets(t *testing.T) {
	kr, err := ParseKeyring([]byte(key(4, 32)))
	if err != nil {
		t.Fatal(err)
	}
	port := freeUDPPort(t)
	c := &collector{facts: map[string]map[string]topology.NodeFacts{}}
	start := func(f topology.NodeFacts, ip string) *Prober {
		p, err := Start(Config{Facts: f, BindAddr: ip, GossipPort: -1, Keyring: kr, ProbePort: port, OnFacts: c.onFacts(f.Name)})
		if err != nil {
			t.Fatalf("start %s with %d pod prefixes: %v", f.Name, len(f.PodPrefixes), err)
		}
		t.Cleanup(func() { _ = p.Close() })
		return p
	}
	single := cloudFacts("cloud-1", "127.0.1.1", podPrefixes(100, 32))
	prefixed := cloudFacts("cloud-2", "127.0.1.2", podPrefixes(8, 28))
	quota := cloudFacts("cloud-3", "127.0.1.3", podPrefixes(MaxPodPrefixes, 32))
	edge := topology.NodeFacts{Name: "edge-a1", Location: topology.LocationIDC, Pool: "idc-a", ProbeIP: netip.MustParseAddr("127.0.1.4"),
		PodCIDR: netip.MustParsePrefix("10.244.1.0/24")}
	a := start(single, "127.0.1.1")
	b := start(prefixed, "127.0.1.2")
	q := start(quota, "127.0.1.3")
	e := start(edge, "127.0.1.4")
	for _, p := range []*Prober{b, q, e} {
		if _, err := p.Join([]string{a.GossipAddr()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, obs := range []string{"cloud-1", "cloud-2", "cloud-3", "edge-a1"} {
		for _, f := range []topology.NodeFacts{single, prefixed, quota, edge} {
			if f.Name != obs {
				c.waitPrefixes(t, obs, f.Name, f.PodPrefixes)
			}
		}
	}

	// A new pod: every peer gets the new set.
	single.PodPrefixes = append(single.PodPrefixes, netip.MustParsePrefix("10.0.70.1/32"))
	if err := a.SetFacts(single); err != nil {
		t.Fatal(err)
	}
	c.waitPrefixes(t, "edge-a1", "cloud-1", single.PodPrefixes)
	c.waitPrefixes(t, "cloud-2", "cloud-1", single.PodPrefixes)

	// WAN facts too big for the metadata (dual stack, IPv6 endpoint) come
	// with the set: a new key reaches every peer.
	single.UnderlayIPs = append(single.UnderlayIPs, netip.MustParseAddr("2408:4005:3a1:1200:abcd:ef01:2345:6789"))
	single.WANIP, single.Capabilities.BGPPeers, single.Capabilities.IPVlan = netip.MustParseAddr("203.0.113.11"), 2, true
	single.WANGateway, single.WANPublicKey = true, "EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8="
	single.PublicEndpoint = netip.MustParseAddrPort("[2408:4005:3a1:1200:abcd:ef01:2345:6789]:51871")
	if _, spill, _ := encodeMeta(single); spill == nil {
		t.Fatal("test facts fit the metadata: they test nothing")
	}
	if err := a.SetFacts(single); err != nil {
		t.Fatal(err)
	}
	for _, obs := range []string{"edge-a1", "cloud-2"} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			c.mu.Lock()
			f := c.facts[obs]["cloud-1"]
			c.mu.Unlock()
			if f.WANPublicKey == single.WANPublicKey && f.PublicEndpoint == single.PublicEndpoint && f.WANGateway && len(f.PodPrefixes) == len(single.PodPrefixes) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never got cloud-1's WAN facts: %+v", obs, f)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	for _, p := range []*Prober{a, b, q, e} {
		if st := p.Stats(); st.RejectedFacts != 0 {
			t.Errorf("a healthy group rejected %d facts", st.RejectedFacts)
		}
	}
}

// testProber is a prober without sockets, for feeding gossip by hand.
func testProber(t *testing.T, onFacts func(topology.NodeFacts)) *Prober {
	t.Helper()
	cfg := Config{Facts: topology.NodeFacts{Name: "self", Pool: "p"}, OnFacts: onFacts}
	cfg.setDefaults()
	return newProber(cfg)
}

// One peer's bad gossip (unreadable or misnamed summary, a prefix set that
// does not hash to its summary, garbage messages) is counted and ignored;
// the other peers' facts are delivered, and the bad peer's last good facts
// stay.
func TestBadGossipPeerStopsNoOther(t *testing.T) {
	got := map[string]topology.NodeFacts{}
	p := testProber(t, func(f topology.NodeFacts) { got[f.Name] = f })
	good := cloudFacts("good", "10.0.64.250", podPrefixes(100, 32))
	goodMeta, _, err := encodeMeta(good)
	if err != nil {
		t.Fatal(err)
	}
	bad := cloudFacts("bad", "10.0.64.251", podPrefixes(3, 32))
	badMeta, _, _ := encodeMeta(bad)
	p.member("bad", badMeta, true)
	p.handleMsg(encodePrefixSet("bad", bad.PodPrefixes, nil))
	if len(got["bad"].PodPrefixes) != 3 {
		t.Fatalf("bad's first good facts not delivered: %+v", got["bad"])
	}
	for _, junk := range [][]byte{nil, []byte("{"), []byte(`{"name":"other"}`), []byte(`{"name":"bad","podPrefixSet":{"n":-1}}`),
		[]byte(`{"name":"bad","podPrefixSet":{"n":2,"sha256":"zz"}}`), []byte(`{"name":"bad","podPrefixes":["10.0.0.1/8"]}`)} {
		p.member("bad", junk, true)
	}
	for _, junk := range [][]byte{nil, {'X'}, {msgPrefixSet}, []byte("P{\"node\":\"good\",\"prefixes\":[\"10.9.9.9/32\"]}"),
		[]byte(`Q{"from":""}`), append([]byte{msgPrefixSet}, make([]byte, maxPrefixMsgBytes)...)} {
		p.handleMsg(junk)
	}
	p.member("good", goodMeta, true)
	if _, ok := got["good"]; ok {
		t.Fatal("good's facts delivered before its prefix set arrived")
	}
	// A set for good that is not the one its summary names: refused.
	p.handleMsg(encodePrefixSet("good", podPrefixes(99, 32), nil))
	if _, ok := got["good"]; ok {
		t.Fatal("a prefix set not matching the summary's digest was taken")
	}
	p.handleMsg(encodePrefixSet("good", good.PodPrefixes, nil))
	if f := got["good"]; len(f.PodPrefixes) != 100 || f.VTEPPort != 4789 {
		t.Fatalf("good's facts after bad gossip from another peer: %+v", f)
	}
	if f := got["bad"]; len(f.PodPrefixes) != 3 {
		t.Fatalf("bad's last good facts replaced by junk: %+v", f)
	}
	if st := p.Stats(); st.RejectedFacts < 12 {
		t.Fatalf("rejected %d, want every junk summary and message counted (12)", st.RejectedFacts)
	}
}

func FuzzDecodeMeta(f *testing.F) {
	for _, n := range []int{0, 3, 100} {
		b, _, _ := encodeMeta(cloudFacts("n1", "10.0.64.250", podPrefixes(n, 32)))
		f.Add("n1", b)
	}
	legacy, _ := json.Marshal(cloudFacts("n1", "10.0.64.250", podPrefixes(5, 32)))
	f.Add("n1", legacy)
	f.Add("n1", []byte(`{"name":"n1","podPrefixSet":{"n":1,"sha256":"00112233445566778899aabbccddeeff"}}`))
	f.Add("n1", []byte(`{"name":"n1","podPrefixSet":{"n":0,"sha256":"00112233445566778899aabbccddeeff","wan":true}}`))
	f.Add("x", []byte(`{"name":"x","podPrefixes":["10.0.0.0/8","10.0.0.0/8"]}`))
	f.Fuzz(func(t *testing.T, member string, b []byte) {
		facts, ref, inline, err := decodeMeta(member, b)
		if err == nil {
			if facts.Name != member || facts.PodPrefixes != nil || ref.check(member) != nil {
				t.Fatalf("accepted %q as %+v %+v", b, facts, ref)
			}
			if inline != nil && (checkPrefixes(member, inline) != nil || digestPrefixes(inline) != ref) {
				t.Fatalf("inline prefixes %v do not match %+v", inline, ref)
			}
		}
		// Whatever this member published, another's facts still arrive.
		var got []string
		p := testProber(t, func(f topology.NodeFacts) { got = append(got, f.Name) })
		p.member("m-"+member, b, true)
		other, _, _ := encodeMeta(cloudFacts("other", "10.0.64.251", nil))
		p.member("other", other, true)
		if !slices.Contains(got, "other") {
			t.Fatalf("facts of %q stopped another peer's", b)
		}
	})
}

func FuzzDecodeMsg(f *testing.F) {
	f.Add(encodeRequest("n1"))
	f.Add(encodePrefixSet("n1", podPrefixes(10, 32), nil))
	f.Add(encodePrefixSet("n1", nil, nil))
	f.Add(encodePrefixSet("n1", podPrefixes(2, 32), &wanFacts{Gateway: true, Key: "EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8=", Endpoint: netip.MustParseAddrPort("[2001:db8::1]:51871")}))
	f.Add([]byte(`P{"node":"n1","prefixes":["::/0","10.0.0.1/32","10.0.0.1/32"]}`))
	f.Add([]byte("Q"))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, set, ref, err := decodeMsg(b)
		switch {
		case err != nil:
			if req != nil || set != nil {
				t.Fatal("error with a result")
			}
		case req != nil:
			if req.From == "" || set != nil {
				t.Fatalf("request %+v", req)
			}
		case set != nil:
			if set.Node == "" || checkPrefixes(set.Node, set.Prefixes) != nil || ref != digestSet(set.Prefixes, set.WAN) {
				t.Fatalf("prefix set %+v", set)
			}
		default:
			t.Fatal("no error and no message")
		}
		p := testProber(t, nil)
		p.handleMsg(b) // never panics, never blocks
	})
}

func TestDigestIgnoresOrder(t *testing.T) {
	a := podPrefixes(50, 32)
	b := slices.Clone(a)
	slices.Reverse(b)
	if digestPrefixes(a) != digestPrefixes(b) {
		t.Fatal("digest depends on order")
	}
	if digestPrefixes(a) == digestPrefixes(a[1:]) {
		t.Fatal("digest ignores a missing prefix")
	}
	if err := checkPrefixes("n", []netip.Prefix{a[0], a[0]}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("duplicate: %v", err)
	}
}

// A node whose WAN facts do not fit memberlist's metadata (a long name,
// dual-stack addresses, an IPv6 public endpoint: 568 bytes) still gossips:
// its WAN facts travel with its prefix set, covered by the summary's
// digest, and reach OnFacts complete. Before, the prober refused to start
// ("over gossip's 512-byte metadata limit").
func TestGossipWANFactsThatDoNotFitTravelWithTheSet(t *testing.T) {
	big := func(name string, pods int) topology.NodeFacts {
		f := cloudFacts(name, "10.0.64.250", podPrefixes(pods, 32))
		f.UnderlayIPs = append(f.UnderlayIPs, netip.MustParseAddr("2408:4005:3a1:1200:abcd:ef01:2345:6789"))
		f.WANIP = netip.MustParseAddr("203.0.113.11")
		f.Capabilities.BGPPeers, f.Capabilities.IPVlan = 2, true
		f.WANGateway, f.WANPublicKey = true, "EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8="
		f.PublicEndpoint = netip.MustParseAddrPort("[2408:4005:3a1:1200:abcd:ef01:2345:6789]:51871")
		return f
	}
	for _, pods := range []int{0, 100} {
		name := "cn-hangzhou.i-bp1a2b3c4d5e6f7g8h9i0j"
		f := big(name, pods)
		meta, spill, err := encodeMeta(f)
		if err != nil || spill == nil || len(meta) > memberlist.MetaMaxSize {
			t.Fatalf("%d pods: %d bytes, spill %+v, %v", pods, len(meta), spill, err)
		}
		got := map[string]topology.NodeFacts{}
		p := testProber(t, func(f topology.NodeFacts) { got[f.Name] = f })
		p.member(name, meta, true)
		if _, ok := got[name]; ok {
			t.Fatalf("%d pods: delivered without its WAN facts", pods)
		}
		// The set without the WAN facts (what an older member sends), or
		// with other WAN facts: not the one the summary names.
		p.handleMsg(encodePrefixSet(name, f.PodPrefixes, nil))
		forged := *spill
		forged.Key = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
		p.handleMsg(encodePrefixSet(name, f.PodPrefixes, &forged))
		if _, ok := got[name]; ok {
			t.Fatalf("%d pods: a set not matching the summary was taken", pods)
		}
		p.handleMsg(encodePrefixSet(name, f.PodPrefixes, spill))
		g, ok := got[name]
		if !ok || g.WANPublicKey != f.WANPublicKey || g.PublicEndpoint != f.PublicEndpoint || !g.WANGateway || len(g.PodPrefixes) != pods || g.WANIP != f.WANIP {
			t.Fatalf("%d pods: delivered %+v", pods, g)
		}
	}
	// WAN facts that fit stay in the summary: no pull needed without pods.
	small := cloudFacts("cloud-1", "10.0.64.250", nil)
	small.WANPublicKey, small.PublicEndpoint = "EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8=", netip.MustParseAddrPort("203.0.113.11:51871")
	meta, spill, err := encodeMeta(small)
	if err != nil || spill != nil {
		t.Fatalf("%v %+v", err, spill)
	}
	got := map[string]topology.NodeFacts{}
	p := testProber(t, func(f topology.NodeFacts) { got[f.Name] = f })
	p.member("cloud-1", meta, true)
	if g := got["cloud-1"]; g.WANPublicKey != small.WANPublicKey || g.PublicEndpoint != small.PublicEndpoint {
		t.Fatalf("%+v", g)
	}
	// Without WAN facts the digest is the one older members compute.
	if digestSet(podPrefixes(3, 32), nil) != digestPrefixes(podPrefixes(3, 32)) || digestSet(nil, nil) != (prefixSetRef{}) {
		t.Fatal("digest of a set without WAN facts changed")
	}
	// A summary claiming both is refused.
	both := []byte(`{"name":"x","wanPublicKey":"EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8=","podPrefixSet":{"n":0,"sha256":"00112233445566778899aabbccddeeff","wan":true}}`)
	if _, _, _, err := decodeMeta("x", both); err == nil {
		t.Fatal("WAN facts in the summary and the set accepted")
	}
}
