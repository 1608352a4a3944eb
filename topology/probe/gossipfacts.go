package probe

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/hashicorp/memberlist"

	"github.com/strata-net/strata/topology"
)

// What gossip carries about a node, and how its pod prefixes travel.
//
// memberlist node metadata is at most 512 bytes, and a cloud node's pod
// prefixes (one /32 per pod on a single-IP pool) outgrow that at about 16
// pods. So the metadata is a summary: the node's facts without PodPrefixes,
// plus the count and a SHA-256 digest of its prefix set. A member whose
// summary names a set it does not hold asks the owner for it over
// memberlist's reliable (TCP) channel, which the gossip keyring encrypts and
// authenticates like the rest of gossip, and accepts the answer only if it
// hashes to the digest in the owner's summary. The facts of a peer reach
// OnFacts only complete: summary and the matching prefix set.
//
// WAN facts (a WireGuard key, a public endpoint, the gateway label) add
// about 120 bytes. When they would push the summary over the limit (long
// node names, dual-stack addresses), they move into the prefix set message
// instead, and the summary's digest covers them too (prefixSetRef.WAN).
// Members of the version before this cannot take such a set (the digest
// differs) and use the API server's copy of that node's facts.

// MaxPodPrefixes bounds one node's pod prefix set over gossip: more than any
// ECS instance type's ENI × address quota, and it bounds what one peer can
// make another decode.
const MaxPodPrefixes = 4096

// maxPrefixMsgBytes bounds an encoded prefix set message: MaxPodPrefixes
// IPv6 prefixes in JSON, with room to spare.
const maxPrefixMsgBytes = 64 + MaxPodPrefixes*48

// Message kinds over memberlist's user-message channel (first byte).
const (
	msgPrefixRequest byte = 'Q' // "send me your prefix set"
	msgPrefixSet     byte = 'P' // a node's prefix set
)

// prefixSetRef names a prefix set without carrying it.
type prefixSetRef struct {
	Count  int    `json:"n"`
	SHA256 string `json:"sha256,omitempty"` // hex of the first 16 bytes; empty when Count is 0 and WAN is not set
	// WAN: the set message also carries the node's WAN facts, and SHA256
	// covers them.
	WAN bool `json:"wan,omitempty"`
}

// wanFacts are a node's WAN facts when they travel in the set message.
type wanFacts struct {
	Gateway  bool           `json:"gateway,omitempty"`
	Key      string         `json:"key,omitempty"`
	Endpoint netip.AddrPort `json:"endpoint,omitzero"`
}

func wanOf(f *topology.NodeFacts) *wanFacts {
	if !f.WANGateway && f.WANPublicKey == "" && !f.PublicEndpoint.IsValid() {
		return nil
	}
	return &wanFacts{Gateway: f.WANGateway, Key: f.WANPublicKey, Endpoint: f.PublicEndpoint}
}

func (w *wanFacts) apply(f *topology.NodeFacts) {
	f.WANGateway, f.WANPublicKey, f.PublicEndpoint = w.Gateway, w.Key, w.Endpoint
}

// gossipFacts is the metadata a member publishes: its facts without
// PodPrefixes, and the reference of its prefix set.
type gossipFacts struct {
	topology.NodeFacts
	PodPrefixSet *prefixSetRef `json:"podPrefixSet,omitempty"`
}

// digestPrefixes is the digest of a prefix set: SHA-256 over the canonical
// (sorted, comma-joined) text, first 16 bytes in hex. Order does not matter.
func digestPrefixes(pfx []netip.Prefix) prefixSetRef { return digestSet(pfx, nil) }

// digestSet is digestPrefixes extended with WAN facts: after the prefixes,
// a newline and the WAN facts' JSON. Without WAN facts it is
// digestPrefixes, unchanged.
func digestSet(pfx []netip.Prefix, wan *wanFacts) prefixSetRef {
	if len(pfx) == 0 && wan == nil {
		return prefixSetRef{}
	}
	s := sortedPrefixes(pfx)
	h := sha256.New()
	for i, p := range s {
		if i > 0 {
			h.Write([]byte{','})
		}
		h.Write([]byte(p.String()))
	}
	if wan != nil {
		b, _ := json.Marshal(wan)
		h.Write([]byte{'\n'})
		h.Write(b)
	}
	return prefixSetRef{Count: len(s), SHA256: hex.EncodeToString(h.Sum(nil)[:16]), WAN: wan != nil}
}

func sortedPrefixes(pfx []netip.Prefix) []netip.Prefix {
	s := slices.Clone(pfx)
	slices.SortFunc(s, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return s
}

// checkPrefixes refuses a prefix set gossip must not carry.
func checkPrefixes(node string, pfx []netip.Prefix) error {
	if len(pfx) > MaxPodPrefixes {
		return fmt.Errorf("node %s has %d pod prefixes, over gossip's %d: use /28 ENI prefixes (--eni-ipv4-prefixes)", node, len(pfx), MaxPodPrefixes)
	}
	seen := make(map[netip.Prefix]struct{}, len(pfx))
	for _, p := range pfx {
		if !p.IsValid() || p != p.Masked() {
			return fmt.Errorf("node %s pod prefix %s: want a valid prefix with host bits zero", node, p)
		}
		if _, dup := seen[p]; dup {
			return fmt.Errorf("node %s pod prefix %s listed twice", node, p)
		}
		seen[p] = struct{}{}
	}
	return nil
}

// encodeMeta is the metadata of f: bounded whatever the number of pods.
// spill is non-nil when f's WAN facts travel in the set message.
func encodeMeta(f topology.NodeFacts) (meta []byte, spill *wanFacts, err error) {
	if err := checkPrefixes(f.Name, f.PodPrefixes); err != nil {
		return nil, nil, err
	}
	b, err := encodeSummary(f, nil)
	if err == nil && len(b) > memberlist.MetaMaxSize {
		if spill = wanOf(&f); spill != nil {
			b, err = encodeSummary(f, spill)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, nil, fmt.Errorf("node %s facts are %d bytes without pod prefixes and WAN facts, over gossip's %d-byte metadata limit: check its underlay IPs and capabilities", f.Name, len(b), memberlist.MetaMaxSize)
	}
	return b, spill, nil
}

func encodeSummary(f topology.NodeFacts, spill *wanFacts) ([]byte, error) {
	ref := digestSet(f.PodPrefixes, spill)
	g := gossipFacts{NodeFacts: f}
	g.PodPrefixes = nil
	if spill != nil {
		(&wanFacts{}).apply(&g.NodeFacts)
	}
	g.PodPrefixSet = &ref
	b, err := json.Marshal(g)
	if err != nil {
		return nil, fmt.Errorf("encode node facts for gossip: %w", err)
	}
	return b, nil
}

// decodeMeta reads a member's metadata. The facts have no PodPrefixes; ref
// names the set that completes them. Metadata from a member of an older
// version carries the prefixes inline and no reference: they are taken as
// they are (complete, with their own digest).
func decodeMeta(member string, b []byte) (topology.NodeFacts, prefixSetRef, []netip.Prefix, error) {
	var g gossipFacts
	if len(b) > memberlist.MetaMaxSize {
		return topology.NodeFacts{}, prefixSetRef{}, nil, fmt.Errorf("gossip facts of %s: %d bytes, over %d", member, len(b), memberlist.MetaMaxSize)
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return topology.NodeFacts{}, prefixSetRef{}, nil, fmt.Errorf("gossip facts of %s unreadable: %w", member, err)
	}
	f := g.NodeFacts
	if f.Name != member {
		return topology.NodeFacts{}, prefixSetRef{}, nil, fmt.Errorf("gossip member %q publishes facts named %q", member, f.Name)
	}
	inline := f.PodPrefixes
	f.PodPrefixes = nil
	if g.PodPrefixSet == nil { // an older member: prefixes inline
		if err := checkPrefixes(member, inline); err != nil {
			return topology.NodeFacts{}, prefixSetRef{}, nil, err
		}
		return f, digestPrefixes(inline), inline, nil
	}
	if len(inline) > 0 {
		return topology.NodeFacts{}, prefixSetRef{}, nil, fmt.Errorf("gossip facts of %s carry both inline prefixes and a prefix set reference", member)
	}
	ref := *g.PodPrefixSet
	if err := ref.check(member); err != nil {
		return topology.NodeFacts{}, prefixSetRef{}, nil, err
	}
	if ref.WAN && wanOf(&f) != nil {
		return topology.NodeFacts{}, prefixSetRef{}, nil, fmt.Errorf("gossip facts of %s carry WAN facts both in the summary and in the set", member)
	}
	return f, ref, nil, nil
}

func (r prefixSetRef) check(member string) error {
	switch {
	case r.Count < 0 || r.Count > MaxPodPrefixes:
		return fmt.Errorf("gossip facts of %s: prefix set of %d, want 0..%d", member, r.Count, MaxPodPrefixes)
	case r.Count == 0 && !r.WAN && r.SHA256 != "":
		return fmt.Errorf("gossip facts of %s: an empty prefix set with a digest", member)
	case r.Count > 0 || r.WAN:
		if d, err := hex.DecodeString(r.SHA256); err != nil || len(d) != 16 {
			return fmt.Errorf("gossip facts of %s: prefix set digest %q, want 32 hex digits", member, r.SHA256)
		}
	}
	return nil
}

// prefixRequest asks a node for its prefix set; From names where to send it.
type prefixRequest struct {
	From string `json:"from"`
}

// prefixSet is one node's whole prefix set.
type prefixSet struct {
	Node     string         `json:"node"`
	Prefixes []netip.Prefix `json:"prefixes"`
	WAN      *wanFacts      `json:"wan,omitempty"` // when the summary had no room for them
}

func encodeRequest(from string) []byte {
	b, _ := json.Marshal(prefixRequest{From: from})
	return append([]byte{msgPrefixRequest}, b...)
}

func encodePrefixSet(node string, pfx []netip.Prefix, wan *wanFacts) []byte {
	b, _ := json.Marshal(prefixSet{Node: node, Prefixes: sortedPrefixes(pfx), WAN: wan})
	return append([]byte{msgPrefixSet}, b...)
}

var errUnknownMsg = errors.New("unknown gossip message kind")

// decodeMsg reads one user message: a request (req set) or a prefix set
// (set set, checked and with its digest).
func decodeMsg(b []byte) (req *prefixRequest, set *prefixSet, ref prefixSetRef, err error) {
	if len(b) == 0 {
		return nil, nil, ref, errUnknownMsg
	}
	if len(b) > maxPrefixMsgBytes {
		return nil, nil, ref, fmt.Errorf("gossip message of %d bytes, over %d", len(b), maxPrefixMsgBytes)
	}
	switch b[0] {
	case msgPrefixRequest:
		var r prefixRequest
		if err := json.Unmarshal(b[1:], &r); err != nil {
			return nil, nil, ref, fmt.Errorf("prefix request unreadable: %w", err)
		}
		if r.From == "" {
			return nil, nil, ref, errors.New("prefix request names no sender")
		}
		return &r, nil, ref, nil
	case msgPrefixSet:
		var s prefixSet
		if err := json.Unmarshal(b[1:], &s); err != nil {
			return nil, nil, ref, fmt.Errorf("prefix set unreadable: %w", err)
		}
		if s.Node == "" {
			return nil, nil, ref, errors.New("prefix set names no node")
		}
		if err := checkPrefixes(s.Node, s.Prefixes); err != nil {
			return nil, nil, ref, err
		}
		return nil, &s, digestSet(s.Prefixes, s.WAN), nil
	}
	return nil, nil, ref, fmt.Errorf("%w %q", errUnknownMsg, b[0])
}
