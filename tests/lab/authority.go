package lab

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/client-go/kubernetes"
)

// authorityArgs are the cluster-wide ownership settings every agent gets, as
// a DaemonSet passes them from the ConfigMap (docs/trust.md): the pod
// vSwitch CIDRs from the cloud description, and every node's subnet as
// reserved.
func (l *Lab) authorityArgs() []string {
	return authorityArgs(l.spec)
}

func authorityArgs(s *Spec) []string {
	var cloud, reserved []string
	if s.Cloud != nil {
		for _, id := range s.Cloud.PodVSwitches {
			for _, v := range s.Cloud.VSwitches {
				if v.ID == id {
					cloud = append(cloud, v.CIDR)
				}
			}
		}
	}
	for _, n := range s.Nodes {
		if sub := n.Addr.Masked().String(); n.Addr.IsValid() && !slices.Contains(reserved, sub) && !inAny(n.Addr.Masked(), cloud) {
			reserved = append(reserved, sub)
		}
	}
	var out []string
	if len(cloud) > 0 {
		out = append(out, "--cloud-pod-cidrs", strings.Join(cloud, ","))
	}
	if len(reserved) > 0 {
		out = append(out, "--reserved-cidrs", strings.Join(reserved, ","))
	}
	return out
}

// inAny: a node subnet that is also a pod vSwitch is not reserved (pods and
// nodes share it).
func inAny(p netip.Prefix, cidrs []string) bool {
	for _, c := range cidrs {
		if q, err := netip.ParsePrefix(c); err == nil && q.Overlaps(p) {
			return true
		}
	}
	return false
}

// Refused is what one node's agent refuses of another node's pod prefix
// claims (its /status "refused"): the isolation code, or "withheld".
type Refused struct {
	Node   string
	Code   string
	Reason string
}

// RefusedClaims asks node's agent which nodes' claims it refuses.
func (l *Lab) RefusedClaims(ctx context.Context, node string) ([]Refused, error) {
	st, err := l.agentStatus(ctx, node)
	if err != nil {
		return nil, err
	}
	var out []Refused
	for _, r := range st.Refused {
		switch {
		case r.Isolated != "":
			out = append(out, Refused{Node: r.Name, Code: r.Isolated, Reason: r.IsolatedReason})
		case len(r.Withheld) > 0:
			out = append(out, Refused{Node: r.Name, Code: "withheld", Reason: r.Withheld[0].Reason})
		}
	}
	return out, nil
}

// AdminClient is a cluster-admin client of the lab's API server (reached
// through the management network), for tests that create objects.
func (l *Lab) AdminClient() (kubernetes.Interface, error) { return l.client() }
