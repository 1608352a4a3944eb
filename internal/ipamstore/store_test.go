package ipamstore

import (
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
)

func open(t *testing.T) (*Store, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ipam.db")
	s, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, p
}

func TestClaimIsIdempotentAndSurvivesReopen(t *testing.T) {
	s, path := open(t)
	cidr := netip.MustParsePrefix("10.244.1.0/30")
	a, err := s.Claim("p", PrefixAddrs(cidr), Record{ContainerID: "c1", IfName: "eth0"})
	if err != nil || a.Addr != netip.MustParseAddr("10.244.1.1") {
		t.Fatalf("first claim: %v %v", a, err)
	}
	again, err := s.Claim("p", PrefixAddrs(cidr), Record{ContainerID: "c1", IfName: "eth0"})
	if err != nil || again.Addr != a.Addr {
		t.Fatalf("retried claim got %v %v, want %v", again.Addr, err, a.Addr)
	}
	b, err := s.Claim("p", PrefixAddrs(cidr), Record{ContainerID: "c2", IfName: "eth0"})
	if err != nil || b.Addr != netip.MustParseAddr("10.244.1.2") {
		t.Fatalf("second claim: %v %v", b, err)
	}
	if _, err := s.Claim("p", PrefixAddrs(cidr), Record{ContainerID: "c3", IfName: "eth0"}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("want ErrExhausted in a /30 with 2 hosts, got %v", err)
	}
	s.Close()
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	recs, _ := s2.List("p")
	if len(recs) != 2 {
		t.Fatalf("after reopen: %d records, want 2", len(recs))
	}
	if _, found, _ := s2.Release("p", "c1", "eth0"); !found {
		t.Fatal("release c1: not found")
	}
	if _, found, err := s2.Release("p", "c1", "eth0"); found || err != nil {
		t.Fatalf("second release: found=%v err=%v, want a no-op", found, err)
	}
	c, _ := s2.Claim("p", PrefixAddrs(cidr), Record{ContainerID: "c4", IfName: "eth0"})
	if c.Addr != a.Addr {
		t.Fatalf("freed address not reused: got %v", c.Addr)
	}
}

func TestPrefixAddrs(t *testing.T) {
	got := slices.Collect(PrefixAddrs(netip.MustParsePrefix("10.0.0.0/29"), netip.MustParseAddr("10.0.0.2")))
	want := []string{"10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}
	if len(got) != len(want) {
		t.Fatalf("got %v want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Fatalf("got %v want %v", got, want)
		}
	}
}
