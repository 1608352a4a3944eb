package topology

import (
	"slices"
	"sort"
)

// PeerChange is one peer whose programming on node Local must change. Old or
// New has an empty Path when the peer (or Local) is absent from that plan.
type PeerChange struct {
	Local string      `json:"local"`
	Old   PeerProgram `json:"old"`
	New   PeerProgram `json:"new"`
}

// diffCtx holds what changed between two plans, computed once.
type diffCtx struct {
	old, new     *Plan
	changedNodes map[string]bool // entry replaced, added or removed
	all          bool            // every peer of every node is a candidate
}

func newDiffCtx(old, new *Plan) *diffCtx {
	if old == nil {
		old = build(new.cfg, new.now, nil, nil, nil, nil)
	}
	c := &diffCtx{old: old, new: new, changedNodes: map[string]bool{}}
	// A failed WAN path changes the relays its observer picks: for the
	// observer every peer is a candidate, for others the observer is.
	for k, x := range new.wanExc {
		if !x.equal(old.wanExc[k]) {
			c.changedNodes[k[0]] = true
		}
	}
	for k, x := range old.wanExc {
		if !x.equal(new.wanExc[k]) {
			c.changedNodes[k[0]] = true
		}
	}
	for name, x := range new.exc {
		if !x.equal(old.exc[name]) {
			c.changedNodes[name] = true
		}
	}
	for name, x := range old.exc {
		if !x.equal(new.exc[name]) {
			c.changedNodes[name] = true
		}
	}
	// Entries are immutable and shared between plans, so pointer equality
	// finds changes; when the tables are the same slice nothing changed.
	if len(old.nodes) == len(new.nodes) && (len(old.nodes) == 0 || &old.nodes[0] == &new.nodes[0]) {
		return c
	}
	for name, i := range new.index {
		if j, ok := old.index[name]; !ok || old.nodes[j] != new.nodes[i] {
			c.changedNodes[name] = true
		}
	}
	for name := range old.index {
		if _, ok := new.index[name]; !ok {
			c.changedNodes[name] = true
		}
	}
	// A gateway that changed (died, came back, lost its key) can move any
	// relayed pair: every peer of every node is a candidate.
	for name := range c.changedNodes {
		if isGateway(old, name) || isGateway(new, name) {
			c.all = true
			break
		}
	}
	// The usable gateway set can also change through another node (one
	// that now publishes a gateway's key).
	if !c.all && !slices.EqualFunc(old.gateways, new.gateways, func(i, j int) bool { return old.nodes[i].facts.Name == new.nodes[j].facts.Name }) {
		c.all = true
	}
	return c
}

func isGateway(p *Plan, name string) bool {
	i, ok := p.index[name]
	return ok && p.nodes[i].gateway
}

func (p *Plan) linkByName(a, b string) *linkSnap {
	ia, oka := p.poolIndex[a]
	ib, okb := p.poolIndex[b]
	if !oka || !okb {
		return nil
	}
	return p.link(ia, ib)
}

func (p *Plan) peerProgram(local, peer string) PeerProgram {
	pp, _ := p.PeerOf(local, peer)
	return pp
}

// peers lists the changes on one local node.
func (c *diffCtx) peers(local string) []PeerChange {
	var cands map[string]bool
	if c.all || c.changedNodes[local] {
		cands = map[string]bool{}
		for n := range c.old.index {
			cands[n] = true
		}
		for n := range c.new.index {
			cands[n] = true
		}
	} else {
		cands = c.changedNodes
		var pool string
		if i, ok := c.new.index[local]; ok {
			pool = c.new.nodes[i].facts.Pool
		}
		if pool != "" {
			for qi, q := range c.new.pools {
				if c.old.linkByName(pool, q).equal(c.new.linkByName(pool, q)) {
					continue
				}
				if len(cands) == len(c.changedNodes) {
					cands = cloneSet(c.changedNodes)
				}
				for _, m := range c.new.members[qi] {
					cands[c.new.nodes[m].facts.Name] = true
				}
			}
		}
	}
	var out []PeerChange
	for peer := range cands {
		if peer == local {
			continue
		}
		o, n := c.old.peerProgram(local, peer), c.new.peerProgram(local, peer)
		if !o.SameProgramming(n) {
			out = append(out, PeerChange{Local: local, Old: o, New: n})
		}
	}
	sortChanges(out)
	return out
}

func cloneSet(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m)+64)
	for k := range m {
		out[k] = true
	}
	return out
}

// DiffPeers lists exactly the peers whose programming on node local differs
// between old and new (old may be nil: everything is new). It looks only at
// nodes whose entries changed and at pools whose link to local's pool changed.
func DiffPeers(old, new *Plan, local string) []PeerChange {
	return newDiffCtx(old, new).peers(local)
}

// Diff lists every (local, peer) whose programming differs between old and
// new, sorted by local then peer. From a nil old plan it is O(nodes²); agents
// use DiffPeers for themselves.
func Diff(old, new *Plan) []PeerChange {
	c := newDiffCtx(old, new)
	locals := map[string]bool{}
	for n := range c.old.index {
		locals[n] = true
	}
	for n := range c.new.index {
		locals[n] = true
	}
	var out []PeerChange
	for l := range locals {
		out = append(out, c.peers(l)...)
	}
	sortChanges(out)
	return out
}

func sortChanges(cs []PeerChange) {
	slicesSortFunc(cs)
}

func peerName(c PeerChange) string {
	if c.New.Peer != "" {
		return c.New.Peer
	}
	return c.Old.Peer
}

func slicesSortFunc(cs []PeerChange) {
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].Local != cs[j].Local {
			return cs[i].Local < cs[j].Local
		}
		return peerName(cs[i]) < peerName(cs[j])
	})
}
