package edgenode

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/strata-net/strata/bgp"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/role"
)

func TestResolveNodePodCIDR(t *testing.T) {
	s := CIDRSource{NodePodCIDR: "10.244.7.0/24"}
	if p, err := s.Resolve(); err != nil || p.String() != "10.244.7.0/24" {
		t.Fatalf("got %v, %v", p, err)
	}
	for _, bad := range []string{"10.244.7.1/24", "nonsense"} {
		if _, err := (CIDRSource{NodePodCIDR: bad}).Resolve(); err == nil || !strings.Contains(err.Error(), "podCIDR") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if _, err := (CIDRSource{}).Resolve(); err == nil || !strings.Contains(err.Error(), "NodePool") {
		t.Errorf("no pod CIDR: %v, want the fix named", err)
	}
}

type fakeSpeaker struct {
	mu   sync.Mutex
	adv  map[netip.Prefix]bool
	fail error
}

func (f *fakeSpeaker) Advertise(_ context.Context, ads ...bgp.Advertisement) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	for _, a := range ads {
		f.adv[a.Prefix] = true
	}
	return nil
}

func (f *fakeSpeaker) Withdraw(_ context.Context, ps ...netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range ps {
		delete(f.adv, p)
	}
	return nil
}

func TestRoleAdvertisesAllocatesAndSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ipam.db")
	store, err := ipamstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	sp := &fakeSpeaker{adv: map[netip.Prefix]bool{}}
	cfg := Config{CIDR: CIDRSource{NodePodCIDR: "10.244.1.0/29"}, Store: store, Speaker: sp}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cidr := netip.MustParsePrefix("10.244.1.0/29")
	if !sp.adv[cidr] || !slices.Equal(r.OwnedPrefixes(), []netip.Prefix{cidr}) {
		t.Fatalf("advertised %v, owned %v", sp.adv, r.OwnedPrefixes())
	}
	a1, err := r.Allocate(ctx, role.PodRequest{ContainerID: "c1", IfName: "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	if !cidr.Contains(a1.Addr.Addr()) || a1.Datapath != role.DatapathVethRouted {
		t.Fatalf("allocation %+v", a1)
	}
	// Drain withdraws; undrain advertises again.
	if err := r.SetDraining(ctx, true); err != nil || sp.adv[cidr] || r.Advertised() {
		t.Fatalf("drain: %v, advertised %v", err, sp.adv)
	}
	if err := r.SetDraining(ctx, false); err != nil || !sp.adv[cidr] {
		t.Fatalf("undrain: %v, advertised %v", err, sp.adv)
	}
	// Restart: a new role over the same store never hands a1 out again.
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	store.Close()
	store, err = ipamstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg.Store = store
	r2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	again, err := r2.Allocate(ctx, role.PodRequest{ContainerID: "c1", IfName: "eth0"})
	if err != nil || again.Addr != a1.Addr {
		t.Fatalf("same request after restart: %+v, %v; want %s", again, err, a1.Addr)
	}
	a2, err := r2.Allocate(ctx, role.PodRequest{ContainerID: "c2", IfName: "eth0"})
	if err != nil || a2.Addr == a1.Addr {
		t.Fatalf("second pod got %+v, %v (first has %s)", a2, err, a1.Addr)
	}
}

func TestRoleReportsAdvertiseFailure(t *testing.T) {
	store, err := ipamstore.Open(filepath.Join(t.TempDir(), "ipam.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sp := &fakeSpeaker{adv: map[netip.Prefix]bool{}, fail: errors.New("speaker down")}
	r, err := New(Config{CIDR: CIDRSource{NodePodCIDR: "10.244.1.0/24"}, Store: store, Speaker: sp})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "10.244.1.0/24") {
		t.Fatalf("start error %v should name the CIDR", err)
	}
	if _, err := New(Config{CIDR: CIDRSource{NodePodCIDR: "10.244.1.0/24"}, Store: store}); err == nil {
		t.Fatal("nil speaker accepted")
	}
}
