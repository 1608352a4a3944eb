package bpf

import (
	"strings"
	"testing"

	"github.com/google/nftables/expr"

	"github.com/strata-net/strata/cni/wire"
)

// rules makes a chain's rule loader.
func rules(rs ...[]expr.Any) func() ([][]expr.Any, error) {
	return func() ([][]expr.Any, error) { return rs, nil }
}

func TestForwardFilters(t *testing.T) {
	accept := []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}
	drop := []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
	jump := func(c string) []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: c}} }
	for _, c := range []struct {
		name   string
		tables []nfTable
		want   string // substring of the one filter's Why; "" for none
	}{
		{"empty", nil, ""},
		{"accepting forward chain", []nfTable{{family: "inet", name: "fw", chains: []nfChain{{name: "forward", forward: true, rules: rules(accept)}}}}, ""},
		{"policy drop", []nfTable{{family: "inet", name: "fw", chains: []nfChain{{name: "forward", forward: true, drop: true}}}}, "policy drop"},
		{"drop rule", []nfTable{{family: "ip", name: "fw", chains: []nfChain{{name: "forward", forward: true, rules: rules(accept, drop)}}}}, "rule 2 of chain forward drops"},
		{"reject behind a jump (a NetworkPolicy enforcer)", []nfTable{{family: "ip", name: "filter", chains: []nfChain{
			{name: "FORWARD", forward: true, rules: rules(jump("POLICY"))},
			{name: "POLICY", rules: rules([]expr.Any{&expr.Reject{}})},
		}}}, "chain POLICY rejects"},
		{"iptables-nft -j REJECT", []nfTable{{family: "ip", name: "filter", chains: []nfChain{{name: "FORWARD", forward: true, rules: rules([]expr.Any{&expr.Target{Name: "REJECT"}})}}}}, "-j REJECT"},
		{"drop outside forward", []nfTable{{family: "inet", name: "fw", chains: []nfChain{{name: "input", rules: rules(drop)}}}}, ""},
		{"jump loop", []nfTable{{family: "ip", name: "t", chains: []nfChain{
			{name: "FORWARD", forward: true, rules: rules(jump("a"))},
			{name: "a", rules: rules(jump("b"))}, {name: "b", rules: rules(jump("a"))},
		}}}, ""},
		{"strata-cni's metadata table is ignored", []nfTable{{family: "inet", name: wire.MetadataTable, chains: []nfChain{{name: "pods", forward: true, rules: rules(drop)}}}}, ""},
		{"kube-proxy nftables mode is ignored", []nfTable{{family: "ip", name: "kube-proxy", chains: []nfChain{{name: "filter-forward", forward: true, rules: rules([]expr.Any{&expr.Reject{}})}}}}, ""},
		{"kube-proxy iptables mode is ignored", []nfTable{{family: "ip", name: "filter", chains: []nfChain{
			{name: "FORWARD", forward: true, rules: rules(jump("KUBE-FORWARD"), jump("KUBE-PROXY-FIREWALL"))},
			{name: "KUBE-FORWARD", rules: rules(drop)}, {name: "KUBE-PROXY-FIREWALL", rules: rules(drop)},
		}}}, ""},
	} {
		got, err := forwardFilters(c.tables, DefaultForwardIgnore)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case c.want == "" && len(got) != 0:
			t.Errorf("%s: found %v, want none", c.name, got)
		case c.want != "" && (len(got) != 1 || !strings.Contains(got[0].Why, c.want)):
			t.Errorf("%s: found %v, want one whose reason has %q", c.name, got, c.want)
		}
	}
}
