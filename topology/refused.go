package topology

// Refused lists the nodes with refused pod prefix claims (isolated, or with
// withheld prefixes), sorted by name. It is O(nodes) without copying the
// others' facts: for metrics and status on every programming.
func (p *Plan) Refused() []NodePlan {
	var out []NodePlan
	for _, e := range p.nodes {
		if e.own != nil {
			out = append(out, p.nodePlan(e))
		}
	}
	return out
}
