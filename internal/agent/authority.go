package agent

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/strata-net/strata/topology"
)

// The pod prefix ownership authority (docs/trust.md) comes only from
// sources a node cannot write for itself: the API server's Node.spec and
// creation time, and this agent's own configuration (--cloud-pod-cidrs,
// --reserved-cidrs) and underlay. It is cached on disk beside the peers, so
// a restart while the API server is away keeps checking claims the same way.

// nodeAllocation is what the API server allocated to a node: its
// spec.podCIDRs (spec.podCIDR on old clusters). A malformed entry counts as
// no allocation: the node's claims are then refused with the reason, never
// widened.
func nodeAllocation(n *corev1.Node) []netip.Prefix {
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	return parseAllocation(cidrs)
}

func parseAllocation(cidrs []string) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil || p != p.Masked() {
			return nil
		}
		out = append(out, p)
	}
	return out
}

// baseAuthority is the cluster-wide part: the cloud pod vSwitch CIDRs and
// the underlay subnets no pod prefix may overlap (configured, plus this
// node's own underlay subnets, which it knows first-hand).
func (a *Agent) baseAuthority(ul underlay) topology.Authority {
	reserved := slices.Clone(a.cfg.ReservedCIDRs)
	for _, s := range ul.subnets {
		if s = s.Masked(); !slices.Contains(reserved, s) {
			reserved = append(reserved, s)
		}
	}
	return topology.Authority{CloudPodCIDRs: slices.Clone(a.cfg.CloudPodCIDRs), Reserved: reserved,
		Allocations: map[string][]netip.Prefix{}, Joined: map[string]time.Time{}}
}

func (a *Agent) authorityPath() string { return filepath.Join(a.cfg.StateDir, "authority.json") }

// cachedAuthority is the per-node part of the authority as last seen from
// the API server.
type cachedAuthority struct {
	Allocations map[string][]netip.Prefix `json:"allocations"`
	Joined      map[string]time.Time      `json:"joined"`
}

// saveAuthority caches the per-node allocations and join times (atomic
// write, 0600).
func (a *Agent) saveAuthority() error {
	auth := a.decider.Authority()
	b, err := json.Marshal(cachedAuthority{Allocations: auth.Allocations, Joined: auth.Joined})
	if err != nil {
		return err
	}
	tmp := a.authorityPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("cache the ownership authority in %s: %w", tmp, err)
	}
	return os.Rename(tmp, a.authorityPath())
}

// loadAuthority reads the cached per-node authority. A missing file is
// fine (first start); a corrupt one is an error the caller reports: the
// nodes it covered then have no allocation and are refused until the API
// server is back, which is safe.
func (a *Agent) loadAuthority() (cachedAuthority, error) {
	var c cachedAuthority
	b, err := os.ReadFile(a.authorityPath())
	if os.IsNotExist(err) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return cachedAuthority{}, fmt.Errorf("cached ownership authority %s is corrupt (it is rewritten once the API server answers): %w", a.authorityPath(), err)
	}
	return c, nil
}

// knownNode reports whether gossip may speak for a node: the API server has
// shown it, or it was in the cache this agent started from. Gossip never
// introduces a node (docs/trust.md).
func (a *Agent) knownNode(name string) bool { return a.apiNodes.Has(name) || a.cachedNodes.Has(name) }

// forgetNode drops everything known about a deleted Node, so gossip about
// it is ignored from now on.
func (a *Agent) forgetNode(name string) {
	a.apiNodes.Delete(name)
	a.cachedNodes.Delete(name)
	a.decider.RemoveNode(name)
	a.decider.SetNodeAuthority(name, nil, time.Time{})
}

// allocation is this node's own pod CIDR allocation: from the Node object
// when the API server answered (a NodePool block is written there too),
// else from the cache.
func (n nodeInfo) allocation() []netip.Prefix {
	if n.obj != nil {
		return nodeAllocation(n.obj)
	}
	if len(n.PodCIDRs) > 0 {
		return parseAllocation(n.PodCIDRs)
	}
	if n.PodCIDR != "" {
		return parseAllocation([]string{n.PodCIDR})
	}
	return nil
}
