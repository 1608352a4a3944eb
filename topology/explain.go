package topology

// PairInfo is a pair's path plus whether a native path exists in principle
// but has failed (drawn dashed in graphs).
type PairInfo struct {
	PairPath
	NativeFailed bool `json:"nativeFailed,omitempty"`
	// Relay is the gateway of a relayed wan pair.
	Relay string `json:"relay,omitempty"`
}

// Pair is Path with NativeFailed.
func (p *Plan) Pair(a, b string) (PairInfo, bool) {
	ia, oka := p.index[a]
	ib, okb := p.index[b]
	if !oka || !okb || a == b {
		return PairInfo{}, false
	}
	ea, eb := p.nodes[ia], p.nodes[ib]
	v := p.verdict(ea, eb)
	pi := PairInfo{PairPath: PairPath{From: a, To: b, Path: v.path, Reason: p.reason(ea, eb, v)},
		NativeFailed: v.why == whyLinkDown || v.why == whyLinkRecovering || v.why == whyNodeDown || v.why == whyNodeRecovering}
	if v.path == PathWAN && v.relay != nil {
		pi.Relay = v.relay.facts.Name
	}
	return pi, true
}
