package bpf

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"

	"github.com/strata-net/strata/api"
	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/nsutil"
)

// Fast-pathed pod packets are redirected at tc ingress and never reach the
// netfilter FORWARD hook. Where forward rules can drop pod traffic (a
// NetworkPolicy enforcer built on iptables or nftables, a host firewall),
// the fast path would silently bypass them, so the agent steps aside while
// such rules exist (docs/bpf.md). This file finds them.

// ForwardFilter is one netfilter base chain on the forward hook that can
// drop, reject or queue forwarded packets (the agent reports it in its API).
type ForwardFilter = api.ForwardFilter

// DefaultForwardIgnore are tables and chains whose forward rules never
// concern pod-to-pod traffic: kube-proxy's (both modes) only reject
// traffic to Services without endpoints and drop conntrack-INVALID
// packets, and Services are not pod prefixes, which the fast path alone
// takes; strata-cni's own metadata table (wire.MetadataTable) drops only
// pods' packets to the metadata service, never a pod prefix. A name is a
// table ("kube-proxy") or "table/chain".
var DefaultForwardIgnore = []string{"kube-proxy", wire.MetadataTable, "filter/KUBE-FORWARD", "filter/KUBE-SERVICES",
	"filter/KUBE-EXTERNAL-SERVICES", "filter/KUBE-NODEPORTS", "filter/KUBE-PROXY-FIREWALL", "filter/KUBE-PROXY-CANARY"}

// nfChain is the part of a chain the check reads. rules are read only
// for the chains the check reaches (a forward base chain and its jump
// targets): kube-proxy's iptables mode has thousands of rules elsewhere.
type nfChain struct {
	name    string
	forward bool // a base chain on the forward hook
	drop    bool // policy drop
	rules   func() ([][]expr.Any, error)
}

type nfTable struct {
	family string
	name   string
	chains []nfChain
}

// forwardFilters is the check over a ruleset.
func forwardFilters(tables []nfTable, ignore []string) ([]ForwardFilter, error) {
	var out []ForwardFilter
	for _, t := range tables {
		if slices.Contains(ignore, t.name) {
			continue
		}
		byName := map[string]*nfChain{}
		for i := range t.chains {
			byName[t.chains[i].name] = &t.chains[i]
		}
		for _, c := range t.chains {
			if !c.forward || slices.Contains(ignore, t.name+"/"+c.name) {
				continue
			}
			why := "policy drop"
			if !c.drop {
				var err error
				if why, err = filteringRule(t.name, &c, byName, ignore, map[string]bool{}); err != nil {
					return nil, fmt.Errorf("%s %s: %w", t.family, t.name, err)
				}
			}
			if why != "" {
				out = append(out, ForwardFilter{Family: t.family, Table: t.name, Chain: c.name, Why: why})
			}
		}
	}
	return out, nil
}

// filteringRule returns where chain c (or a chain it jumps to) drops,
// rejects or queues a packet, or "".
func filteringRule(table string, c *nfChain, byName map[string]*nfChain, ignore []string, seen map[string]bool) (string, error) {
	if seen[c.name] || c.rules == nil {
		return "", nil
	}
	seen[c.name] = true
	rules, err := c.rules()
	if err != nil {
		return "", fmt.Errorf("rules of chain %s: %w", c.name, err)
	}
	for i, r := range rules {
		for _, e := range r {
			switch v := e.(type) {
			case *expr.Verdict:
				switch v.Kind {
				case expr.VerdictDrop:
					return fmt.Sprintf("rule %d of chain %s drops", i+1, c.name), nil
				case expr.VerdictQueue:
					return fmt.Sprintf("rule %d of chain %s queues to user space", i+1, c.name), nil
				case expr.VerdictJump, expr.VerdictGoto:
					if slices.Contains(ignore, table+"/"+v.Chain) {
						continue
					}
					if next, ok := byName[v.Chain]; ok {
						if why, err := filteringRule(table, next, byName, ignore, seen); why != "" || err != nil {
							return why, err
						}
					}
				}
			case *expr.Reject:
				return fmt.Sprintf("rule %d of chain %s rejects", i+1, c.name), nil
			case *expr.Queue:
				return fmt.Sprintf("rule %d of chain %s queues to user space", i+1, c.name), nil
			case *expr.Target: // iptables-nft: -j REJECT, -j NFQUEUE, ...
				if n := strings.ToUpper(v.Name); n == "REJECT" || n == "NFQUEUE" || n == "DROP" {
					return fmt.Sprintf("rule %d of chain %s: -j %s", i+1, c.name, n), nil
				}
			}
		}
	}
	return "", nil
}

// FindForwardFilters reads the netfilter ruleset of the network namespace
// ns (nil for the caller's) and lists the forward-hook chains that
// can drop, reject or queue forwarded packets, skipping ignore. Legacy
// iptables (x_tables) rules cannot be read through nftables: a loaded
// legacy filter table counts as filtering, with that reason.
func FindForwardFilters(ns *nsutil.NS, ignore []string) ([]ForwardFilter, error) {
	var opts []nftables.ConnOption
	if ns != nil {
		h, err := netns.GetFromPath(ns.Path)
		if err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", ns.Path, err)
		}
		defer func() { _ = h.Close() }()
		opts = append(opts, nftables.WithNetNSFd(int(h)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	defer func() { _ = c.CloseLasting() }()
	chains, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("list netfilter chains: %w", err)
	}
	tables := map[string]*nfTable{}
	var order []string
	for _, ch := range chains {
		fam := familyName(ch.Table.Family)
		if fam == "" {
			continue // arp, bridge, netdev: not the IP forward hook
		}
		key := fam + " " + ch.Table.Name
		t, ok := tables[key]
		if !ok {
			t = &nfTable{family: fam, name: ch.Table.Name}
			tables[key] = t
			order = append(order, key)
		}
		nc := nfChain{name: ch.Name, forward: ch.Hooknum != nil && *ch.Hooknum == *nftables.ChainHookForward && ch.Type == nftables.ChainTypeFilter,
			drop: ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop}
		nc.rules = func() ([][]expr.Any, error) {
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				return nil, err
			}
			out := make([][]expr.Any, len(rules))
			for i, r := range rules {
				out[i] = r.Exprs
			}
			return out, nil
		}
		t.chains = append(t.chains, nc)
	}
	list := make([]nfTable, 0, len(order))
	for _, k := range order {
		list = append(list, *tables[k])
	}
	out, err := forwardFilters(list, ignore)
	if err != nil {
		return nil, fmt.Errorf("read netfilter rules: %w", err)
	}
	if legacy, err := legacyFilterLoaded(ns); err == nil && legacy {
		out = append(out, ForwardFilter{Family: "ip", Table: "filter", Chain: "FORWARD",
			Why: "legacy iptables (x_tables) filter table is loaded; its rules cannot be read through nftables, so they are assumed to filter (use iptables-nft to let the agent read them)"})
	}
	return out, nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return ""
}

// legacyFilterLoaded reports whether the x_tables "filter" table exists in
// the namespace (/proc/net/ip_tables_names, which lists only legacy tables).
func legacyFilterLoaded(ns *nsutil.NS) (bool, error) {
	var b []byte
	var err error
	if ns == nil {
		b, err = os.ReadFile("/proc/net/ip_tables_names")
	} else {
		err = ns.Do(func() error {
			var rerr error
			b, rerr = os.ReadFile("/proc/thread-self/net/ip_tables_names")
			return rerr
		})
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // ip_tables not loaded
	}
	if err != nil {
		return false, err
	}
	return slices.Contains(strings.Fields(string(b)), "filter"), nil
}
