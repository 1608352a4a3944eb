//go:build privileged

package bgp_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/strata-net/strata/bgp"
	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/harness/netlab"
)

func hops(rs []bgp.Route, p netip.Prefix) []netip.Addr {
	for _, r := range rs {
		if r.Prefix == p {
			h := slices.Clone(r.NextHops)
			slices.SortFunc(h, netip.Addr.Compare)
			return h
		}
	}
	return nil
}

// TestPrivilegedInstaller: ECMP install, in-place next-hop replacement,
// delete, and Sync removing leftovers, in a throw-away namespace.
func TestPrivilegedInstaller(t *testing.T) {
	testutil.RequireRoot(t)
	lab := netlab.New(t, netlab.Spec{
		Hosts: []netlab.Host{{Name: "inode"}, {Name: "ia"}, {Name: "ib"}},
		Links: []netlab.Link{
			{A: netlab.Port{Host: "inode", Ifname: "a", Addr: "10.0.1.2/30"}, B: netlab.Port{Host: "ia", Ifname: "n", Addr: "10.0.1.1/30"}},
			{A: netlab.Port{Host: "inode", Ifname: "b", Addr: "10.0.2.2/30"}, B: netlab.Port{Host: "ib", Ifname: "n", Addr: "10.0.2.1/30"}},
		},
	})
	in, err := bgp.NewInstaller(lab.NS("inode").Path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	a, b := netip.MustParseAddr("10.0.1.1"), netip.MustParseAddr("10.0.2.1")
	p1, p2 := netip.MustParsePrefix("10.97.0.0/24"), netip.MustParsePrefix("10.98.0.0/24")

	if err := in.Apply([]bgp.Route{{Prefix: p1, NextHops: []netip.Addr{a, b}}, {Prefix: p2, NextHops: []netip.Addr{a}}}); err != nil {
		t.Fatal(err)
	}
	got, err := in.Installed()
	if err != nil {
		t.Fatal(err)
	}
	if h := hops(got, p1); !slices.Equal(h, []netip.Addr{a, b}) {
		t.Fatalf("ECMP route via %v, want %v (all: %v)", h, []netip.Addr{a, b}, got)
	}
	// Next-hop change replaces in place: one route, new gateway.
	if err := in.Apply([]bgp.Route{{Prefix: p2, NextHops: []netip.Addr{b}}}); err != nil {
		t.Fatal(err)
	}
	got, _ = in.Installed()
	if h := hops(got, p2); !slices.Equal(h, []netip.Addr{b}) || len(got) != 2 {
		t.Fatalf("after replace: %v", got)
	}
	// Withdraw deletes; deleting twice is fine.
	for i := 0; i < 2; i++ {
		if err := in.Apply([]bgp.Route{{Prefix: p2}}); err != nil {
			t.Fatalf("delete %d: %v", i, err)
		}
	}
	// An unreachable next hop is an error that names the prefix.
	if err := in.Apply([]bgp.Route{{Prefix: p2, NextHops: []netip.Addr{netip.MustParseAddr("192.0.2.9")}}}); err == nil {
		t.Fatal("unreachable next hop accepted")
	}
	// Sync keeps only what is wanted.
	if err := in.Sync([]bgp.Route{{Prefix: p2, NextHops: []netip.Addr{a}}}); err != nil {
		t.Fatal(err)
	}
	got, _ = in.Installed()
	if len(got) != 1 || got[0].Prefix != p2 {
		t.Fatalf("after sync: %v", got)
	}
	if err := in.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, _ = in.Installed(); len(got) != 0 {
		t.Fatalf("after flush: %v", got)
	}
}
