package podipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"

	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/role"
)

func openStore(t *testing.T, path string) *ipamstore.Store {
	t.Helper()
	s, err := ipamstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func req(i int) role.PodRequest {
	return role.PodRequest{ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0", PodNamespace: "default", PodName: fmt.Sprintf("p%d", i)}
}

func TestNewRejectsBadInput(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer s.Close()
	for _, tc := range []struct {
		cidr string
		opts Options
	}{
		{"10.244.1.5/24", Options{}},
		{"10.244.1.0/31", Options{}},
		{"fd00::/64", Options{}},
		{"10.244.1.0/24", Options{MTU: 100}},
	} {
		if _, err := New(netip.MustParsePrefix(tc.cidr), s, tc.opts); err == nil {
			t.Errorf("New(%s, %+v): want an error", tc.cidr, tc.opts)
		}
	}
	if _, err := New(netip.Prefix{}, s, Options{}); err == nil {
		t.Error("New(zero prefix): want an error")
	}
	if _, err := New(netip.MustParsePrefix("10.0.0.0/24"), nil, Options{}); err == nil {
		t.Error("New(nil store): want an error")
	}
}

func TestAllocationShape(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer s.Close()
	m, err := New(netip.MustParsePrefix("10.244.1.0/24"), s, Options{MTU: 1450, Routes: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := m.Allocate(context.Background(), req(1))
	if err != nil {
		t.Fatal(err)
	}
	if a.Addr != netip.MustParsePrefix("10.244.1.2/32") {
		t.Errorf("first pod address %v, want 10.244.1.2/32 (.1 is the node's)", a.Addr)
	}
	if m.NodeAddr() != netip.MustParseAddr("10.244.1.1") {
		t.Errorf("node address %v", m.NodeAddr())
	}
	if a.Gateway != DefaultGateway || a.MTU != 1450 || a.Datapath != role.DatapathVethRouted || len(a.Routes) != 1 {
		t.Errorf("allocation %+v", a)
	}
	if a.PodName != "p1" || a.ContainerID != "c1" || a.IfName != "eth0" {
		t.Errorf("identity not kept: %+v", a)
	}
	again, err := m.Allocate(context.Background(), req(1))
	if err != nil || again.Addr != a.Addr {
		t.Fatalf("repeat allocate: %v %v", again.Addr, err)
	}
	if m.Free() != m.Capacity()-1 || m.Capacity() != 253 {
		t.Errorf("free %d capacity %d, want 252/253", m.Free(), m.Capacity())
	}
	if got := m.OwnedPrefixes(); len(got) != 1 || got[0] != m.CIDR() {
		t.Errorf("owned %v", got)
	}
}

func TestExhaustionAndReady(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer s.Close()
	m, err := New(netip.MustParsePrefix("10.0.0.0/29"), s, Options{}) // 6 hosts, 1 reserved
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 5 {
		if _, err := m.Allocate(ctx, req(i)); err != nil {
			t.Fatalf("allocate %d: %v", i, err)
		}
	}
	if err := m.Ready(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Ready on a full CIDR: %v, want ErrExhausted", err)
	}
	if _, err := m.Allocate(ctx, req(99)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("allocate on full CIDR: %v, want ErrExhausted", err)
	}
	if err := m.Release(ctx, "c0", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(ctx, "c0", "eth0"); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if err := m.Ready(); err != nil {
		t.Fatalf("Ready after a release: %v", err)
	}
	if _, err := m.Allocate(ctx, req(99)); err != nil {
		t.Fatalf("allocate after release: %v", err)
	}
}

func TestConcurrentAllocateIsUnique(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer s.Close()
	m, err := New(netip.MustParsePrefix("10.0.0.0/24"), s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	addrs := make([]netip.Prefix, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// Each pod asks twice (a runtime retrying ADD): same address.
			a, err := m.Allocate(context.Background(), req(i))
			b, err2 := m.Allocate(context.Background(), req(i))
			if err != nil || err2 != nil || a.Addr != b.Addr {
				t.Errorf("pod %d: %v %v %v %v", i, a.Addr, b.Addr, err, err2)
			}
			addrs[i] = a.Addr
		})
	}
	wg.Wait()
	seen := map[netip.Prefix]int{}
	for i, a := range addrs {
		if j, dup := seen[a]; dup {
			t.Fatalf("pods %d and %d share %v", i, j, a)
		}
		seen[a] = i
		if a.Addr() == m.NodeAddr() {
			t.Fatalf("pod %d got the node's reserved address", i)
		}
	}
	if m.Free() != m.Capacity()-n {
		t.Fatalf("free %d, want %d", m.Free(), m.Capacity()-n)
	}
}

func TestRestartFromSameStoreNeverDoubleAllocates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	cidr := netip.MustParsePrefix("10.0.0.0/28") // 14 hosts, 13 for pods
	s := openStore(t, path)
	m, err := New(cidr, s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	before := map[netip.Prefix]string{}
	for i := range 7 {
		a, err := m.Allocate(ctx, req(i))
		if err != nil {
			t.Fatal(err)
		}
		before[a.Addr] = a.ContainerID
	}
	s.Close()

	s2 := openStore(t, path)
	defer s2.Close()
	m2, err := New(cidr, s2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m2.Free() != 13-7 {
		t.Fatalf("free after restart %d, want 6", m2.Free())
	}
	live, err := m2.Allocations(ctx)
	if err != nil || len(live) != 7 {
		t.Fatalf("allocations after restart: %d %v", len(live), err)
	}
	for i := 7; i < 13; i++ {
		a, err := m2.Allocate(ctx, req(i))
		if err != nil {
			t.Fatal(err)
		}
		if owner, taken := before[a.Addr]; taken {
			t.Fatalf("restart handed %v to c%d while %s holds it", a.Addr, i, owner)
		}
	}
	// Re-asking for a pre-restart pod returns its old address.
	a, err := m2.Allocate(ctx, req(3))
	if err != nil || before[a.Addr] != "c3" {
		t.Fatalf("pre-restart pod c3 got %v (%v)", a.Addr, err)
	}
	if _, err := m2.Allocate(ctx, req(50)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("want exhaustion after restart, got %v", err)
	}
}

func TestCancelledContext(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer s.Close()
	m, _ := New(netip.MustParsePrefix("10.0.0.0/24"), s, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Allocate(ctx, req(1)); err == nil {
		t.Fatal("allocate with a cancelled context succeeded")
	}
	if _, err := m.Allocate(context.Background(), role.PodRequest{ContainerID: "x"}); err == nil {
		t.Fatal("allocate without an interface name succeeded")
	}
}
