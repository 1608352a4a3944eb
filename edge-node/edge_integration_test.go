//go:build integration

package edgenode_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/strata-net/strata/bgp"
	edgenode "github.com/strata-net/strata/edge-node"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/harness/netlab"
	"github.com/strata-net/strata/tests/harness/routerd"
)

// TestIntegrationEdgeRoleAdvertisesToBIRD: the edge role claims its CIDR from
// the edge pool, BIRD (the IDC vSwitch) learns it into RIB and kernel, and a
// drain withdraws it.
func TestIntegrationEdgeRoleAdvertisesToBIRD(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	lab := netlab.New(t, netlab.Spec{
		Hosts: []netlab.Host{{Name: "edge"}, {Name: "vsw"}},
		Links: []netlab.Link{{A: netlab.Port{Host: "edge", Ifname: "eth0", Addr: "192.168.10.11/24"},
			B: netlab.Port{Host: "vsw", Ifname: "eth0", Addr: "192.168.10.1/24"}}},
	})
	bird := routerd.StartBIRD(t, lab.NS("vsw"), routerd.BIRDConfig{RouterID: "192.168.10.1", ASN: 65010, Kernel: true,
		Neighbors: []routerd.Neighbor{{Name: "edge", Address: "192.168.10.11", Port: 1790, ASN: 65011}}})
	sp, err := bgp.New(bgp.Config{RouterID: netip.MustParseAddr("192.168.10.11"), ASN: 65011, ListenPort: 1790, NetNS: lab.NS("edge").Path}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Stop(ctx, bgp.StopCease) })
	if err := sp.AddPeer(ctx, bgp.PeerConfig{Address: netip.MustParseAddr("192.168.10.1"), ASN: 65010, Passive: true}); err != nil {
		t.Fatal(err)
	}
	store, err := ipamstore.Open(filepath.Join(t.TempDir(), "ipam.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r, err := edgenode.New(edgenode.Config{
		CIDR:  edgenode.CIDRSource{NodePodCIDR: "10.244.11.0/24"},
		Store: store, Speaker: sp,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cidr := "10.244.11.0/24"
	bird.WaitEstablished(t, "edge", 60*time.Second)
	has := func(want bool) func() error {
		return func() error {
			ok, out, err := bird.HasRoute(cidr)
			if err != nil {
				return err
			}
			kr, err := routerd.KernelRoute(bird.NS, netip.MustParsePrefix(cidr))
			if err != nil {
				return err
			}
			if ok != want || (kr != nil) != want {
				return fmt.Errorf("BIRD RIB has %s = %v, kernel = %v, want %v\n%s", cidr, ok, kr != nil, want, out)
			}
			return nil
		}
	}
	routerd.Eventually(t, 60*time.Second, "BIRD learns the node's CIDR", has(true))
	a, err := r.Allocate(ctx, role.PodRequest{ContainerID: "c1", IfName: "eth0"})
	if err != nil || !netip.MustParsePrefix(cidr).Contains(a.Addr.Addr()) {
		t.Fatalf("allocation %+v, %v", a, err)
	}
	if err := r.SetDraining(ctx, true); err != nil {
		t.Fatal(err)
	}
	routerd.Eventually(t, 60*time.Second, "drain withdraws the CIDR", has(false))
	if err := r.SetDraining(ctx, false); err != nil {
		t.Fatal(err)
	}
	routerd.Eventually(t, 60*time.Second, "undrain advertises again", has(true))
}
