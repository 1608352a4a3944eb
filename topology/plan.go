package topology

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
)

// Datapath is how a node wires its own pods and announces them.
type Datapath string

const (
	DatapathENIMultiIP   Datapath = "eni-multi-ip"  // cloud: ENI secondary IPs
	DatapathENIExclusive Datapath = "eni-exclusive" // cloud: one ENI per pod
	DatapathBGPUnderlay  Datapath = "bgp-underlay"  // edge: pod CIDR announced over BGP
	DatapathVXLANOverlay Datapath = "vxlan-overlay" // L3-only: pods reachable only through VXLAN
)

// Path is how traffic between two nodes' pods travels.
type Path string

const (
	PathNative      Path = "native"
	PathVXLAN       Path = "vxlan"
	PathUnreachable Path = "unreachable"
	// PathWAN: the pair's traffic crosses the internet, so it rides the
	// encrypted WAN transport (WireGuard, device strata-wan), directly or
	// through one gateway node (PeerProgram.Relay).
	PathWAN Path = "wan"
)

// Paths lists every path value, in display order.
var Paths = []Path{PathNative, PathVXLAN, PathUnreachable, PathWAN}

// Config tunes the decision. Its zero value is not valid; start from
// DefaultConfig.
type Config struct {
	// FailThreshold is K: a pool link leaves native after K consecutive
	// failed native probes.
	FailThreshold int `json:"failThreshold"`
	// HoldDown is how long the native path must stay healthy (no failed
	// probe) before pairs return to native.
	HoldDown time.Duration `json:"holdDown"`
	// WANFailThreshold: a gateway is no longer chosen by an observer after
	// this many consecutive failed WAN probes from it (ProbeWAN). Zero
	// means DefaultWANFailThreshold.
	WANFailThreshold int `json:"wanFailThreshold,omitempty"`
	// WANHoldDown is how long WAN probes to a gateway must stay healthy
	// before the observer chooses it again. Zero means HoldDown.
	WANHoldDown time.Duration `json:"wanHoldDown,omitempty"`
}

// DefaultWANFailThreshold: with gateways probed every 100 ms, 3 failures
// move relayed pairs off a dead gateway in ~300-500 ms, inside one second.
const DefaultWANFailThreshold = 3

// DefaultConfig: K=3 (with the prober's 100 ms period and 3 samples per
// remote pool that is ~100-300 ms to leave native), hold-down 10 s; the
// same for WAN gateway probes.
func DefaultConfig() Config {
	return Config{FailThreshold: 3, HoldDown: 10 * time.Second, WANFailThreshold: DefaultWANFailThreshold, WANHoldDown: 10 * time.Second}
}

func (c Config) wanFailThreshold() int {
	if c.WANFailThreshold == 0 {
		return DefaultWANFailThreshold
	}
	return c.WANFailThreshold
}

func (c Config) wanHoldDown() time.Duration {
	if c.WANHoldDown == 0 {
		return c.HoldDown
	}
	return c.WANHoldDown
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.FailThreshold < 1 || c.FailThreshold > 1000 {
		return fmt.Errorf("topology config: failThreshold=%d: want 1..1000 consecutive failures (default 3)", c.FailThreshold)
	}
	if c.HoldDown < 0 || c.HoldDown > 24*time.Hour {
		return fmt.Errorf("topology config: holdDown=%s: want 0..24h (default 10s)", c.HoldDown)
	}
	if c.WANFailThreshold < 0 || c.WANFailThreshold > 1000 {
		return fmt.Errorf("topology config: wanFailThreshold=%d: want 1..1000 consecutive failed WAN probes, or 0 for the default %d", c.WANFailThreshold, DefaultWANFailThreshold)
	}
	if c.WANHoldDown < 0 || c.WANHoldDown > 24*time.Hour {
		return fmt.Errorf("topology config: wanHoldDown=%s: want 0..24h (0: same as holdDown)", c.WANHoldDown)
	}
	return nil
}

// linkPhase is the state of the native path between two pools.
type linkPhase uint8

const (
	linkUp         linkPhase = iota // native usable
	linkDown                        // K failures seen, still failing
	linkRecovering                  // healthy again, inside hold-down
)

// linkSnap is an immutable view of one pool link inside a Plan. A nil
// *linkSnap means up with no failure ever seen.
type linkSnap struct {
	phase        linkPhase
	fails        int       // failures counted when it went down
	since        time.Time // first failure of the streak that took it down
	healthySince time.Time // recovering: first good probe since the last failure
}

func (l *linkSnap) up() bool { return l == nil || l.phase == linkUp }

func (l *linkSnap) equal(o *linkSnap) bool {
	if l == nil || o == nil {
		return l.up() && o.up()
	}
	return *l == *o || (l.up() && o.up())
}

// nodeEntry is one node's immutable decision inside a Plan.
type nodeEntry struct {
	facts     NodeFacts
	datapath  Datapath
	dpReason  string
	pool      int // index into Plan.pools; -1 when the pool is unknown
	baseMiss  []string
	ovlMiss   []string
	natMiss   []string
	nativeOK  bool // its datapath is native-capable and its native facts are complete
	private   bool // its pod routes are in the VPC routing domain (cloud, leased line)
	alive     bool
	liveSince time.Time
	own       *ownership     // nil: every claim accepted
	pods      []netip.Prefix // the accepted pod prefixes: what peers program
	// WAN facts, validated: facts that bypass ParseNode (facts documents,
	// gossip) may still carry a bad key or endpoint, which counts as absent.
	wanKey  bool // a valid WireGuard public key
	wanEP   bool // a valid public endpoint: reachable from the internet
	gateway bool // may relay: wan-gateway=true with a key and an endpoint
	wanBad  bool // a key or endpoint is present but unusable (wanBadText says why)
}

func newEntry(f NodeFacts, alive bool, liveSince time.Time, own *ownership) *nodeEntry {
	e := &nodeEntry{facts: f, pool: -1, alive: alive, liveSince: liveSince, own: own}
	e.pods = own.accepted(&f)
	e.baseMiss = f.missingBase()
	e.ovlMiss = f.missingOverlay()
	e.natMiss = f.missingNative()
	e.datapath, e.dpReason = chooseDatapath(&f, e.baseMiss)
	e.private = f.Location == LocationCloud || f.Interconnect == InterconnectLeasedLine
	e.nativeOK = e.datapath != DatapathVXLANOverlay && len(e.baseMiss) == 0 && len(e.natMiss) == 0
	if f.WANPublicKey != "" {
		e.wanKey = checkWANKey(f.WANPublicKey) == nil
		e.wanBad = !e.wanKey
	}
	if f.PublicEndpoint != (netip.AddrPort{}) {
		e.wanEP = checkPublicEndpoint(f.PublicEndpoint) == nil
		e.wanBad = e.wanBad || !e.wanEP
	}
	e.gateway = f.WANGateway && e.wanKey && e.wanEP
	return e
}

// endpoint is the node's usable public endpoint, or zero.
func (e *nodeEntry) endpoint() netip.AddrPort {
	if e.wanEP {
		return e.facts.PublicEndpoint
	}
	return netip.AddrPort{}
}

func chooseDatapath(f *NodeFacts, baseMiss []string) (Datapath, string) {
	if len(baseMiss) > 0 {
		return DatapathVXLANOverlay, "facts incomplete (missing " + strings.Join(baseMiss, ", ") + "): never assumed native"
	}
	switch f.Location {
	case LocationCloud:
		if !f.Capabilities.ENI {
			return DatapathVXLANOverlay, "cloud node without the eni capability"
		}
		if f.ENIMode == ENIModeExclusive {
			if f.Capabilities.ENIQuota < 2 {
				return DatapathENIMultiIP, fmt.Sprintf("eni-mode=exclusive asked but eni-quota=%d leaves no ENI for pods; using secondary IPs", f.Capabilities.ENIQuota)
			}
			return DatapathENIExclusive, "cloud node, eni-mode=exclusive"
		}
		return DatapathENIMultiIP, "cloud node with ENIs: pods take secondary IPs"
	default:
		if f.Capabilities.BGPPeers > 0 && f.Interconnect != "" {
			return DatapathBGPUnderlay, fmt.Sprintf("%s node with %d BGP peer(s): pod CIDR announced to the underlay", f.Location, f.Capabilities.BGPPeers)
		}
		if f.Capabilities.BGPPeers == 0 {
			return DatapathVXLANOverlay, fmt.Sprintf("%s node without BGP peers: L3-only, pods reachable only through VXLAN", f.Location)
		}
		return DatapathVXLANOverlay, "BGP peers configured but " + LabelInterconnect + " unknown: never assumed native"
	}
}

// NodePlan is one node's decision.
type NodePlan struct {
	Name     string    `json:"name"`
	Pool     string    `json:"pool"`
	Location Location  `json:"location"`
	Datapath Datapath  `json:"datapath"`
	Reason   string    `json:"reason"`
	Alive    bool      `json:"alive"`
	Facts    NodeFacts `json:"facts"`
	// PodPrefixes are the claims peers accept and program (Facts has all
	// the node claimed).
	PodPrefixes []netip.Prefix `json:"podPrefixes,omitempty"`
	// Isolated is set when the node's claims were refused: no peer programs
	// anything for it. IsolatedReason says why and what to fix.
	Isolated       IsolationCode `json:"isolated,omitempty"`
	IsolatedReason string        `json:"isolatedReason,omitempty"`
	// Withheld are claims lost to an older node's equal claim; the rest of
	// the node stays programmed.
	Withheld []RefusedPrefix `json:"withheld,omitempty"`
}

// PairPath is the path of one ordered node pair.
type PairPath struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Path   Path   `json:"path"`
	Reason string `json:"reason"`
}

// PeerProgram is what a node programs for one peer.
//   - native: routes for PodPrefixes via NextHop (the peer's underlay IP) when
//     that is on-link; otherwise the underlay (VPC, BGP) already routes them.
//   - vxlan: FDB/neighbour/onlink routes for PodPrefixes via VTEP, VTEPMAC,
//     VTEPPort.
//   - wan: routes for PodPrefixes into the WAN device. Direct (Relay empty):
//     through the WireGuard peer WANPublicKey, sent to WANEndpoint, or, when
//     that is zero, to wherever the peer initiates from (it is behind NAT).
//     Relayed: through the tunnel of the gateway node Relay (its own
//     PeerProgram carries its key and endpoint), which forwards them.
//   - unreachable: remove whatever was programmed for the peer.
//
// WANPublicKey and WANEndpoint are also set on native and vxlan programs
// for peers in another pool (and between gateways and everyone): a standby
// WireGuard peer, so that failing over to the WAN only moves routes.
type PeerProgram struct {
	Peer        string         `json:"peer"`
	Path        Path           `json:"path"`
	Reason      string         `json:"reason"`
	PodPrefixes []netip.Prefix `json:"podPrefixes,omitempty"`
	NextHop     netip.Addr     `json:"nextHop,omitzero"`
	VTEP        netip.Addr     `json:"vtep,omitzero"`
	VTEPMAC     string         `json:"vtepMAC,omitempty"`
	VTEPPort    uint16         `json:"vtepPort,omitempty"`
	// WANPublicKey is the peer's WireGuard public key (base64).
	WANPublicKey string `json:"wanPublicKey,omitempty"`
	// WANEndpoint is the peer's public endpoint; zero when it is behind
	// NAT and initiates (with keepalives).
	WANEndpoint netip.AddrPort `json:"wanEndpoint,omitzero"`
	// Relay is the gateway node whose tunnel carries PodPrefixes when
	// neither side has a public endpoint.
	Relay string `json:"relay,omitempty"`
}

// SameProgramming reports whether p and o need the same kernel state (the
// reason text does not count).
func (p PeerProgram) SameProgramming(o PeerProgram) bool {
	return p.Path == o.Path && p.NextHop == o.NextHop && p.VTEP == o.VTEP &&
		p.VTEPMAC == o.VTEPMAC && p.VTEPPort == o.VTEPPort && slices.Equal(p.PodPrefixes, o.PodPrefixes) &&
		p.WANPublicKey == o.WANPublicKey && p.WANEndpoint == o.WANEndpoint && p.Relay == o.Relay
}

// Plan is an immutable decision. Pair paths are not stored: they follow from
// per-pool-pair link state plus per-node state and are computed on demand,
// so a plan is O(nodes + pools²), never O(nodes²).
type Plan struct {
	cfg       Config
	now       time.Time
	nodes     []*nodeEntry // sorted by name
	index     map[string]int
	pools     []string // sorted
	poolIndex map[string]int
	members   [][]int       // node indices per pool
	links     [][]*linkSnap // [pool][pool], symmetric; rows copied on write
	// exc are per-node exceptions: the native pod path to that node failed
	// while its pool link stayed healthy. Small; copied on write.
	exc map[string]*linkSnap
	// gateways are the indices of nodes that may relay WAN traffic (a key,
	// an endpoint, wan-gateway=true), in name order.
	gateways []int
	// wanExc are failed WAN paths per observer: WAN probes from [0] to [1]
	// failed K× (or are in hold-down). Small; copied on write.
	wanExc map[wanKey]*linkSnap
}

// wanKey is an ordered (observer, target) pair of node names.
type wanKey [2]string

// Now is the time the plan was last advanced to.
func (p *Plan) Now() time.Time { return p.now }

// Len is the number of nodes.
func (p *Plan) Len() int { return len(p.nodes) }

// Pools lists the pool names, sorted.
func (p *Plan) Pools() []string { return slices.Clone(p.pools) }

func (p *Plan) nodePlan(e *nodeEntry) NodePlan {
	np := NodePlan{Name: e.facts.Name, Pool: e.facts.Pool, Location: e.facts.Location, Datapath: e.datapath,
		Reason: e.dpReason, Alive: e.alive, Facts: cloneFacts(e.facts), PodPrefixes: slices.Clone(e.pods)}
	if e.own != nil {
		np.Isolated, np.IsolatedReason, np.Withheld = e.own.code, e.own.reason, slices.Clone(e.own.withheld)
	}
	return np
}

// Nodes lists every node's decision, sorted by name.
func (p *Plan) Nodes() []NodePlan {
	out := make([]NodePlan, len(p.nodes))
	for i, e := range p.nodes {
		out[i] = p.nodePlan(e)
	}
	return out
}

// Node returns one node's decision.
func (p *Plan) Node(name string) (NodePlan, bool) {
	i, ok := p.index[name]
	if !ok {
		return NodePlan{}, false
	}
	return p.nodePlan(p.nodes[i]), true
}

func (p *Plan) link(a, b int) *linkSnap {
	if a < 0 || b < 0 {
		return nil
	}
	return p.links[a][b]
}

// Path is the path from node a to node b. ok is false when either is unknown
// or a == b.
func (p *Plan) Path(a, b string) (PairPath, bool) {
	ia, oka := p.index[a]
	ib, okb := p.index[b]
	if !oka || !okb || a == b {
		return PairPath{}, false
	}
	ea, eb := p.nodes[ia], p.nodes[ib]
	v := p.verdict(ea, eb)
	return PairPath{From: a, To: b, Path: v.path, Reason: p.reason(ea, eb, v)}, true
}

// verdict is a pair decision without its text.
type verdict struct {
	path Path
	why  why
	link *linkSnap
	who  *nodeEntry // the node the reason is about
	// The WAN part: how the pair uses (or could not use) the WAN.
	wan    wanWhy
	wanWho *nodeEntry // wanNoKey: the node lacking a usable key
	relay  *nodeEntry // wanRelay: the gateway
}

// wanWhy is the WAN half of a verdict.
type wanWhy uint8

const (
	wanNone      wanWhy = iota // the WAN was not needed, or nobody has WAN facts
	wanDirect                  // at least one side has a public endpoint
	wanRelay                   // through one gateway
	wanNoKey                   // one side lacks a usable WAN key
	wanNoGateway               // neither has an endpoint and no gateway is usable
)

type why uint8

const (
	whyIncomplete why = iota // base facts missing
	whyNativeHealthy
	whyLinkDown
	whyLinkRecovering
	whyOverlayNode
	whyNativeFactsMissing
	whyNoInterconnect
	whyNodeDown
	whyNodeRecovering
	whyIsolated
	whyCrossDomain // different routing domains, WAN facts present
)

// verdict holds every rule. Its inputs are per-node state and the pool link,
// which is what makes pair paths derivable without storing pairs.
func (p *Plan) verdict(a, b *nodeEntry) verdict {
	if a.own.isolated() {
		// b has no route back to a's pods.
		return verdict{path: PathUnreachable, why: whyIsolated, who: a}
	}
	return p.verdictTo(a, b)
}

// verdictTo is verdict without a's isolation: what a programs for b does
// not depend on whether peers accept a's own claims.
func (p *Plan) verdictTo(a, b *nodeEntry) verdict {
	if b.own.isolated() {
		return verdict{path: PathUnreachable, why: whyIsolated, who: b}
	}
	for _, e := range [2]*nodeEntry{a, b} {
		if len(e.baseMiss) > 0 {
			return verdict{path: PathUnreachable, why: whyIncomplete, who: e}
		}
	}
	// A node whose gossip liveness is lost keeps its path: liveness is its
	// agent's, and forwarding must not depend on the agent (a restart, a
	// crash loop). Only gateway choice skips it (wanRoute); reason() says so.
	v := verdict{path: PathVXLAN}
	switch {
	case !a.nativeOK || !b.nativeOK:
		e := a
		if a.nativeOK {
			e = b
		}
		v.who = e
		v.why = whyOverlayNode
		if e.datapath != DatapathVXLANOverlay {
			v.why = whyNativeFactsMissing
		}
	case a.pool != b.pool && (!a.private || !b.private):
		v.why = whyNoInterconnect
		v.who = a
		if a.private {
			v.who = b
		}
	default:
		l := p.link(a.pool, b.pool)
		v.link = l
		if !l.up() {
			v.why = whyLinkDown
			if l.phase == linkRecovering {
				v.why = whyLinkRecovering
			}
			break
		}
		for _, e := range [2]*nodeEntry{a, b} {
			if x := p.exc[e.facts.Name]; !x.up() {
				v.link, v.who, v.why = x, e, whyNodeDown
				if x.phase == linkRecovering {
					v.why = whyNodeRecovering
				}
				break
			}
		}
		if v.who == nil {
			return verdict{path: PathNative, why: whyNativeHealthy, link: l}
		}
	}
	// Not native. Outside one private routing domain VXLAN's outer packets
	// are not routed; across pools after a native failure they would
	// follow the failed path. Both cases take the WAN when they can.
	cross := !sameDomain(a, b)
	nativeFailed := a.pool != b.pool && (v.why == whyLinkDown || v.why == whyLinkRecovering || v.why == whyNodeDown || v.why == whyNodeRecovering)
	if cross || nativeFailed {
		if p.wanRoute(a, b, &v, cross) {
			return v
		}
	}
	for _, e := range [2]*nodeEntry{a, b} {
		if len(e.ovlMiss) > 0 {
			v.path, v.who = PathUnreachable, e
			return v
		}
	}
	return v
}

// sameDomain: the cloud VPC and every leased-line pool form one private
// routing domain; any other pool is a domain of its own.
func sameDomain(a, b *nodeEntry) bool {
	return a.pool == b.pool || (a.private && b.private)
}

// wanRoute decides the WAN for a pair that needs it and reports whether v
// is final. Without WAN facts on either node the underlay is trusted to
// route between the domains, as before the WAN existed (v stays vxlan).
func (p *Plan) wanRoute(a, b *nodeEntry, v *verdict, cross bool) bool {
	switch {
	case a.wanKey && b.wanKey:
		if cross {
			v.why, v.who, v.link = whyCrossDomain, nil, nil
		}
		if a.wanEP || b.wanEP {
			v.path, v.wan = PathWAN, wanDirect
			return true
		}
		if g := p.pickGateway(a, b); g != nil {
			v.path, v.wan, v.relay = PathWAN, wanRelay, g
			return true
		}
		v.wan = wanNoGateway
		if cross {
			v.path = PathUnreachable
			return true
		}
		return false // same domain: VXLAN may still get through
	case cross && (a.wanKey || b.wanKey || a.wanBad || b.wanBad):
		v.why, v.who, v.link = whyCrossDomain, nil, nil
		v.path, v.wan, v.wanWho = PathUnreachable, wanNoKey, a
		if a.wanKey {
			v.wanWho = b
		}
		return true
	}
	return false
}

// pickGateway chooses the relay of a pair where neither side has a public
// endpoint: rendezvous hashing of the unordered pair over the usable
// gateways, so both sides pick the same one and losing a gateway moves
// only its own pairs. A gateway is skipped when it is dead or isolated, or
// when WAN probes from either side to it failed (each agent knows its own).
func (p *Plan) pickGateway(a, b *nodeEntry) *nodeEntry {
	var best *nodeEntry
	var bestScore uint64
	for _, gi := range p.gateways {
		g := p.nodes[gi]
		if p.gatewayUnusable(a, b, g) != gwUsable {
			continue
		}
		if s := rendezvous(a.facts.Name, b.facts.Name, g.facts.Name); best == nil || s > bestScore {
			best, bestScore = g, s
		}
	}
	return best
}

type gwState uint8

const (
	gwUsable gwState = iota
	gwSelf
	gwIsolated
	gwWANDown
)

func (p *Plan) gatewayUnusable(a, b, g *nodeEntry) gwState {
	switch {
	case g == a || g == b:
		return gwSelf
	// Not memberlist liveness: gossip runs on the private underlay, which
	// the internet does not route and a leased-line cut takes away, so a
	// live gateway looks dead exactly when it is needed. The 100 ms WAN
	// probes through the tunnel decide (gwWANDown).
	case g.own.isolated():
		return gwIsolated
	case p.wanDown(a, g) != nil || p.wanDown(b, g) != nil:
		return gwWANDown
	}
	return gwUsable
}

// wanDown is the failed WAN path from observer o to g, or nil.
func (p *Plan) wanDown(o, g *nodeEntry) *linkSnap {
	if len(p.wanExc) == 0 {
		return nil
	}
	if s := p.wanExc[wanKey{o.facts.Name, g.facts.Name}]; !s.up() {
		return s
	}
	return nil
}

// rendezvous is the score of gateway g for the unordered pair (a, b):
// FNV-1a, the same on every node.
func rendezvous(a, b, g string) uint64 {
	if b < a {
		a, b = b, a
	}
	h := uint64(14695981039346656037)
	for _, s := range [3]string{a, b, g} {
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= 1099511628211
		}
		h ^= 0xff // separator: ("ab","c") and ("a","bc") differ
		h *= 1099511628211
	}
	// FNV's low-entropy tail: mix so that nearby names spread.
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

func (p *Plan) reason(a, b *nodeEntry, v verdict) string {
	s := p.pathReason(a, b, v)
	if v.why == whyIsolated || v.why == whyIncomplete {
		return s
	}
	for _, e := range [2]*nodeEntry{a, b} {
		if !e.alive {
			return fmt.Sprintf("node IPs of %s unreachable since %s (gossip): its agent may be restarting, so the path stays: %s", e.facts.Name, clock(e.liveSince), s)
		}
	}
	return s
}

func (p *Plan) pathReason(a, b *nodeEntry, v verdict) string {
	pools := a.facts.Pool + "↔" + b.facts.Pool
	var s string
	switch v.why {
	case whyIsolated:
		return fmt.Sprintf("%s is isolated (%s): %s → unreachable", v.who.facts.Name, v.who.own.code, v.who.own.reason)
	case whyIncomplete:
		return fmt.Sprintf("%s facts incomplete (missing %s): no address to route to → unreachable", v.who.facts.Name, strings.Join(v.who.baseMiss, ", "))
	case whyNativeHealthy:
		if a.pool == b.pool {
			s = "same pool " + a.facts.Pool
		} else {
			s = "pools " + pools + " share the VPC routing domain (cloud/leased line)"
		}
		if v.link != nil {
			return s + "; native pod path healthy again since " + clock(v.link.healthySince) + " → native"
		}
		return s + "; native pod path healthy → native"
	case whyLinkDown:
		s = fmt.Sprintf("native pod path %s probe failed %d× since %s", pools, v.link.fails, clock(v.link.since))
	case whyLinkRecovering:
		s = fmt.Sprintf("native pod path %s healthy since %s, held down until %s (failed %d× since %s)",
			pools, clock(v.link.healthySince), clock(v.link.healthySince.Add(p.cfg.HoldDown)), v.link.fails, clock(v.link.since))
	case whyNodeDown:
		s = fmt.Sprintf("native pod path to %s probe failed %d× since %s while pools %s stay healthy", v.who.facts.Name, v.link.fails, clock(v.link.since), pools)
	case whyNodeRecovering:
		s = fmt.Sprintf("native pod path to %s healthy since %s, held down until %s (failed %d× since %s)",
			v.who.facts.Name, clock(v.link.healthySince), clock(v.link.healthySince.Add(p.cfg.HoldDown)), v.link.fails, clock(v.link.since))
	case whyOverlayNode:
		s = fmt.Sprintf("%s is %s (%s)", v.who.facts.Name, v.who.datapath, v.who.dpReason)
	case whyNativeFactsMissing:
		s = fmt.Sprintf("%s facts incomplete for native (missing %s): never assumed native", v.who.facts.Name, strings.Join(v.who.natMiss, ", "))
	case whyNoInterconnect:
		s = fmt.Sprintf("no native interconnect between pools %s (%s is %s/%s)", pools, v.who.facts.Name, v.who.facts.Location, orUnknown(string(v.who.facts.Interconnect)))
	case whyCrossDomain:
		s = domainText(a, b)
	}
	switch v.wan {
	case wanDirect, wanRelay:
		if v.why != whyCrossDomain {
			s += " (VXLAN would follow it)"
		}
		return s + " " + p.wanText(a, b, v)
	case wanNoKey:
		return fmt.Sprintf("%s; %s %s, so VXLAN cannot cross and the WAN is not possible → unreachable", s, v.wanWho.facts.Name, lacksKey(v.wanWho))
	case wanNoGateway:
		s += "; " + p.noGatewayText(a, b)
		if v.path == PathUnreachable && v.why == whyCrossDomain {
			return s + " → unreachable"
		}
	}
	if v.path == PathUnreachable {
		return fmt.Sprintf("%s; %s lacks overlay facts (missing %s) → unreachable", s, v.who.facts.Name, strings.Join(v.who.ovlMiss, ", "))
	}
	return s + "; node IPs reachable → vxlan"
}

func domainText(a, b *nodeEntry) string {
	var which string
	switch {
	case a.private && !b.private:
		which = b.facts.Pool + " is " + orUnknown(string(b.facts.Interconnect))
	case b.private && !a.private:
		which = a.facts.Pool + " is " + orUnknown(string(a.facts.Interconnect))
	default:
		which = "each internet pool is its own"
	}
	return fmt.Sprintf("pools %s and %s are different routing domains (%s)", a.facts.Pool, b.facts.Pool, which)
}

func lacksKey(e *nodeEntry) string {
	if e.facts.WANPublicKey != "" && !e.wanKey {
		return "has an invalid " + AnnotationWANPublicKey + " (" + checkWANKey(e.facts.WANPublicKey).Error() + ")"
	}
	return "lacks " + AnnotationWANPublicKey
}

// wanText is the WAN half of a reason, as seen from a.
func (p *Plan) wanText(a, b *nodeEntry, v verdict) string {
	if v.wan == wanRelay {
		s := "→ wan via gateway " + v.relay.facts.Name + " (neither has a public endpoint"
		if skipped := p.skippedGateways(a, b, v.relay); skipped != "" {
			s += "; skipped " + skipped
		}
		return s + ")"
	}
	if b.wanEP {
		return "→ wan direct to " + b.facts.PublicEndpoint.String()
	}
	return fmt.Sprintf("→ wan direct: %s has no public endpoint and initiates to %s's %s", b.facts.Name, a.facts.Name, a.facts.PublicEndpoint)
}

// skippedGateways names the gateways rendezvous prefers over chosen for
// this pair but could not use, with why.
func (p *Plan) skippedGateways(a, b, chosen *nodeEntry) string {
	best := rendezvous(a.facts.Name, b.facts.Name, chosen.facts.Name)
	var out []string
	for _, gi := range p.gateways {
		g := p.nodes[gi]
		if g == chosen || rendezvous(a.facts.Name, b.facts.Name, g.facts.Name) < best {
			continue
		}
		if st := p.gatewayUnusable(a, b, g); st != gwUsable && st != gwSelf {
			out = append(out, p.gatewayWhy(a, b, g, st))
		}
	}
	return strings.Join(out, ", ")
}

func (p *Plan) noGatewayText(a, b *nodeEntry) string {
	if len(p.gateways) == 0 {
		return "neither has a public endpoint and no node is a WAN gateway (" + LabelWANGateway + "=true with a public endpoint and a WAN key)"
	}
	var out []string
	for i, gi := range p.gateways {
		if i == 3 {
			out = append(out, fmt.Sprintf("%d more", len(p.gateways)-3))
			break
		}
		g := p.nodes[gi]
		if st := p.gatewayUnusable(a, b, g); st != gwUsable {
			out = append(out, p.gatewayWhy(a, b, g, st))
		}
	}
	return "neither has a public endpoint and no WAN gateway is usable (" + strings.Join(out, ", ") + ")"
}

func (p *Plan) gatewayWhy(a, b, g *nodeEntry, st gwState) string {
	name := g.facts.Name
	switch st {
	case gwSelf:
		return name + " is an end of the pair"
	case gwIsolated:
		return fmt.Sprintf("%s: isolated (%s)", name, g.own.code)
	case gwWANDown:
		o, s := a, p.wanDown(a, g)
		if s == nil {
			o, s = b, p.wanDown(b, g)
		}
		if s.phase == linkRecovering {
			return fmt.Sprintf("%s: WAN probes from %s healthy since %s, held down until %s", name, o.facts.Name, clock(s.healthySince), clock(s.healthySince.Add(p.cfg.wanHoldDown())))
		}
		return fmt.Sprintf("%s: WAN probes from %s failed %d× since %s", name, o.facts.Name, s.fails, clock(s.since))
	}
	return name
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "start"
	}
	return t.UTC().Format("15:04:05.000")
}

func (p *Plan) program(a, b *nodeEntry) PeerProgram {
	v := p.verdictTo(a, b)
	pp := PeerProgram{Peer: b.facts.Name, Path: v.path, Reason: p.reason(a, b, v)}
	switch v.path {
	case PathNative:
		pp.PodPrefixes = slices.Clone(b.pods)
		pp.NextHop = b.facts.Underlay()
	case PathVXLAN:
		pp.PodPrefixes = slices.Clone(b.pods)
		pp.VTEP = b.facts.Underlay()
		pp.VTEPMAC = b.facts.VTEPMAC
		pp.VTEPPort = b.facts.VTEPPort
	case PathWAN:
		pp.PodPrefixes = slices.Clone(b.pods)
		if v.relay != nil {
			pp.Relay = v.relay.facts.Name
		}
	}
	// The WireGuard peer itself: on the WAN path, and as a standby towards
	// every other pool (and between gateways and everyone, for relays) so
	// that a failover moves routes, not handshakes.
	if b.wanKey && (v.path == PathWAN || (v.path != PathUnreachable && (a.pool != b.pool || a.gateway || b.gateway))) {
		pp.WANPublicKey = b.facts.WANPublicKey
		pp.WANEndpoint = b.endpoint()
	}
	return pp
}

// PeerOf is what node local programs for peer.
func (p *Plan) PeerOf(local, peer string) (PeerProgram, bool) {
	ia, oka := p.index[local]
	ib, okb := p.index[peer]
	if !oka || !okb || local == peer {
		return PeerProgram{}, false
	}
	return p.program(p.nodes[ia], p.nodes[ib]), true
}

// PeersOf lists what node local programs for every other node, sorted by
// peer name. It is O(nodes).
func (p *Plan) PeersOf(local string) []PeerProgram {
	ia, ok := p.index[local]
	if !ok {
		return nil
	}
	out := make([]PeerProgram, 0, len(p.nodes)-1)
	for ib, b := range p.nodes {
		if ib != ia {
			out = append(out, p.program(p.nodes[ia], b))
		}
	}
	return out
}

// Pairs calls fn for every ordered pair in name order until fn returns
// false. It is O(nodes²): for people and small clusters.
func (p *Plan) Pairs(fn func(PairPath) bool) {
	for _, a := range p.nodes {
		for _, b := range p.nodes {
			if a == b {
				continue
			}
			v := p.verdict(a, b)
			if !fn(PairPath{From: a.facts.Name, To: b.facts.Name, Path: v.path, Reason: p.reason(a, b, v)}) {
				return
			}
		}
	}
}

// Counts is the number of ordered pairs per path, computed per class of
// equivalent nodes, so it is cheap at 15,000 nodes.
func (p *Plan) Counts() map[Path]int {
	type class struct {
		pool                                                    int
		base, ovl, nat, nativeOK, private, alive, exc, isolated bool
		wanKey, wanEP, wanBad                                   bool
		dp                                                      Datapath
		// solo: nodes observing failed WAN paths decide relays from their
		// own observations, so each is a class of its own (there are few).
		solo int
	}
	observers := map[string]bool{}
	for k, s := range p.wanExc {
		if !s.up() {
			observers[k[0]] = true
		}
	}
	groups := map[class]struct {
		rep *nodeEntry
		n   int
	}{}
	for i, e := range p.nodes {
		k := class{e.pool, len(e.baseMiss) == 0, len(e.ovlMiss) == 0, len(e.natMiss) == 0, e.nativeOK, e.private, e.alive, !p.exc[e.facts.Name].up(), e.own.isolated(),
			e.wanKey, e.wanEP, e.wanBad, e.datapath, 0}
		if observers[e.facts.Name] {
			k.solo = i + 1
		}
		g := groups[k]
		if g.rep == nil {
			g.rep = e
		}
		g.n++
		groups[k] = g
	}
	out := map[Path]int{}
	for ka, ga := range groups {
		for kb, gb := range groups {
			n := ga.n * gb.n
			if ka == kb {
				n = ga.n * (ga.n - 1)
			}
			if n > 0 {
				out[p.verdict(ga.rep, gb.rep).path] += n
			}
		}
	}
	return out
}

// build makes a plan from entries and link trackers.
func build(cfg Config, now time.Time, entries []*nodeEntry, trackers map[poolPair]*tracker, nodeTrackers map[string]*tracker, wanTrackers map[wanKey]*tracker) *Plan {
	sort.Slice(entries, func(i, j int) bool { return entries[i].facts.Name < entries[j].facts.Name })
	p := &Plan{cfg: cfg, now: now, nodes: entries, index: make(map[string]int, len(entries)), poolIndex: map[string]int{}}
	for i, e := range entries {
		p.index[e.facts.Name] = i
		if e.facts.Pool != "" {
			if _, ok := p.poolIndex[e.facts.Pool]; !ok {
				p.poolIndex[e.facts.Pool] = 0
				p.pools = append(p.pools, e.facts.Pool)
			}
		}
	}
	sort.Strings(p.pools)
	for i, name := range p.pools {
		p.poolIndex[name] = i
	}
	p.members = make([][]int, len(p.pools))
	for i, e := range entries {
		if e.facts.Pool == "" {
			e.pool = -1
			continue
		}
		e.pool = p.poolIndex[e.facts.Pool]
		p.members[e.pool] = append(p.members[e.pool], i)
	}
	p.links = make([][]*linkSnap, len(p.pools))
	for i := range p.links {
		p.links[i] = make([]*linkSnap, len(p.pools))
	}
	for k, t := range trackers {
		ia, oka := p.poolIndex[k[0]]
		ib, okb := p.poolIndex[k[1]]
		if oka && okb {
			s := t.snap()
			p.links[ia][ib], p.links[ib][ia] = s, s
		}
	}
	p.exc = map[string]*linkSnap{}
	for name, t := range nodeTrackers {
		if _, ok := p.index[name]; ok && t.phase != linkUp {
			p.exc[name] = t.snap()
		}
	}
	p.wanExc = map[wanKey]*linkSnap{}
	for k, t := range wanTrackers {
		_, oka := p.index[k[0]]
		_, okb := p.index[k[1]]
		if oka && okb && t.phase != linkUp {
			p.wanExc[k] = t.snap()
		}
	}
	p.findGateways()
	return p
}

// findGateways lists the gateway nodes (O(nodes)). A gateway whose WAN key
// or public endpoint another node also publishes is left out: one of the
// two is misconfigured (or lying), the WAN transport refuses a key given
// twice, and the pairs relayed through it would be lost.
func (p *Plan) findGateways() {
	p.gateways = nil
	var keys map[string]int
	var eps map[netip.AddrPort]int
	for i, e := range p.nodes {
		if !e.gateway {
			continue
		}
		if keys == nil {
			keys, eps = make(map[string]int, len(p.nodes)), map[netip.AddrPort]int{}
			for _, o := range p.nodes {
				if o.facts.WANPublicKey != "" {
					keys[o.facts.WANPublicKey]++
				}
				if o.facts.PublicEndpoint.IsValid() {
					eps[o.facts.PublicEndpoint]++
				}
			}
		}
		if keys[e.facts.WANPublicKey] == 1 && eps[e.facts.PublicEndpoint] == 1 {
			p.gateways = append(p.gateways, i)
		}
	}
}

// withWAN returns a copy of p with the failed WAN path k set (nil: none).
func (p *Plan) withWAN(k wanKey, s *linkSnap) *Plan {
	q := *p
	q.wanExc = withSnap(p.wanExc, k, s)
	return &q
}

// withExc returns a copy of p with node name's exception set (nil: none).
func (p *Plan) withExc(name string, s *linkSnap) *Plan {
	q := *p
	q.exc = withSnap(p.exc, name, s)
	return &q
}

// withSnap copies m with k set to s, or removed when s is nil: plans share
// their maps, so every change writes a new one.
func withSnap[K comparable](m map[K]*linkSnap, k K, s *linkSnap) map[K]*linkSnap {
	out := make(map[K]*linkSnap, len(m)+1)
	for kk, v := range m {
		out[kk] = v
	}
	if s == nil {
		delete(out, k)
	} else {
		out[k] = s
	}
	return out
}

// withLink returns a copy of p sharing everything but the link table.
func (p *Plan) withLink(k poolPair, s *linkSnap) *Plan {
	ia, oka := p.poolIndex[k[0]]
	ib, okb := p.poolIndex[k[1]]
	if !oka || !okb {
		return p
	}
	// Copy only the two rows that change: O(pools), not O(pools²).
	q := *p
	q.links = slices.Clone(p.links)
	q.links[ia] = slices.Clone(p.links[ia])
	if ib != ia {
		q.links[ib] = slices.Clone(p.links[ib])
	}
	q.links[ia][ib], q.links[ib][ia] = s, s
	return &q
}

// withEntries returns a copy of p with the given nodes replaced; their
// pools must not change.
func (p *Plan) withEntries(repl map[int]*nodeEntry) *Plan {
	q := *p
	q.nodes = slices.Clone(p.nodes)
	regate := false
	for i, e := range repl {
		e.pool = p.nodes[i].pool
		regate = regate || e.gateway != p.nodes[i].gateway || e.facts.WANPublicKey != p.nodes[i].facts.WANPublicKey || e.facts.PublicEndpoint != p.nodes[i].facts.PublicEndpoint
		q.nodes[i] = e
	}
	if regate {
		q.findGateways()
	}
	return &q
}

// withEntry returns a copy of p with node i replaced; the pool must not change.
func (p *Plan) withEntry(i int, e *nodeEntry) *Plan {
	q := *p
	q.nodes = slices.Clone(p.nodes)
	e.pool = p.nodes[i].pool
	q.nodes[i] = e
	if e.gateway != p.nodes[i].gateway || e.facts.WANPublicKey != p.nodes[i].facts.WANPublicKey || e.facts.PublicEndpoint != p.nodes[i].facts.PublicEndpoint {
		q.findGateways()
	}
	return &q
}

// RoleFor picks the datapath a node builds, from its declared facts and
// capabilities. A node's pod addresses are what its role hands out, so they
// do not exist yet when the role is chosen and are not required here; pairs
// towards the node still never assume native until they are published.
func RoleFor(f NodeFacts) (Datapath, string) {
	var miss []string
	for _, m := range f.missingBase() {
		if !strings.Contains(m, AnnotationPodCIDR) {
			miss = append(miss, m)
		}
	}
	return chooseDatapath(&f, miss)
}
