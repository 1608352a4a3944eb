package topology

// View is a plan as a document, for the agent's status endpoint and
// `strata topology -o json`.
type View struct {
	Now    string        `json:"now,omitempty"`
	Nodes  []NodePlan    `json:"nodes"`
	Counts map[Path]int  `json:"counts"`
	Pairs  []PairPath    `json:"pairs,omitempty"` // only when the plan has at most maxPairs ordered pairs
	Peers  []PeerProgram `json:"peers,omitempty"` // what Local programs, when Local is set
	Local  string        `json:"local,omitempty"`
}

// View builds the document. Pairs are listed only when there are at most
// maxPairs ordered pairs (they grow with nodes²); local, when not empty,
// adds what that node programs for each peer.
func (p *Plan) View(local string, maxPairs int) View {
	v := View{Nodes: p.Nodes(), Counts: p.Counts(), Local: local}
	if !p.now.IsZero() {
		v.Now = p.now.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	}
	if n := len(p.nodes); n*(n-1) <= maxPairs {
		p.Pairs(func(pp PairPath) bool { v.Pairs = append(v.Pairs, pp); return true })
	}
	if local != "" {
		v.Peers = p.PeersOf(local)
	}
	return v
}
