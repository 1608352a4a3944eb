package bgp

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/vishvananda/netlink"
)

// The lab's edge-a1: LAN 192.168.10.11/24, pod CIDR 10.244.1.0/24 with its
// gateway on a bridge, loopback.
var edgeA1 = Protected{
	Connected: []netip.Prefix{pfx("127.0.0.0/8"), pfx("127.0.0.1/32"), pfx("192.168.10.0/24"), pfx("192.168.10.11/32"),
		pfx("10.244.1.0/24"), pfx("10.244.1.1/32"), pfx("172.17.0.0/16"), pfx("172.17.0.1/32")},
	LocalAddrs: []netip.Addr{addr("127.0.0.1"), addr("192.168.10.11"), addr("10.244.1.1"), addr("172.17.0.1")},
	PodCIDRs:   []netip.Prefix{pfx("10.244.1.0/24")},
	Underlay:   []netip.Prefix{pfx("192.168.10.0/24")},
}

func TestJudgeImport(t *testing.T) {
	gw := addr("192.168.10.1")
	for _, c := range []struct {
		name   string
		prefix string
		nh     netip.Addr
		allow  []string
		want   RejectReason
		detail string
	}{
		{"another node's pod CIDR", "10.244.2.0/24", gw, nil, "", ""},
		{"the VPC over the leased line", "10.0.0.0/16", gw, nil, "", ""},
		{"the cluster's pod aggregate covers our own CIDR", "10.244.0.0/16", gw, nil, "", ""},
		{"an aggregate covering docker0", "172.16.0.0/12", gw, nil, "", ""},
		{"the node's LAN from the IDC BIRD", "192.168.10.0/24", gw, nil, RejectUnderlay, "underlay subnet 192.168.10.0/24"},
		{"a more-specific of the LAN", "192.168.10.128/25", gw, nil, RejectUnderlay, ""},
		{"a cover of the LAN", "192.168.0.0/16", gw, nil, RejectUnderlay, ""},
		{"the node's own address", "192.168.10.11/32", gw, nil, RejectUnderlay, ""},
		{"default route", "0.0.0.0/0", gw, nil, RejectDefaultRoute, "default route"},
		{"own pod CIDR", "10.244.1.0/24", gw, nil, RejectPodCIDR, "own pod CIDR 10.244.1.0/24"},
		{"more-specific of own pod CIDR", "10.244.1.128/25", gw, nil, RejectPodCIDR, ""},
		{"one pod of ours", "10.244.1.7/32", gw, nil, RejectPodCIDR, ""},
		{"docker0 replaced", "172.17.0.0/16", gw, nil, RejectConnected, "replaces the connected subnet 172.17.0.0/16"},
		{"docker0 split", "172.17.5.0/24", gw, nil, RejectConnected, "splits the connected subnet 172.17.0.0/16"},
		{"loopback", "127.0.0.0/8", gw, nil, RejectConnected, ""},
		{"no next hop", "10.99.0.0/24", netip.Addr{}, nil, RejectNextHop, "no next hop"},
		{"unspecified next hop", "10.99.0.0/24", addr("0.0.0.0"), nil, RejectNextHop, ""},
		{"next hop is this node", "10.99.0.0/24", addr("192.168.10.11"), nil, RejectNextHop, "own address"},
		{"next hop of the other family", "10.99.0.0/24", addr("fd00::1"), nil, RejectNextHop, "address family"},
		{"multicast next hop", "10.99.0.0/24", addr("224.0.0.5"), nil, RejectNextHop, "multicast"},
		{"allow opens the default", "0.0.0.0/0", gw, []string{"0.0.0.0/0"}, "", ""},
		{"allow 0/0 opens only the default", "10.244.1.0/25", gw, []string{"0.0.0.0/0"}, RejectPodCIDR, ""},
		{"allow 0/0 does not open the LAN", "192.168.10.0/24", gw, []string{"0.0.0.0/0"}, RejectUnderlay, ""},
		{"allow opens the LAN", "192.168.10.0/24", gw, []string{"192.168.10.0/24"}, "", ""},
		{"allow opens more-specifics", "192.168.10.64/26", gw, []string{"192.168.10.0/24"}, "", ""},
		{"allow does not open a cover", "192.168.0.0/16", gw, []string{"192.168.10.0/24"}, RejectUnderlay, ""},
		{"an IPv6 allow does not open IPv4", "0.0.0.0/0", gw, []string{"::/0"}, RejectDefaultRoute, ""},
		{"allow never opens a bad next hop", "10.99.0.0/24", addr("192.168.10.11"), []string{"0.0.0.0/0"}, RejectNextHop, ""},
		{"IPv6 default", "::/0", addr("fd00::1"), nil, RejectDefaultRoute, ""},
		{"IPv6 route", "fd10::/64", addr("fd00::1"), nil, "", ""},
		{"unmasked prefix is judged masked", "192.168.10.77/24", gw, nil, RejectUnderlay, ""},
	} {
		var pol ImportPolicy
		for _, a := range c.allow {
			pol.Allow = append(pol.Allow, pfx(a))
		}
		v := JudgeImport(pfx(c.prefix), c.nh, pol, edgeA1)
		if v.Reason != c.want || !strings.Contains(v.Detail, c.detail) {
			t.Errorf("%s: %s via %s: got %q (%s), want %q containing %q", c.name, c.prefix, c.nh, v.Reason, v.Detail, c.want, c.detail)
		}
		if (v.Reason == "") != (v.Detail == "") {
			t.Errorf("%s: a rejection must say why, an acceptance nothing: %+v", c.name, v)
		}
	}
}

func TestImportPolicyValidate(t *testing.T) {
	if err := (ImportPolicy{Allow: []netip.Prefix{pfx("10.0.0.0/8")}}).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (ImportPolicy{Allow: []netip.Prefix{pfx("10.0.0.0/8"), netip.PrefixFrom(addr("10.1.2.3"), 8)}}).Validate(); err == nil || !strings.Contains(err.Error(), "allow[1]") {
		t.Fatalf("unmasked allow entry: %v", err)
	}
	if err := (ImportPolicy{Allow: []netip.Prefix{{}}}).Validate(); err == nil || !strings.Contains(err.Error(), "allow[0]") {
		t.Fatalf("zero allow entry: %v", err)
	}
}

func TestProtectedFromAddresses(t *testing.T) {
	mk := func(cidr string) netlink.Addr {
		ip, n, _ := net.ParseCIDR(cidr)
		n.IP = ip
		return netlink.Addr{IPNet: n}
	}
	pr := protectedFrom([]netlink.Addr{mk("192.168.10.11/24"), mk("127.0.0.1/8"), mk("10.244.1.1/24"), mk("192.168.10.11/24")},
		[]netip.Prefix{pfx("10.244.1.0/24")}, []netip.Addr{addr("192.168.10.11")})
	if !slices.Equal(pr.Underlay, []netip.Prefix{pfx("192.168.10.0/24")}) {
		t.Errorf("underlay %v", pr.Underlay)
	}
	want := []netip.Prefix{pfx("10.244.1.0/24"), pfx("10.244.1.1/32"), pfx("127.0.0.0/8"), pfx("127.0.0.1/32"), pfx("192.168.10.0/24"), pfx("192.168.10.11/32")}
	if !slices.Equal(pr.Connected, want) {
		t.Errorf("connected %v, want %v", pr.Connected, want)
	}
	if !slices.Contains(pr.LocalAddrs, addr("192.168.10.11")) || len(pr.LocalAddrs) != 3 {
		t.Errorf("local addresses %v", pr.LocalAddrs)
	}
}

// Rejected paths are held but never selected, counted per reason, and come
// back when the policy opens them.
func TestRIBHoldsRejectedPaths(t *testing.T) {
	r := newRIB()
	gw := addr("192.168.10.1")
	lan, other := pfx("192.168.10.0/24"), pfx("10.244.2.0/24")
	judge := func(allow ...netip.Prefix) func(netip.Addr, netip.Prefix, candidate) ImportVerdict {
		return func(_ netip.Addr, p netip.Prefix, c candidate) ImportVerdict {
			return JudgeImport(p, c.NextHop, ImportPolicy{Allow: allow}, edgeA1)
		}
	}
	for _, p := range []netip.Prefix{lan, other} {
		c := candidate{NextHop: gw, LocalPref: 100}
		v := judge()(gw, p, c)
		c.Reject, c.Detail = v.Reason, v.Detail
		r.update(gw, p, c, false)
	}
	if got := r.snapshot(); len(got) != 1 || got[0].Prefix != other {
		t.Fatalf("selected %v, want only %s", got, other)
	}
	pc := r.countFrom(gw)
	if pc.Accepted != 1 || pc.Rejected[RejectUnderlay] != 1 || !strings.HasPrefix(pc.Example[RejectUnderlay], "192.168.10.0/24 ") {
		t.Fatalf("counts %+v", pc)
	}
	changed := r.rejudge(judge(lan))
	if len(changed) != 1 || changed[0].Prefix != lan || len(changed[0].NextHops) != 1 {
		t.Fatalf("opening the LAN changed %v", changed)
	}
	changed = r.rejudge(judge())
	if len(changed) != 1 || changed[0].Prefix != lan || len(changed[0].NextHops) != 0 {
		t.Fatalf("closing the LAN again changed %v, want its withdrawal", changed)
	}
	if rs := r.dropPeer(gw); len(rs) != 1 {
		t.Fatalf("dropping the peer changed %v, want only the accepted route", rs)
	}
}

func TestPeerConfigEqual(t *testing.T) {
	a := PeerConfig{Address: addr("10.0.0.1"), ASN: 1, Import: ImportPolicy{Allow: []netip.Prefix{pfx("0.0.0.0/0")}}}
	b := a
	b.Import.Allow = []netip.Prefix{pfx("0.0.0.0/0")}
	if !a.Equal(b) {
		t.Fatal("equal configs differ")
	}
	b.Import.Allow = nil
	if a.Equal(b) || !a.sameSession(b) {
		t.Fatal("an import change must differ but keep the session")
	}
	b.MaxPrefixes = 50
	if a.sameSession(b) {
		t.Fatal("a prefix limit change must re-create the session")
	}
}

// Every session carries the prefix limit per family and the GR capability
// (helper only unless GracefulRestart is asked for).
func TestAPIPeerPrefixLimitAndGR(t *testing.T) {
	s := &Speaker{}
	for _, c := range []struct {
		p       PeerConfig
		limit   uint32
		helper  bool
		restart uint32
	}{
		{PeerConfig{Address: addr("10.0.0.1"), ASN: 1}, DefaultMaxPrefixes, true, 120},
		{PeerConfig{Address: addr("10.0.0.1"), ASN: 1, MaxPrefixes: 50, GracefulRestart: true, RestartTime: 30 * time.Second}, 50, false, 30},
	} {
		ap := s.apiPeer(c.p)
		if len(ap.AfiSafis) != 2 {
			t.Fatalf("%d families", len(ap.AfiSafis))
		}
		for _, af := range ap.AfiSafis {
			pl := af.PrefixLimits
			if pl == nil || pl.MaxPrefixes != c.limit || pl.Family.Afi != af.Config.Family.Afi {
				t.Errorf("%+v: prefix limit %+v, want %d for %v", c.p, pl, c.limit, af.Config.Family)
			}
		}
		gr := ap.GracefulRestart
		if gr == nil || !gr.Enabled || gr.HelperOnly != c.helper || gr.RestartTime != c.restart {
			t.Errorf("%+v: graceful restart %+v, want helper-only %v, restart %d", c.p, gr, c.helper, c.restart)
		}
	}
}

// A path that cannot be decoded is refused with the part that is wrong.
func TestDecodePathNamesTheField(t *testing.T) {
	for _, c := range []struct {
		p    *api.Path
		want string
	}{
		{&api.Path{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, NlriBinary: []byte{40, 10, 0}}, "NLRI"},
		{&api.Path{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, NlriBinary: []byte{24, 10, 1, 2},
			PattrsBinary: [][]byte{{0x40, 3, 4, 10}}}, "path attributes"},
	} {
		if _, _, err := decodePath(c.p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one naming %s", c.p, err, c.want)
		}
	}
}
