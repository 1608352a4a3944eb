package v1alpha1

import (
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// NodePoolsGVR and PodCIDRClaimsGVR are the pool resources
// (deploy/manifests/crds-pool).
var (
	NodePoolsGVR     = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "nodepools"}
	PodCIDRClaimsGVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "podcidrclaims"}
)

// NodePool is the network profile of the nodes whose strata.io/pool label
// names it. Cluster-scoped.
type NodePool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NodePoolSpec   `json:"spec"`
	Status            NodePoolStatus `json:"status,omitempty"`
}

// NodePoolSpec is the profile. The CRD's schema validates every field.
type NodePoolSpec struct {
	// Location is cloud, ens or idc.
	Location string `json:"location"`
	// Interconnect is leased-line or internet ("" for cloud pools).
	Interconnect string `json:"interconnect,omitempty"`
	// PodCIDRs are carved into blocks of NodeMaskSize, one per node whose
	// Node.spec.podCIDR is empty.
	PodCIDRs     []string `json:"podCIDRs,omitempty"`
	NodeMaskSize int      `json:"nodeMaskSize,omitempty"`
	VXLAN        *VXLAN   `json:"vxlan,omitempty"`
	BGP          *PoolBGP `json:"bgp,omitempty"`
}

// VXLAN is the pool's overlay profile; zero fields are unset.
type VXLAN struct {
	VNI  uint32 `json:"vni,omitempty"`
	Port uint16 `json:"port,omitempty"`
	MTU  int    `json:"mtu,omitempty"`
}

// PoolBGP is the pool's BGP profile.
type PoolBGP struct {
	LocalASN uint32 `json:"localASN,omitempty"`
}

// NodePoolStatus is the pool's pod CIDR accounting, written by the agents
// of its nodes when one allocates a block or sees a Node of the pool go.
type NodePoolStatus struct {
	// TotalBlocks is how many blocks of nodeMaskSize spec.podCIDRs hold.
	TotalBlocks int64 `json:"totalBlocks"`
	// AllocatedBlocks are the blocks this pool's nodes hold (PodCIDRClaims).
	AllocatedBlocks int64 `json:"allocatedBlocks"`
	// FreeBlocks can still be handed out: not allocated, and not
	// overlapping another Node's spec.podCIDR or another pool's claim.
	FreeBlocks int64 `json:"freeBlocks"`
	// Conditions: PodCIDRsExhausted.
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Pool condition types and reasons.
const (
	ConditionPodCIDRsExhausted = "PodCIDRsExhausted"
	ReasonNoFreeBlock          = "NoFreeBlock"
	ReasonBlocksFree           = "BlocksFree"
)

// PodCIDRClaim records that one node holds one block of a pool. The API
// server is the arbiter: the claim's name is derived from the pool and the
// block, so of two nodes creating the same claim one gets AlreadyExists.
// Cluster-scoped; the spec is immutable.
type PodCIDRClaim struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              PodCIDRClaimSpec `json:"spec"`
}

// PodCIDRClaimSpec is the held block and its holder.
type PodCIDRClaimSpec struct {
	Pool     string `json:"pool"`
	CIDR     string `json:"cidr"`
	NodeName string `json:"nodeName"`
	// NodeUID tells a Node that was deleted and re-created under the same
	// name (a new node) from the one that holds the block.
	NodeUID string `json:"nodeUID"`
}

// LabelClaimPool labels every PodCIDRClaim with its pool, so one pool's
// claims list by label selector.
const LabelClaimPool = "strata.io/pool"

// Decode converts an object read through the dynamic client into out (a
// *BGPPeer, *NodePool or *PodCIDRClaim).
func Decode(u *unstructured.Unstructured, out any) error {
	b, err := json.Marshal(u.Object)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}

// Encode converts obj (with its TypeMeta set) for the dynamic client.
func Encode(obj any) (*unstructured.Unstructured, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal(b, &u.Object); err != nil {
		return nil, err
	}
	return u, nil
}
