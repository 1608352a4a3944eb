// Package role is the contract between the agent's wiring, the CNI server and
// the two node roles (cloud-node and edge-node). The wiring never branches on
// the kind of node: it starts whichever Role the topology plan names and talks
// to it only through this interface.
package role

import (
	"context"
	"net/netip"
)

// PodRequest identifies one pod attachment, as the CNI plugin sends it.
type PodRequest struct {
	ContainerID  string
	IfName       string
	Netns        string
	PodNamespace string
	PodName      string
}

// Key is the identity of an attachment: one container, one interface.
func (r PodRequest) Key() string { return r.ContainerID + "/" + r.IfName }

// Datapath names how the plugin wires a pod.
type Datapath string

const (
	// DatapathVethRouted: a veth pair, the host side routed to the pod's /32
	// (edge nodes, and ENIIP where ipvlan is missing).
	DatapathVethRouted Datapath = "veth-routed"
	// DatapathIPVlan: an ipvlan slave of the ENI (ENIIP on kernels with ipvlan).
	DatapathIPVlan Datapath = "ipvlan"
	// DatapathExclusiveENI: the whole ENI moves into the pod namespace.
	DatapathExclusiveENI Datapath = "eni-exclusive"
)

// Allocation is what a role hands out for one pod attachment. It is persisted
// before the CNI server answers.
type Allocation struct {
	ContainerID  string
	IfName       string
	PodNamespace string
	PodName      string

	// Addr is the pod address with the prefix length the pod sees (/32 or
	// /128 on routed datapaths).
	Addr netip.Prefix
	// Gateway is the pod's default gateway. Routed datapaths use a
	// link-local gateway answered by the host side (proxy ARP).
	Gateway netip.Addr
	// Routes are extra routes inside the pod; the default route is implied.
	Routes []netip.Prefix
	MTU    int

	Datapath Datapath
	// Table is the policy-routing table for the pod's egress (ENIIP: one
	// table per ENI). 0 means the main table.
	Table int
	// ENI is the interface the pod's traffic leaves by (ENIIP) or that moves
	// into the pod (exclusive). Empty on edge nodes.
	ENILink string
	ENIMAC  string
	// HostVia (ipvlan only) is the node's address on its own ipvlan slave of
	// the ENI. Routes go via it, so host-bound destinations (services, node
	// subnets, overlay and BGP-learned pod CIDRs) take the host stack while
	// the default route goes to Gateway, the vSwitch gateway. Zero on other
	// datapaths.
	HostVia netip.Addr
	// Direct (ipvlan only) lists the destinations the pod reaches straight
	// through Gateway: the VPC CIDR. When it is set, the pod's default route
	// goes via HostVia instead, so whatever the node learns later (overlay
	// and BGP pod CIDRs, which the VPC does not route) is reached through
	// the host without touching the pod. Routes still go via HostVia and win
	// inside Direct by being more specific. Empty: default via Gateway.
	Direct []netip.Prefix
}

// Role is one kind of node: it owns address management and the node's side of
// pod links.
type Role interface {
	// Name is the datapath name published in the plan, e.g. "bgp-underlay".
	Name() string
	// Start brings the role up (fill the ENI pool, claim the pod CIDR, start
	// BGP). It returns once the role can serve Allocate or ctx ends.
	Start(ctx context.Context) error
	// Allocate gives the attachment an address. Calling it again with the
	// same request returns the same allocation.
	Allocate(ctx context.Context, req PodRequest) (Allocation, error)
	// Release frees the attachment's address. Releasing an unknown
	// attachment is not an error.
	Release(ctx context.Context, containerID, ifName string) error
	// Allocations lists every live attachment (for CNI GC and restarts).
	Allocations(ctx context.Context) ([]Allocation, error)
	// Ready returns nil when Allocate can succeed, else why not.
	Ready() error
	// OwnedPrefixes are the pod addresses peers must route to this node:
	// the pod CIDR on edge nodes, per-pod /32s or /28 prefixes on cloud nodes.
	OwnedPrefixes() []netip.Prefix
	// Stop releases the role's resources; live allocations stay persisted.
	Stop(ctx context.Context) error
}

// NodeAddresser is implemented by roles that reserve an address of the pod
// space for the node itself: the edge role's first pod-CIDR address, the
// cloud role's reserved ENI secondary IP. The agent puts it on the overlay
// device (peers route to this node's pods via it) and probes the native pod
// path from it.
type NodeAddresser interface {
	NodeAddr() netip.Addr
}
