// Package api is strata-agent's HTTP API: the paths it serves and the JSON
// types of their answers. The agent serves them read-only on --metrics-addr
// and, with the run-time switches, on its root-only --control-socket; the
// operator CLI `strata` reads them.
//
// This package is the contract between the two binaries, as cni/wire is
// between strata-cni and the agent: it imports only the standard library and
// the pure topology package, so the CLI links none of the daemon (gobgp, the
// cloud SDK, memberlist, the eBPF loader).
package api

// DefaultControlSocket is where the agent serves its run-time switches
// (`strata fastpath on|off`) and `strata` finds them.
const DefaultControlSocket = "/run/strata/agent.sock"

// DefaultAgentAddr is where `strata` finds the agent's read-only listener
// by default: the agent's --metrics-addr (":9253") on this node.
const DefaultAgentAddr = "127.0.0.1:9253"

// The agent's endpoints. Every path answers GET with JSON, except the
// fast-path switch (POST, control socket only).
const (
	// StatusPath serves Status.
	StatusPath = "/status"
	// FastPathPath serves FastPath.
	FastPathPath = "/bpf/fastpath"
	// FastPathSwitchPath + "on" or "off" switches the fast path (POST on
	// the control socket) and answers with FastPath.
	FastPathSwitchPath = "/bpf/fastpath/"
	// BGPPeersPath serves []BGPPeer on nodes with a BGP speaker.
	BGPPeersPath = "/bgp/peers"
	// BGPInstallPath serves BGPInstall on nodes with a BGP speaker.
	BGPInstallPath = "/bgp/install"
)
