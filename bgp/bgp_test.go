package bgp

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/internal/rtproto"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func TestRIBSelectsBestAndECMP(t *testing.T) {
	r := newRIB()
	p := pfx("10.97.0.0/24")
	a, b, c := addr("10.0.1.1"), addr("10.0.2.1"), addr("10.0.3.1")
	steps := []struct {
		name     string
		peer     netip.Addr
		cand     candidate
		withdraw bool
		drop     bool
		want     []netip.Addr
		changed  bool
	}{
		{"first path", a, candidate{NextHop: a, LocalPref: 100, ASPathLen: 1}, false, false, []netip.Addr{a}, true},
		{"equal path joins ECMP", b, candidate{NextHop: b, LocalPref: 100, ASPathLen: 1}, false, false, []netip.Addr{a, b}, true},
		{"longer AS path loses", c, candidate{NextHop: c, LocalPref: 100, ASPathLen: 3}, false, false, []netip.Addr{a, b}, false},
		{"higher local-pref wins alone", c, candidate{NextHop: c, LocalPref: 200, ASPathLen: 3}, false, false, []netip.Addr{c}, true},
		{"winner withdrawn: ECMP back", c, candidate{}, true, false, []netip.Addr{a, b}, true},
		{"next hop change replaces", a, candidate{NextHop: addr("10.0.1.9"), LocalPref: 100, ASPathLen: 1}, false, false, []netip.Addr{addr("10.0.1.9"), b}, true},
		{"session loss drops the peer", b, candidate{}, false, true, []netip.Addr{addr("10.0.1.9")}, true},
		{"last withdraw empties", a, candidate{}, true, false, nil, true},
		{"withdraw unknown is a no-op", a, candidate{}, true, false, nil, false},
	}
	for _, s := range steps {
		var rt Route
		var changed bool
		if s.drop {
			rs := r.dropPeer(s.peer)
			changed = len(rs) == 1
			if changed {
				rt = rs[0]
			}
		} else {
			rt, changed = r.update(s.peer, p, s.cand, s.withdraw)
		}
		if changed != s.changed {
			t.Fatalf("%s: changed = %v, want %v", s.name, changed, s.changed)
		}
		if changed && !slices.Equal(rt.NextHops, s.want) {
			t.Fatalf("%s: next hops %v, want %v", s.name, rt.NextHops, s.want)
		}
	}
	if got := r.snapshot(); len(got) != 0 {
		t.Fatalf("snapshot after all withdrawn: %v", got)
	}
}

func TestConfigValidation(t *testing.T) {
	good := PeerConfig{Address: addr("10.0.0.1"), ASN: 65010, HoldTime: 9 * time.Second}
	if err := good.Validate(); err != nil {
		t.Fatalf("good peer: %v", err)
	}
	for name, p := range map[string]PeerConfig{
		"ASN":           {Address: addr("10.0.0.1"), ASN: 0},
		"HoldTime":      {Address: addr("10.0.0.1"), ASN: 1, HoldTime: 2 * time.Second},
		"address":       {ASN: 1},
		"KeepaliveTime": {Address: addr("10.0.0.1"), ASN: 1, HoldTime: 3 * time.Second, KeepaliveTime: 3 * time.Second},
		"password":      {Address: addr("10.0.0.1"), ASN: 1, Password: strings.Repeat("x", 81)},
		// negative timers, and a keepalive past the default hold time
		"KeepaliveTime ":     {Address: addr("10.0.0.1"), ASN: 1, KeepaliveTime: -time.Second},
		"KeepaliveTime 2m0s": {Address: addr("10.0.0.1"), ASN: 1, KeepaliveTime: 2 * time.Minute},
		"ConnectRetry":       {Address: addr("10.0.0.1"), ASN: 1, ConnectRetry: -time.Second},
		"RestartTime":        {Address: addr("10.0.0.1"), ASN: 1, GracefulRestart: true, RestartTime: -time.Second},
		"HoldTime -3s":       {Address: addr("10.0.0.1"), ASN: 1, HoldTime: -3 * time.Second},
	} {
		err := p.Validate()
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v does not name the field", name, err)
		}
	}
	if err := (Config{RouterID: addr("::1"), ASN: 1}).Validate(); err == nil || !strings.Contains(err.Error(), "RouterID") {
		t.Errorf("IPv6 router id accepted: %v", err)
	}
}

func TestRouteMessageEncoding(t *testing.T) {
	b, err := appendRouteMsg(nil, Route{Prefix: pfx("10.1.2.0/24"), NextHops: []netip.Addr{addr("10.0.0.1"), addr("10.0.0.2")}}, 254, 7)
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.NativeEndian.Uint32(b); int(got) != len(b) {
		t.Fatalf("nlmsg length %d, buffer %d", got, len(b))
	}
	if typ := binary.NativeEndian.Uint16(b[4:]); typ != unix.RTM_NEWROUTE {
		t.Fatalf("type %d", typ)
	}
	if flags := binary.NativeEndian.Uint16(b[6:]); flags&unix.NLM_F_REPLACE == 0 || flags&unix.NLM_F_CREATE == 0 {
		t.Fatalf("flags %#x lack create|replace", flags)
	}
	rtm := b[16:28]
	if rtm[0] != unix.AF_INET || rtm[1] != 24 || rtm[4] != 254 || rtm[5] != byte(rtproto.BGP) {
		t.Fatalf("rtmsg %v", rtm)
	}
	if !containsAttr(b[28:], unix.RTA_MULTIPATH) {
		t.Fatal("two next hops without RTA_MULTIPATH")
	}
	del, err := appendRouteMsg(nil, Route{Prefix: pfx("2001:db8::/64")}, 254, 8)
	if err != nil {
		t.Fatal(err)
	}
	if typ := binary.NativeEndian.Uint16(del[4:]); typ != unix.RTM_DELROUTE || del[16] != unix.AF_INET6 {
		t.Fatalf("delete encoded as type %d family %d", typ, del[16])
	}
	if _, err := appendRouteMsg(nil, Route{Prefix: pfx("10.0.0.0/8"), NextHops: []netip.Addr{addr("fe80::1")}}, 254, 9); err == nil {
		t.Fatal("mixed families accepted")
	}
}

func containsAttr(b []byte, typ uint16) bool {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		if binary.NativeEndian.Uint16(b[2:]) == typ {
			return true
		}
		if l < 4 {
			return false
		}
		l = (l + 3) &^ 3
		if l > len(b) {
			return false
		}
		b = b[l:]
	}
	return false
}

const netstatSample = `TcpExt: SyncookiesSent TCPMD5NotFound TCPMD5Unexpected TCPMD5Failure
TcpExt: 0 3 4 5
IpExt: InNoRoutes
IpExt: 0
`

func TestParseNetstat(t *testing.T) {
	c := parseNetstat(bufio.NewScanner(strings.NewReader(netstatSample)))
	if c != (md5Counters{Failure: 5, NotFound: 3, Unexpected: 4}) {
		t.Fatalf("got %+v", c)
	}
	base := md5Counters{}
	if r := downReason(PeerConfig{Password: "x"}, StateActive, base, c); !strings.Contains(r, "MD5") {
		t.Fatalf("reason %q", r)
	}
	if r := downReason(PeerConfig{Passive: true}, StateActive, c, c); !strings.Contains(r, "passive") {
		t.Fatalf("reason %q", r)
	}
}

func FuzzParseNetstat(f *testing.F) {
	f.Add(netstatSample)
	f.Add("TcpExt: TCPMD5Failure\nTcpExt: x\n")
	f.Add("TcpExt:\n")
	f.Fuzz(func(t *testing.T, s string) {
		_ = parseNetstat(bufio.NewScanner(strings.NewReader(s)))
	})
}

func TestBuildPath(t *testing.T) {
	for _, a := range []Advertisement{
		{Prefix: pfx("10.244.1.0/24")},
		{Prefix: pfx("10.244.1.0/24"), NextHop: addr("10.0.0.1"), Communities: []uint32{65011<<16 | 1}, LocalPref: 200},
		{Prefix: pfx("2001:db8:1::/64")},
	} {
		if _, err := buildPath(a, false); err != nil {
			t.Errorf("%+v: %v", a, err)
		}
	}
	if _, err := buildPath(Advertisement{Prefix: pfx("10.0.0.0/8"), NextHop: addr("2001:db8::1")}, false); err == nil {
		t.Error("IPv4 prefix with IPv6 next hop accepted")
	}
}

// TestPathEncoderMatchesPlainAPI checks that the binary paths gobgp decodes
// from wire bytes carry the same NLRI and attributes as the plain API form,
// also when IPv4 prefixes share one encoded attribute list.
func TestPathEncoderMatchesPlainAPI(t *testing.T) {
	enc := newPathEncoder()
	for _, a := range []Advertisement{
		{Prefix: pfx("10.244.1.0/24")},
		{Prefix: pfx("10.244.2.0/24")},
		{Prefix: pfx("10.244.3.7/30")},
		{Prefix: pfx("0.0.0.0/0")},
		{Prefix: pfx("10.244.1.0/24"), NextHop: addr("10.0.0.1"), Communities: []uint32{65011<<16 | 1}, LocalPref: 200},
		{Prefix: pfx("10.244.9.0/25"), NextHop: addr("10.0.0.1"), Communities: []uint32{65011<<16 | 1}, LocalPref: 200},
		{Prefix: pfx("2001:db8:1::/64")},
		{Prefix: pfx("2001:db8:2::/48"), NextHop: addr("2001:db8::1")},
	} {
		for _, withdraw := range []bool{false, true} {
			plain, err := buildPath(a, withdraw)
			if err != nil {
				t.Fatalf("%+v: %v", a, err)
			}
			bin, err := enc.path(a, withdraw)
			if err != nil {
				t.Fatalf("%+v: %v", a, err)
			}
			if bin.IsWithdraw != withdraw || bin.Family.Afi != plain.Family.Afi || bin.Family.Safi != plain.Family.Safi {
				t.Errorf("%+v: family %v withdraw %v, want %v %v", a, bin.Family, bin.IsWithdraw, plain.Family, withdraw)
			}
			wantNLRI, err := apiutil.GetNativeNlri(plain)
			if err != nil {
				t.Fatal(err)
			}
			gotNLRI, err := apiutil.GetNativeNlri(bin)
			if err != nil {
				t.Fatalf("%+v: decode binary nlri: %v", a, err)
			}
			if gotNLRI.String() != wantNLRI.String() {
				t.Errorf("%+v: nlri %s, want %s", a, gotNLRI, wantNLRI)
			}
			wantAttrs, err := apiutil.GetNativePathAttributes(plain)
			if err != nil {
				t.Fatal(err)
			}
			gotAttrs, err := apiutil.GetNativePathAttributes(bin)
			if err != nil {
				t.Fatalf("%+v: decode binary attributes: %v", a, err)
			}
			if fmt.Sprint(gotAttrs) != fmt.Sprint(wantAttrs) {
				t.Errorf("%+v: attributes %v, want %v", a, gotAttrs, wantAttrs)
			}
		}
	}
	if _, err := enc.path(Advertisement{Prefix: pfx("10.0.0.0/8"), NextHop: addr("2001:db8::1")}, false); err == nil {
		t.Error("IPv4 prefix with IPv6 next hop accepted")
	}
	if _, err := enc.path(Advertisement{}, false); err == nil {
		t.Error("empty prefix accepted")
	}
}

// startListenerless starts a speaker that neither listens nor has peers
// (no root, no sockets in any namespace), stopped when the test ends.
func startListenerless(t *testing.T) *Speaker {
	t.Helper()
	sp, err := New(Config{RouterID: addr("10.0.0.1"), ASN: 65011}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Stop(context.Background(), StopCease) })
	return sp
}

// TestSpeakerWithoutPeers runs the embedded server with no listener (no
// root, no sockets in any namespace) through the facade's verbs.
func TestSpeakerWithoutPeers(t *testing.T) {
	ctx := context.Background()
	sp := startListenerless(t)
	if err := sp.Advertise(ctx, Advertisement{Prefix: pfx("10.244.1.0/24")}, Advertisement{Prefix: pfx("2001:db8:1::/64")}); err != nil {
		t.Fatal(err)
	}
	if err := sp.Withdraw(ctx, pfx("10.244.1.0/24")); err != nil {
		t.Fatal(err)
	}
	p := PeerConfig{Address: addr("192.0.2.1"), ASN: 65010, Passive: true}
	if err := sp.AddPeer(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := sp.AddPeer(ctx, p); err == nil {
		t.Fatal("duplicate peer accepted")
	}
	p.HoldTime = 9 * time.Second
	if err := sp.UpdatePeer(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := sp.AddPeer(ctx, PeerConfig{Address: addr("192.0.2.2"), ASN: 0}); err == nil || !strings.Contains(err.Error(), "ASN") {
		t.Fatalf("ASN 0 accepted: %v", err)
	}
	peers, err := sp.Peers(ctx)
	if err != nil || len(peers) != 1 || peers[0].State == StateEstablished {
		t.Fatalf("peers %+v, %v", peers, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(sp))
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 8 {
		t.Fatalf("metrics: %d families, %v", len(mfs), err)
	}
	if peers[0].MaxPrefixes != DefaultMaxPrefixes || peers[0].OverLimit {
		t.Fatalf("peer without a limit: %+v, want limit %d and not over it", peers[0], DefaultMaxPrefixes)
	}
	if err := sp.RemovePeer(ctx, p.Address); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkPathEncoder100k(b *testing.B) {
	ads := make([]Advertisement, 100000)
	for i := range ads {
		v := uint32(172)<<24 | uint32(16)<<16 + uint32(i)*4
		ads[i] = Advertisement{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 30)}
	}
	b.ReportAllocs()
	for b.Loop() {
		enc := newPathEncoder()
		for _, a := range ads {
			if _, err := enc.path(a, false); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestAdvertiseBadPrefixChangesNothing: one bad prefix in a batch fails the
// call before any path of it reaches gobgp's RIB.
func TestAdvertiseBadPrefixChangesNothing(t *testing.T) {
	ctx := context.Background()
	sp := startListenerless(t)
	ads := make([]Advertisement, 3*streamChunk)
	for i := range ads {
		ads[i] = Advertisement{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), 32)}
	}
	ads[len(ads)-1] = Advertisement{Prefix: pfx("10.97.0.0/24"), NextHop: addr("2001:db8::1")}
	err := sp.Advertise(ctx, ads...)
	if err == nil || !strings.Contains(err.Error(), "must be IPv4") {
		t.Fatalf("bad next hop: %v", err)
	}
	countPaths := func() int {
		var n int
		if err := sp.srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: familyIPv4}, func(*api.Destination) { n++ }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := countPaths(); n != 0 || len(sp.adv) != 0 {
		t.Fatalf("after a failed Advertise: %d paths in gobgp's RIB, %d recorded as advertised", n, len(sp.adv))
	}
	good := ads[:len(ads)-1]
	if err := sp.Advertise(ctx, good...); err != nil {
		t.Fatal(err)
	}
	if n := countPaths(); n != len(good) {
		t.Fatalf("%d paths in gobgp's RIB, want %d", n, len(good))
	}
}
