package nodepool

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/big"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// MaxBlocksPerCIDR bounds how many blocks of one pool CIDR the allocator
// considers (an IPv6 /32 carved into /64s holds 2^32): a pool hands out at
// most this many blocks per entry of spec.podCIDRs.
const MaxBlocksPerCIDR = 1 << 20

// CarveCIDR returns block index of size /bits inside pool.
func CarveCIDR(pool netip.Prefix, bits, index int) (netip.Prefix, error) {
	if !pool.IsValid() {
		return netip.Prefix{}, errors.New("pool CIDR is not set")
	}
	if pool != pool.Masked() {
		return netip.Prefix{}, fmt.Errorf("pool CIDR %s has host bits set: use %s", pool, pool.Masked())
	}
	maxBits := pool.Addr().BitLen()
	if bits < pool.Bits() || bits > maxBits {
		return netip.Prefix{}, fmt.Errorf("node block size /%d must lie between the pool's /%d and /%d", bits, pool.Bits(), maxBits)
	}
	span := bits - pool.Bits()
	if index < 0 || (span < 62 && index >= 1<<span) {
		return netip.Prefix{}, fmt.Errorf("node index %d out of range: pool %s holds %d blocks of /%d", index, pool, uint64(1)<<min(span, 63), bits)
	}
	base := new(big.Int).SetBytes(pool.Addr().AsSlice())
	off := new(big.Int).Lsh(big.NewInt(int64(index)), uint(maxBits-bits))
	sum := new(big.Int).Add(base, off).FillBytes(make([]byte, maxBits/8))
	a, _ := netip.AddrFromSlice(sum)
	return netip.PrefixFrom(a, bits), nil
}

// Blocks is a pool's address space carved into blocks of one size, numbered
// 0..Total()-1 through its CIDRs in order.
type Blocks struct {
	cidrs  []netip.Prefix
	bits   int
	counts []int // blocks per CIDR, capped at MaxBlocksPerCIDR
	total  int
}

// NewBlocks checks a pool's CIDRs and block size (the CRD's schema does the
// same at the API server; this guards against a pool read from a stale
// cache or written around the schema).
func NewBlocks(cidrs []string, bits int) (*Blocks, error) {
	if len(cidrs) == 0 {
		return nil, errors.New("spec.podCIDRs is empty: add a pod address range such as 10.244.0.0/16")
	}
	b := &Blocks{bits: bits}
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil || p != p.Masked() {
			return nil, fmt.Errorf("spec.podCIDRs entry %q: want a canonical CIDR such as 10.244.0.0/16", s)
		}
		if len(b.cidrs) > 0 && p.Addr().Is4() != b.cidrs[0].Addr().Is4() {
			return nil, fmt.Errorf("spec.podCIDRs mixes address families (%s, %s): use one NodePool per family", b.cidrs[0], p)
		}
		if bits < p.Bits() || bits > p.Addr().BitLen() {
			return nil, fmt.Errorf("spec.nodeMaskSize %d must lie between /%d (of %s) and /%d", bits, p.Bits(), p, p.Addr().BitLen())
		}
		for _, q := range b.cidrs {
			if q.Overlaps(p) {
				return nil, fmt.Errorf("spec.podCIDRs entries %s and %s overlap: remove one", q, p)
			}
		}
		n := MaxBlocksPerCIDR
		if span := bits - p.Bits(); span < 20 {
			n = 1 << span
		}
		b.cidrs, b.counts, b.total = append(b.cidrs, p), append(b.counts, n), b.total+n
	}
	return b, nil
}

// Total is the number of blocks.
func (b *Blocks) Total() int { return b.total }

// Bits is the block size.
func (b *Blocks) Bits() int { return b.bits }

// Block returns block i.
func (b *Blocks) Block(i int) netip.Prefix {
	for k, c := range b.cidrs {
		if i < b.counts[k] {
			p, _ := CarveCIDR(c, b.bits, i)
			return p
		}
		i -= b.counts[k]
	}
	return netip.Prefix{}
}

// Overlapping returns the range [lo, hi) of blocks that overlap p, for each
// pool CIDR p overlaps.
func (b *Blocks) Overlapping(p netip.Prefix) [][2]int {
	var out [][2]int
	base := 0
	for k, c := range b.cidrs {
		if p.Addr().Is4() == c.Addr().Is4() && c.Overlaps(p) {
			lo, hi := 0, b.counts[k]
			if p.Bits() > c.Bits() {
				// p lies inside c: from the block holding p's first address,
				// over as many blocks as p spans (at least one).
				first := offset(c, p.Addr(), b.bits)
				n := 1
				if p.Bits() < b.bits {
					n = 1 << min(b.bits-p.Bits(), 30)
				}
				lo, hi = min(first, b.counts[k]), min(first+n, b.counts[k])
			}
			if lo < hi {
				out = append(out, [2]int{base + lo, base + hi})
			}
		}
		base += b.counts[k]
	}
	return out
}

// offset is the number of the /bits block of c that holds a (capped to an
// int: beyond MaxBlocksPerCIDR it is out of the pool's range anyway).
func offset(c netip.Prefix, a netip.Addr, bits int) int {
	x := new(big.Int).SetBytes(a.AsSlice())
	x.Sub(x, new(big.Int).SetBytes(c.Addr().AsSlice()))
	x.Rsh(x, uint(a.BitLen()-bits))
	if !x.IsInt64() || x.Int64() > MaxBlocksPerCIDR {
		return MaxBlocksPerCIDR
	}
	return int(x.Int64())
}

// Start is where a node begins its search: a hash of its name, so nodes
// joining together spread over the pool instead of all racing for block 0,
// and a node that lost its claim tends to get the same block back.
func Start(nodeName string, total int) int {
	if total <= 0 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(nodeName))
	return int(h.Sum64() % uint64(total))
}

// ClaimName is the PodCIDRClaim name of a block of a pool: the pool, '-',
// then the block with '.', ':' and '/' as '-' (idc-a-10-244-3-0-24). The
// CRD checks the same rule.
func ClaimName(pool string, block netip.Prefix) string {
	return pool + "-" + strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(block.String())
}

// blockSet is a set of block numbers, as ranges [lo, hi); normalize merges
// them into sorted disjoint ones before a query.
type blockSet struct {
	r     [][2]int
	dirty bool
}

func (s *blockSet) add(lo, hi int) {
	if lo < hi {
		s.r, s.dirty = append(s.r, [2]int{lo, hi}), true
	}
}

func (s *blockSet) normalize() {
	if !s.dirty || len(s.r) == 0 {
		return
	}
	s.dirty = false
	slices.SortFunc(s.r, func(a, b [2]int) int { return a[0] - b[0] })
	out := s.r[:1]
	for _, x := range s.r[1:] {
		if last := &out[len(out)-1]; x[0] <= last[1] {
			last[1] = max(last[1], x[1])
		} else {
			out = append(out, x)
		}
	}
	s.r = out
}

func (s *blockSet) has(i int) bool {
	s.normalize()
	k := sort.Search(len(s.r), func(k int) bool { return s.r[k][1] > i })
	return k < len(s.r) && s.r[k][0] <= i
}

func (s *blockSet) size() int {
	s.normalize()
	n := 0
	for _, x := range s.r {
		n += x[1] - x[0]
	}
	return n
}
