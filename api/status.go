package api

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/strata-net/strata/topology"
)

// Status is what StatusPath serves and `strata status` prints.
type Status struct {
	Node     string            `json:"node"`
	Datapath topology.Datapath `json:"datapath"`
	Reason   string            `json:"reason"`
	Role     string            `json:"role"`
	Ready    string            `json:"ready"`
	// Allocations is the number of live pod attachments in the role's IPAM.
	Allocations int `json:"allocations"`
	// PoolIdle is the warm pool's free addresses, on roles that keep one
	// (cloud ENI): with Allocations it accounts for the addresses the
	// cloud has given the node.
	PoolIdle *int `json:"poolIdle,omitempty"`
	// PoolUnconfirmed are addresses the node holds that the cloud's last
	// listing left out: kept, never handed out, until listed again or
	// confirmed gone (docs/cloud-node.md).
	PoolUnconfirmed *int `json:"poolUnconfirmed,omitempty"`
	// PoolLost are pods whose address the cloud has confirmed gone from the
	// node: recreate them.
	PoolLost []string `json:"poolLost,omitempty"`
	// PoolError is the pool's last cloud error, retried at each resync.
	PoolError string `json:"poolError,omitempty"`
	// FastPath is the eBPF fast path: the decision, the switch, counters.
	FastPath FastPath `json:"fastPath"`
	// WAN is the encrypted WAN transport (nil before the agent made it).
	WAN *WAN `json:"wan,omitempty"`
	// Refused are the nodes whose pod prefix claims this node refused
	// (isolated, or prefixes withheld), with the reason and the fix.
	Refused []topology.NodePlan    `json:"refused,omitempty"`
	Nodes   []topology.NodePlan    `json:"nodes"`
	Peers   []topology.PeerProgram `json:"peers"`
	// VXLANFilter is the overlay's member filter: "enforcing", or why not
	// (then any host reaching the VTEP port can inject into pods).
	VXLANFilter string `json:"vxlanFilter,omitempty"`
	// PodMetadata is pods' access to the metadata service: the setting and
	// whether the node's table enforces it.
	PodMetadata string `json:"podMetadata,omitempty"`
}

// FastPath is the eBPF fast path's part of Status, and what FastPathPath
// serves.
type FastPath struct {
	// Setting is --bpf-fastpath: auto, on or off.
	Setting string `json:"setting"`
	// Active is the start-time decision: the programs are loaded.
	Active bool   `json:"active"`
	Reason string `json:"reason"`
	// Enabled is the run-time switch (FastPathSwitchPath).
	Enabled   bool              `json:"enabled"`
	Attach    string            `json:"attach,omitempty"`
	Attached  []string          `json:"attached,omitempty"`
	Endpoints int               `json:"endpoints"`
	Prefixes  []netip.Prefix    `json:"podPrefixes,omitempty"`
	Counters  *FastPathCounters `json:"counters,omitempty"`
	LastError string            `json:"lastError,omitempty"`
	// Netfilter are the forward rules fast-pathed pod packets would skip;
	// SteppedAside is set while the auto fast path is off because of them.
	Netfilter    []ForwardFilter `json:"netfilter,omitempty"`
	SteppedAside bool            `json:"steppedAside,omitempty"`
}

// Forwarding says whether the fast path forwards pod traffic now, and why
// or why not, in words for `strata status`.
func (s FastPath) Forwarding() (bool, string) {
	switch {
	case !s.Active:
		return false, "not loaded: " + s.Reason
	case s.SteppedAside && len(s.Netfilter) > 0:
		return false, "loaded, stepped aside: netfilter filters forwarded traffic (" + s.Netfilter[0].String() + "); pod traffic takes the kernel path through those rules"
	case !s.Enabled:
		return false, "loaded, switched off at run time"
	case len(s.Netfilter) > 0:
		return true, s.Reason + "; WARNING: on while netfilter filters forwarded traffic (" + s.Netfilter[0].String() + "): those rules do not see fast-pathed pod packets"
	}
	return true, s.Reason
}

// Counter is a packet and byte count.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// PodCounters are one pod address's outgoing packets by where they went.
type PodCounters struct {
	Local  Counter // redirected to a pod on this node
	Remote Counter // forwarded by FIB lookup to the uplink or overlay
	Stack  Counter // handed to the kernel stack
}

// FastPathCounters are the fast path's summed per-CPU counters: per path
// (the programs' path names, e.g. "local", "stack_no_route") and per pod.
type FastPathCounters struct {
	Paths map[string]Counter
	Pods  map[netip.Addr]PodCounters
}

// ForwardFilter is one netfilter base chain on the forward hook that can
// drop, reject or queue forwarded packets.
type ForwardFilter struct {
	Family string `json:"family"`
	Table  string `json:"table"`
	Chain  string `json:"chain"`
	// Why names what filters: the chain policy, or the chain and verdict
	// of the first filtering rule reached from it.
	Why string `json:"why"`
}

func (f ForwardFilter) String() string {
	return fmt.Sprintf("%s %s %s: %s", f.Family, f.Table, f.Chain, f.Why)
}

// WAN is the encrypted WAN transport's part of Status.
type WAN struct {
	Setting string `json:"setting"`
	// Off says why there is no WAN device (empty when there is one).
	Off        string `json:"off,omitempty"`
	Impl       string `json:"impl,omitempty"`
	ImplReason string `json:"implReason,omitempty"`
	PublicKey  string `json:"publicKey,omitempty"`
	Port       uint16 `json:"port,omitempty"`
	// PublicEndpoint is the declared endpoint peers send to (published).
	PublicEndpoint netip.AddrPort `json:"publicEndpoint,omitzero"`
	// SeenAs is this node's outer address as each reachable peer reports
	// it (learned, shown only: a NAT mapping others may not reach).
	SeenAs map[string]netip.AddrPort `json:"seenAs,omitempty"`
	Peers  []WANPeer                 `json:"peers,omitempty"`
	// Errors are programs the WAN could not apply (the others are).
	Errors    []string `json:"errors,omitempty"`
	LastError string   `json:"lastError,omitempty"`
}

// WANPeer is one WireGuard peer: the device's view and the probes'.
type WANPeer struct {
	WANDevicePeer
	// HandshakeAgeSeconds since the last handshake; absent before the first.
	HandshakeAgeSeconds *float64       `json:"handshakeAgeSeconds,omitempty"`
	Probes              WANProbeCounts `json:"probes"`
}

// WANDevicePeer is one peer as the WireGuard device sees it.
type WANDevicePeer struct {
	Name          string         `json:"name"`
	PublicKey     string         `json:"publicKey"`
	Endpoint      netip.AddrPort `json:"endpoint,omitzero"` // configured or learned
	AllowedIPs    []netip.Prefix `json:"allowedIPs,omitempty"`
	LastHandshake time.Time      `json:"lastHandshake,omitzero"`
	RxBytes       int64          `json:"rxBytes"`
	TxBytes       int64          `json:"txBytes"`
	Error         string         `json:"error,omitempty"`
}

// WANProbeCounts are one WAN peer's tunnel probe outcomes since start.
type WANProbeCounts struct {
	OK     uint64 `json:"ok"`
	Failed uint64 `json:"failed"`
}
