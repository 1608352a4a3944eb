// Package wire is the protocol between strata-cni and the agent's CNI server:
// HTTP/1.1 with JSON bodies over a root-only unix socket.
//
// Why HTTP/JSON and not gRPC: the plugin is exec'd once per pod, so its
// start-up cost is on every ADD's critical path. net/http and encoding/json
// are already linked into a CNI plugin, add nothing to its start-up, and need
// no generated code; the socket can be inspected with
// `curl --unix-socket /run/strata/cni.sock http://strata/v1/status`.
// The plugin makes exactly one request per CNI verb.
package wire

import (
	"net/netip"

	"github.com/strata-net/strata/internal/role"
)

// DefaultSocket is where the agent listens unless configured otherwise.
const DefaultSocket = "/run/strata/cni.sock"

// Paths of the API. Every call is a POST except status.
const (
	PathAdd    = "/v1/add"
	PathDel    = "/v1/del"
	PathCheck  = "/v1/check"
	PathGC     = "/v1/gc"
	PathStatus = "/v1/status"
)

// Error codes the server puts in ErrorResponse.Code. They reuse the CNI
// spec's numbers so the plugin can pass them through unchanged.
const (
	CodeTryAgainLater     = 11  // transient: retry
	CodeNotAvailable      = 50  // the role is not ready (STATUS)
	CodeNoAddresses       = 51  // no addresses left (STATUS and ADD)
	CodeInvalidRequest    = 7   // a field of the request is invalid
	CodeUnknownAttachment = 3   // CHECK: no such allocation
	CodeInternal          = 999 // anything else
)

// AddRequest asks for an allocation. It is persisted before the answer.
type AddRequest struct {
	ContainerID  string `json:"containerID"`
	IfName       string `json:"ifName"`
	Netns        string `json:"netns"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
}

// PodRequest converts the request to the role's type.
func (r AddRequest) PodRequest() role.PodRequest {
	return role.PodRequest{ContainerID: r.ContainerID, IfName: r.IfName, Netns: r.Netns, PodNamespace: r.PodNamespace, PodName: r.PodName}
}

// Attachment names one container interface (DEL, CHECK and GC).
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// Allocation is role.Allocation on the wire.
type Allocation struct {
	ContainerID  string         `json:"containerID"`
	IfName       string         `json:"ifName"`
	PodNamespace string         `json:"podNamespace,omitempty"`
	PodName      string         `json:"podName,omitempty"`
	Addr         netip.Prefix   `json:"addr"`
	Gateway      netip.Addr     `json:"gateway"`
	Routes       []netip.Prefix `json:"routes,omitempty"`
	MTU          int            `json:"mtu"`
	Datapath     role.Datapath  `json:"datapath"`
	Table        int            `json:"table,omitempty"`
	ENILink      string         `json:"eniLink,omitempty"`
	ENIMAC       string         `json:"eniMAC,omitempty"`
	// HostVia: see role.Allocation (ipvlan only).
	HostVia netip.Addr `json:"hostVia,omitzero"`
	// Direct: see role.Allocation (ipvlan only).
	Direct []netip.Prefix `json:"direct,omitempty"`
	// Blocked are destinations the pod must not reach: the metadata service
	// (MetadataPrefix) unless the pod or the cluster opts out. The agent
	// decides at ADD; the plugin puts a prohibit route for each inside the
	// pod and, where the pod's traffic crosses the node (veth), puts the host
	// veth in MetadataDenyGroup, which the node's nftables table drops.
	Blocked []netip.Prefix `json:"blocked,omitempty"`
}

// The cloud's instance metadata service. On ECS it hands out the node's
// RAM-role credentials, which can manage every ENI in the account, so pods
// are kept from it by default.
var MetadataPrefix = netip.MustParsePrefix("100.100.100.200/32")

// MetadataAccessAnnotation on a Pod, set to MetadataAccessAllow, lets that
// pod reach the metadata service when the agent runs with
// --pod-metadata-access=deny (the default).
const (
	MetadataAccessAnnotation = "strata.io/metadata-access"
	MetadataAccessAllow      = "allow"
)

// MetadataDenyGroup is the link group (IFLA_GROUP) of the host veth of a
// pod that may not reach the metadata service; the node's nftables table
// MetadataTable drops traffic arriving from that group for MetadataPrefix.
// A group on the host side survives whatever the pod does in its own
// namespace, and dies with the link at DEL.
const MetadataDenyGroup = 0x53544d

// MetadataTable is the node's nftables table (family inet) that enforces
// MetadataDenyGroup.
const MetadataTable = "strata_metadata"

// FromRole converts a role allocation.
func FromRole(a role.Allocation) Allocation {
	return Allocation{
		ContainerID: a.ContainerID, IfName: a.IfName, PodNamespace: a.PodNamespace, PodName: a.PodName,
		Addr: a.Addr, Gateway: a.Gateway, Routes: a.Routes, MTU: a.MTU, Datapath: a.Datapath,
		Table: a.Table, ENILink: a.ENILink, ENIMAC: a.ENIMAC, HostVia: a.HostVia,
		Direct: a.Direct,
	}
}

// DelResponse is DEL's (empty) answer: success means the attachment holds
// no address any more, whether or not it held one.
type DelResponse struct{}

// GCRequest lists the attachments that stay; every other allocation goes.
// With DryRun the agent only lists what would go (GCResponse.Released is
// then the stale allocations, still held): the plugin removes their host
// links first and releases each with DEL, in DEL's own order.
type GCRequest struct {
	Valid  []Attachment `json:"valid"`
	DryRun bool         `json:"dryRun,omitempty"`
}

// GCResponse lists the allocations GC released.
type GCResponse struct {
	Released []Allocation `json:"released"`
}

// StatusResponse is the role's readiness.
type StatusResponse struct {
	Ready bool   `json:"ready"`
	Role  string `json:"role"`
	// Code is CodeNotAvailable or CodeNoAddresses when not ready.
	Code    uint   `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// ErrorResponse is the body of every non-2xx answer.
type ErrorResponse struct {
	Code    uint   `json:"code"`
	Message string `json:"message"`
}
