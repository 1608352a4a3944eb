package nodepool

import (
	"fmt"
	"maps"
	"strconv"
	"strings"

	"github.com/strata-net/strata/internal/apis/strata/v1alpha1"
	"github.com/strata-net/strata/topology"
)

// Annotations an operator may put on one Node to override its pool's
// profile and the agent's flags for that node. They are distinct from the
// facts the agent publishes (strata.io/vtep-port is the port in use).
const (
	AnnotationVXLANVNI  = "strata.io/vxlan-vni"
	AnnotationVXLANPort = "strata.io/vxlan-port"
	AnnotationLocalASN  = "strata.io/bgp-local-asn"
)

// Built-in defaults, used when no annotation, flag or pool sets a value.
const (
	DefaultVNI       uint32 = 1
	DefaultVXLANPort uint16 = 4789 // IANA
	DefaultLocalASN  uint32 = 64512
)

// Settings are a node's overlay and BGP parameters; a zero field is unset.
type Settings struct {
	VNI      uint32
	Port     uint16
	LocalASN uint32
}

// Profile is what a node's annotations and its NodePool say.
type Profile struct {
	Annotations Settings
	Pool        Settings
}

// ProfileOf parses the override annotations and takes the pool's values
// (pool nil: the node has no NodePool). A malformed annotation is an error
// naming it.
func ProfileOf(annotations map[string]string, pool *v1alpha1.NodePoolSpec) (Profile, error) {
	var p Profile
	parse := func(key string, bits int, lo, hi uint64) (uint64, error) {
		v, ok := annotations[key]
		if !ok {
			return 0, nil
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, bits)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("node annotation %s=%q: want a number %d..%d (or remove it to use the flag or the NodePool)", key, v, lo, hi)
		}
		return n, nil
	}
	vni, err := parse(AnnotationVXLANVNI, 32, 1, 1<<24-1)
	if err != nil {
		return p, err
	}
	port, err := parse(AnnotationVXLANPort, 16, 1, 65535)
	if err != nil {
		return p, err
	}
	asn, err := parse(AnnotationLocalASN, 32, 1, 4294967294)
	if err != nil {
		return p, err
	}
	p.Annotations = Settings{VNI: uint32(vni), Port: uint16(port), LocalASN: uint32(asn)}
	if pool != nil {
		if pool.VXLAN != nil {
			p.Pool.VNI, p.Pool.Port = pool.VXLAN.VNI, pool.VXLAN.Port
		}
		if pool.BGP != nil {
			p.Pool.LocalASN = pool.BGP.LocalASN
		}
	}
	return p, nil
}

// Resolve applies the precedence: node annotation, then a non-zero agent
// flag, then the NodePool, then the built-in default.
func (p Profile) Resolve(flags Settings) Settings {
	return Settings{
		VNI:      first(p.Annotations.VNI, flags.VNI, p.Pool.VNI, DefaultVNI),
		Port:     first(p.Annotations.Port, flags.Port, p.Pool.Port, DefaultVXLANPort),
		LocalASN: first(p.Annotations.LocalASN, flags.LocalASN, p.Pool.LocalASN, DefaultLocalASN),
	}
}

func first[T comparable](vs ...T) T {
	var zero T
	for _, v := range vs {
		if v != zero {
			return v
		}
	}
	return zero
}

// MismatchError is a node whose labels contradict its NodePool.
type MismatchError struct {
	Node, Pool, Label, NodeValue, PoolValue string
}

func (e *MismatchError) Error() string {
	field := strings.TrimPrefix(e.Label, "strata.io/")
	return fmt.Sprintf("node %s is labelled %s=%s but its NodePool %s says %s %s: the node is refused rather than guessed; fix the label (or remove it to take the pool's) or move the node to the right pool",
		e.Node, e.Label, e.NodeValue, e.Pool, field, e.PoolValue)
}

// EffectiveLabels returns the node's labels with strata.io/location and
// strata.io/interconnect taken from its pool where the labels omit them.
// A label that disagrees with the pool is a *MismatchError.
func EffectiveLabels(node string, labels map[string]string, poolName string, pool *v1alpha1.NodePoolSpec) (map[string]string, error) {
	if pool == nil {
		return labels, nil
	}
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	for _, kv := range [][2]string{{topology.LabelLocation, pool.Location}, {topology.LabelInterconnect, pool.Interconnect}} {
		key, want := kv[0], kv[1]
		if want == "" {
			continue
		}
		if got, ok := out[key]; ok && got != want {
			return labels, &MismatchError{Node: node, Pool: poolName, Label: key, NodeValue: got, PoolValue: want}
		}
		out[key] = want
	}
	return out, nil
}
