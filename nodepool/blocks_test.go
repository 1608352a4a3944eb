package nodepool

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestCarveCIDR(t *testing.T) {
	for _, c := range []struct {
		pool  string
		bits  int
		index int
		want  string
		err   string
	}{
		{"10.244.0.0/16", 24, 0, "10.244.0.0/24", ""},
		{"10.244.0.0/16", 24, 3, "10.244.3.0/24", ""},
		{"10.244.0.0/16", 26, 5, "10.244.1.64/26", ""},
		{"10.244.0.0/16", 24, 255, "10.244.255.0/24", ""},
		{"10.244.0.0/16", 24, 256, "", "out of range"},
		{"10.244.0.0/16", 24, -1, "", "out of range"},
		{"10.244.0.0/16", 8, 0, "", "between"},
		{"10.244.1.0/16", 24, 0, "", "host bits"},
		{"fd00:10::/56", 64, 2, "fd00:10:0:2::/64", ""},
	} {
		got, err := CarveCIDR(netip.MustParsePrefix(c.pool), c.bits, c.index)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s /%d #%d: error %v, want %q", c.pool, c.bits, c.index, err, c.err)
			}
			continue
		}
		if err != nil || got.String() != c.want {
			t.Errorf("%s /%d #%d = %v, %v; want %s", c.pool, c.bits, c.index, got, err, c.want)
		}
	}
}

func FuzzCarveCIDR(f *testing.F) {
	f.Add("10.244.0.0/16", 24, 3)
	f.Add("fd00::/48", 64, 9)
	f.Add("0.0.0.0/0", 32, 1<<31)
	f.Fuzz(func(t *testing.T, pool string, bits, index int) {
		p, err := netip.ParsePrefix(pool)
		if err != nil {
			return
		}
		got, err := CarveCIDR(p, bits, index)
		if err != nil {
			return
		}
		if got.Bits() != bits || !p.Contains(got.Addr()) || got != got.Masked() {
			t.Fatalf("CarveCIDR(%s, %d, %d) = %s outside the pool or misaligned", p, bits, index, got)
		}
	})
}

func TestBlocksNumberAcrossCIDRs(t *testing.T) {
	b, err := NewBlocks([]string{"10.244.0.0/23", "10.250.0.0/24"}, 25)
	if err != nil {
		t.Fatal(err)
	}
	if b.Total() != 6 {
		t.Fatalf("total %d, want 4+2", b.Total())
	}
	want := []string{"10.244.0.0/25", "10.244.0.128/25", "10.244.1.0/25", "10.244.1.128/25", "10.250.0.0/25", "10.250.0.128/25"}
	for i, w := range want {
		if got := b.Block(i).String(); got != w {
			t.Errorf("block %d = %s, want %s", i, got, w)
		}
	}
	for _, c := range []struct {
		p    string
		want string
	}{
		{"10.244.1.0/24", "[[2 4]]"},    // covers two blocks
		{"10.244.0.130/32", "[[1 2]]"},  // inside one block
		{"10.0.0.0/8", "[[0 4] [4 6]]"}, // covers both CIDRs
		{"10.244.0.0/16", "[[0 4]]"},    // broader than the first CIDR
		{"192.168.0.0/16", "[]"},        // elsewhere
		{"fd00::/8", "[]"},              // other family
		{"10.250.0.128/25", "[[5 6]]"},  // exactly a block
	} {
		if got := fmt.Sprint(b.Overlapping(netip.MustParsePrefix(c.p))); got != c.want {
			t.Errorf("Overlapping(%s) = %s, want %s", c.p, got, c.want)
		}
	}
}

func TestNewBlocksRefusesBadPools(t *testing.T) {
	for _, c := range []struct {
		cidrs []string
		bits  int
		want  string
	}{
		{nil, 24, "spec.podCIDRs is empty"},
		{[]string{"10.244.1.0/16"}, 24, "canonical"},
		{[]string{"10.244.0.0/16", "fd00::/48"}, 24, "mixes address families"},
		{[]string{"10.244.0.0/16"}, 12, "nodeMaskSize"},
		{[]string{"10.244.0.0/16", "10.244.128.0/17"}, 24, "overlap"},
	} {
		if _, err := NewBlocks(c.cidrs, c.bits); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewBlocks(%v, %d) error %v, want %q", c.cidrs, c.bits, err, c.want)
		}
	}
	b, err := NewBlocks([]string{"fd00::/32"}, 64)
	if err != nil || b.Total() != MaxBlocksPerCIDR {
		t.Fatalf("IPv6 /32 of /64s: total %v, %v; want the cap %d", b, err, MaxBlocksPerCIDR)
	}
	if got := b.Block(MaxBlocksPerCIDR - 1).String(); got != "fd00:0:f:ffff::/64" {
		t.Errorf("last block %s", got)
	}
}

// TestStartSpreadsNodes: 50 nodes joining one 256-block pool start their
// search at many different blocks, so they do not all race for block 0.
func TestStartSpreadsNodes(t *testing.T) {
	seen := map[int]int{}
	for i := range 50 {
		s := Start(fmt.Sprintf("edge-%02d", i), 256)
		if s < 0 || s >= 256 {
			t.Fatalf("start %d out of range", s)
		}
		seen[s]++
	}
	if len(seen) < 40 {
		t.Errorf("50 nodes start at only %d distinct blocks: %v", len(seen), seen)
	}
	if Start("edge-01", 256) != Start("edge-01", 256) {
		t.Error("start is not stable for a node")
	}
	if Start("x", 0) != 0 {
		t.Error("empty pool")
	}
}

func TestClaimName(t *testing.T) {
	for p, want := range map[string]string{
		"10.244.3.0/24": "idc-a-10-244-3-0-24",
		"fd00:10::/64":  "idc-a-fd00-10---64",
	} {
		if got := ClaimName("idc-a", netip.MustParsePrefix(p)); got != want {
			t.Errorf("ClaimName(%s) = %s, want %s", p, got, want)
		}
	}
}

func TestBlockSet(t *testing.T) {
	var s blockSet
	s.add(5, 7)
	s.add(0, 2)
	s.add(6, 9)
	s.add(3, 3) // empty
	for i, want := range []bool{true, true, false, false, false, true, true, true, true, false} {
		if s.has(i) != want {
			t.Errorf("has(%d) = %v", i, !want)
		}
	}
	if s.size() != 6 {
		t.Errorf("size %d, want 6", s.size())
	}
}

// FuzzOverlapping checks the block ranges against a brute-force walk of
// every block (small pools only).
func FuzzOverlapping(f *testing.F) {
	f.Add(uint32(0x0af40000), uint8(22), uint8(25), uint32(0x0af40180), uint8(26))
	f.Add(uint32(0x0af40000), uint8(24), uint8(28), uint32(0x0a000000), uint8(8))
	f.Fuzz(func(t *testing.T, base uint32, poolBits, bits uint8, probe uint32, probeBits uint8) {
		if poolBits > 32 || bits > 32 || probeBits > 32 || bits < poolBits || bits-poolBits > 10 {
			return
		}
		addr := func(v uint32) netip.Addr {
			return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		}
		pool := netip.PrefixFrom(addr(base), int(poolBits)).Masked()
		p := netip.PrefixFrom(addr(probe), int(probeBits)).Masked()
		b, err := NewBlocks([]string{pool.String()}, int(bits))
		if err != nil {
			t.Fatal(err)
		}
		var s blockSet
		for _, r := range b.Overlapping(p) {
			s.add(r[0], r[1])
		}
		for i := range b.Total() {
			if want := b.Block(i).Overlaps(p); s.has(i) != want {
				t.Fatalf("pool %s /%d, probe %s: block %d (%s) overlapping = %v, want %v", pool, bits, p, i, b.Block(i), s.has(i), want)
			}
		}
	})
}

func FuzzProfileOf(f *testing.F) {
	f.Add("100", "4790", "65011")
	f.Add(" 7 ", "0", "x")
	f.Fuzz(func(t *testing.T, vni, port, asn string) {
		p, err := ProfileOf(map[string]string{AnnotationVXLANVNI: vni, AnnotationVXLANPort: port, AnnotationLocalASN: asn}, nil)
		if err != nil {
			return
		}
		if s := p.Resolve(Settings{}); s.VNI == 0 || s.VNI >= 1<<24 || s.Port == 0 || s.LocalASN == 0 || s.LocalASN == 4294967295 {
			t.Fatalf("accepted %q %q %q as %+v", vni, port, asn, s)
		}
	})
}
