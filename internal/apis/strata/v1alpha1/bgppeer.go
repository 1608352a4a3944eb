// Package v1alpha1 holds the Go types of Strata's strata.io/v1alpha1 API
// that the agent reads and writes: BGPPeer, NodePool and PodCIDRClaim. They
// are written by hand (no code generators offline) and read through the
// dynamic client; the CRDs in deploy/crds and deploy/manifests/crds-pool are
// checked against them by a unit test.
package v1alpha1

import (
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and Version of the API.
const (
	Group   = "strata.io"
	Version = "v1alpha1"
)

// BGPPeersGVR is the BGPPeer resource.
var BGPPeersGVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "bgppeers"}

// BGPPeer is one BGP session that every node its selector matches opens.
// Cluster-scoped.
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              BGPPeerSpec   `json:"spec"`
	Status            BGPPeerStatus `json:"status,omitempty"`
}

// BGPPeerSpec is the desired session.
type BGPPeerSpec struct {
	// PeerAddress is the neighbour's IPv4 or IPv6 address.
	PeerAddress string `json:"peerAddress"`
	// PeerASN is the neighbour's AS number (1..4294967294).
	PeerASN uint32 `json:"peerASN"`
	// LocalASN overrides the node's AS number for this session.
	LocalASN uint32 `json:"localASN,omitempty"`
	// PeerPort is the neighbour's TCP port when it is not 179.
	PeerPort int32 `json:"peerPort,omitempty"`
	// PasswordSecretRef names the Secret (in the agent's namespace) holding
	// the TCP MD5 password.
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`
	// HoldTimeSeconds (>= 3) and KeepaliveTimeSeconds (< hold time).
	HoldTimeSeconds      int32 `json:"holdTimeSeconds,omitempty"`
	KeepaliveTimeSeconds int32 `json:"keepaliveTimeSeconds,omitempty"`
	ConnectRetrySeconds  int32 `json:"connectRetrySeconds,omitempty"`
	// GracefulRestart lets the peer keep our routes while the agent restarts.
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`
	// EBGPMultihop is the TTL for eBGP sessions to non-adjacent peers (2..255).
	EBGPMultihop int32 `json:"ebgpMultihop,omitempty"`
	// Passive waits for the peer to connect.
	Passive bool `json:"passive,omitempty"`
	// NodeSelector picks the nodes that peer; empty selects every node.
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// ImportPolicy opens the built-in import rejections for some prefixes.
	ImportPolicy *ImportPolicy `json:"importPolicy,omitempty"`
	// MaxPrefixes is how many prefixes the peer may send (default 10000).
	// One more closes the session, which stays down until the spec changes.
	MaxPrefixes uint32 `json:"maxPrefixes,omitempty"`
}

// ImportPolicy is a peer's import policy. By default a node rejects a
// learned default route, a route inside its own pod CIDR, one overlapping
// its underlay subnet, and one replacing or splitting a connected subnet.
type ImportPolicy struct {
	// Allow lists CIDRs whose routes (equal or more specific) are accepted
	// despite those rules; 0.0.0.0/0 and ::/0 open only the default route.
	Allow []string `json:"allow,omitempty"`
}

// BGPPasswordLabel must be "true" on a Secret a BGPPeer names: the agent
// reads only Secrets meant for BGP passwords, never the gossip key or cloud
// credentials that live in the same namespace.
const BGPPasswordLabel = "strata.io/bgp-password"

// SecretKeyRef points at one key of a Secret.
type SecretKeyRef struct {
	Name string `json:"name"`
	// Key defaults to "password".
	Key string `json:"key,omitempty"`
}

// GracefulRestart configures RFC 4724 graceful restart.
type GracefulRestart struct {
	Enabled            bool  `json:"enabled"`
	RestartTimeSeconds int32 `json:"restartTimeSeconds,omitempty"`
}

// BGPPeerStatus is what the agents observed.
type BGPPeerStatus struct {
	// Conditions: Valid (the spec can be used), Established (on at least
	// one selected node).
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Nodes is each selected node's session state.
	Nodes []NodeSession `json:"nodes,omitempty"`
}

// NodeSession is one node's view of the session.
type NodeSession struct {
	Node   string `json:"node"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// Condition types and reasons.
const (
	ConditionValid       = "Valid"
	ConditionEstablished = "Established"

	ReasonInvalidSpec   = "InvalidSpec"
	ReasonMissingSecret = "MissingSecret"
	// ReasonSecretNotForBGP: the Secret lacks the BGPPasswordLabel.
	ReasonSecretNotForBGP = "SecretNotForBGP"
	ReasonUnreachable     = "Unreachable"
	ReasonAccepted        = "Accepted"
)

// FromUnstructured decodes a BGPPeer read through the dynamic client.
func FromUnstructured(u *unstructured.Unstructured) (*BGPPeer, error) {
	b, err := json.Marshal(u.Object)
	if err != nil {
		return nil, err
	}
	var p BGPPeer
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("decode BGPPeer %s: %w", u.GetName(), err)
	}
	return &p, nil
}

// ToUnstructured encodes a BGPPeer for the dynamic client.
func (p *BGPPeer) ToUnstructured() (*unstructured.Unstructured, error) {
	p.APIVersion = Group + "/" + Version
	p.Kind = "BGPPeer"
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal(b, &u.Object); err != nil {
		return nil, err
	}
	return u, nil
}
