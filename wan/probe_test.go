package wan

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestEndpointAnswerRoundTripAndNoAmplification(t *testing.T) {
	for _, s := range []string{"198.51.100.7:40001", "[2001:db8::1]:51871"} {
		ep := netip.MustParseAddrPort(s)
		b := make([]byte, endpointLen)
		encodeAddrPort(b[probeHeaderLen:], ep)
		got, ok := decodeAddrPort(b[probeHeaderLen:])
		if !ok || got != ep {
			t.Fatalf("%s: decoded %v %v", s, got, ok)
		}
	}
	for _, bad := range [][]byte{nil, make([]byte, 19), append([]byte{7}, make([]byte, 18)...)} {
		if _, ok := decodeAddrPort(bad); ok {
			t.Fatalf("%x decoded", bad)
		}
	}
	// The question is as long as the answer: the reflector never answers
	// with more bytes than it was sent.
	if endpointLen < probeHeaderLen+19 {
		t.Fatalf("endpoint question of %d bytes is shorter than its answer", endpointLen)
	}
}

func FuzzDecodeAddrPort(f *testing.F) {
	b := make([]byte, 19)
	encodeAddrPort(b, netip.MustParseAddrPort("203.0.113.9:51871"))
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		ep, ok := decodeAddrPort(b)
		if !ok {
			return
		}
		if !ep.IsValid() || ep.Port() == 0 {
			t.Fatalf("accepted %v", ep)
		}
		again := make([]byte, 19)
		encodeAddrPort(again, ep)
		if ep2, ok := decodeAddrPort(again); !ok || ep2 != ep {
			t.Fatalf("round trip %v → %v", ep, ep2)
		}
	})
}

func TestProberTakeRejectsForgeries(t *testing.T) {
	p := &Prober{pending: map[uint64]pendingProbe{}, perPeer: map[string]*PeerProbeCounts{}}
	gw := netip.MustParseAddrPort("10.0.64.10:7948")
	p.pending[7] = pendingProbe{peer: "gw1", addr: gw, nonce: 42, sent: time.Now(), kind: kindProbe}
	msg := func(seq, nonce uint64) []byte {
		b := make([]byte, probeHeaderLen)
		copy(b, probeMagic)
		b[4] = kindProbeReply
		for i := range 8 {
			b[5+i] = byte(seq >> (56 - 8*i))
			b[13+i] = byte(nonce >> (56 - 8*i))
		}
		return b
	}
	if _, ok := p.take(msg(7, 41), gw, kindProbe); ok {
		t.Fatal("wrong nonce accepted")
	}
	if _, ok := p.take(msg(7, 42), netip.MustParseAddrPort("10.0.64.11:7948"), kindProbe); ok {
		t.Fatal("reply from another address accepted")
	}
	if _, ok := p.take(msg(7, 42), gw, kindAsk); ok {
		t.Fatal("reply of another kind accepted")
	}
	if p.Rejected() != 3 {
		t.Fatalf("rejected %d, want 3", p.Rejected())
	}
	if peer, ok := p.take(msg(7, 42), gw, kindProbe); !ok || peer != "gw1" {
		t.Fatal("the real reply was not taken after forgeries")
	}
}

func TestProberNextProbesPriorityEveryPeriodAndRotatesTheRest(t *testing.T) {
	p := &Prober{cfg: ProberConfig{MaxRate: 40, Period: 100 * time.Millisecond}} // budget 4 a period
	a := netip.MustParseAddr("10.0.0.1")
	p.targets = []ProbeTarget{{Peer: "gw1", Addr: a, Priority: true}, {Peer: "gw2", Addr: a, Priority: true},
		{Peer: "x1", Addr: a}, {Peer: "x2", Addr: a}, {Peer: "x3", Addr: a}}
	seen := map[string]int{}
	for range 3 {
		var names []string
		for _, tg := range p.next() {
			names = append(names, tg.Peer)
			seen[tg.Peer]++
		}
		if len(names) != 4 || !slices.Contains(names, "gw1") || !slices.Contains(names, "gw2") {
			t.Fatalf("period targets %v: want both gateways and two others", names)
		}
	}
	if seen["x1"] != 2 || seen["x2"] != 2 || seen["x3"] != 2 {
		t.Fatalf("rotation %v: want the others probed evenly", seen)
	}
}
