// Package agent wires Strata's per-node daemon: it discovers the node's
// facts, asks topology for a plan, starts the role the plan names, feeds plan
// changes to the VXLAN and native datapaths, and serves CNI. It never
// branches on the kind of node: roles plug in through role.Role, chosen by
// the datapath the plan gives this node.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-net/strata/api"
	"github.com/strata-net/strata/bpf"
	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/nodepool"
	"github.com/strata-net/strata/topology"
)

// Config is the agent's configuration (flags and the ConfigMap).
type Config struct {
	NodeName   string
	Kubeconfig string // empty: in-cluster
	StateDir   string // cached node and peer facts (persistent: survive reboots)
	// IPAMDir holds the pod address stores. The default is on tmpfs: the
	// allocations must outlive agent restarts (pods keep running) but not
	// reboots (no pod survives one; the runtime re-adds every pod and CNI GC
	// prunes the rest), and tmpfs spares every CNI ADD a disk fsync.
	IPAMDir     string
	CNISocket   string
	MetricsAddr string // read-only GET /metrics, /status, /healthz; empty disables
	// ControlSocket serves the same reads plus the run-time switches (POST),
	// root-only: the TCP listener refuses every switch.
	ControlSocket string

	UnderlayIP   netip.Addr // empty: the source address of the default route's link
	UnderlayLink string     // empty: the default route's link
	WANIP        netip.Addr

	// VNI and VXLANPort: 0 leaves them to the node's NodePool, else the
	// built-in defaults; a node annotation overrides them (nodepool.Profile).
	VNI       uint32
	VXLANPort uint16

	GossipPort     int
	GossipKeyFile  string
	GossipInsecure bool
	Join           []string // gossip seeds besides the Nodes' underlay IPs

	// ProbeMark marks native probes; a rule sends marked packets through
	// NativeTable, which holds the underlay's default route, so probes stay
	// native while the pair's traffic uses VXLAN.
	ProbeMark   uint32
	NativeTable int
	ProbePeriod time.Duration

	// BPF is the eBPF fast path's switch (--bpf-fastpath, --bpf-attach).
	BPF bpf.Config
	// WAN is the encrypted WAN transport (--wan, see wan.go).
	WAN WANConfig
	// PodMetadataAccess is MetadataDeny (the default: a pod reaches the
	// metadata service only with the strata.io/metadata-access: allow
	// annotation) or MetadataAllow (every pod reaches it). See metadata.go.
	PodMetadataAccess string

	Topology topology.Config
	// CloudPodCIDRs are the VPC's pod vSwitch CIDRs: the authority for the
	// /28../32 pod prefixes cloud nodes claim (--cloud-pod-cidrs). Empty:
	// every cloud node's claims are refused, with that reason.
	CloudPodCIDRs []netip.Prefix
	// ReservedCIDRs are underlay/node subnets no pod prefix may overlap
	// (--reserved-cidrs); this node's own underlay subnets are added.
	ReservedCIDRs []netip.Prefix
	// APITimeout bounds the wait for the API server at start; past it the
	// agent runs from its cached facts (edge autonomy).
	APITimeout time.Duration
	Logger     *slog.Logger
}

// DefaultControlSocket is where the agent serves its run-time switches
// (`strata fastpath on|off`) and `strata` finds them.
const DefaultControlSocket = api.DefaultControlSocket

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.StateDir == "" {
		c.StateDir = "/var/lib/strata"
	}
	if c.IPAMDir == "" {
		c.IPAMDir = "/run/strata"
	}
	if c.CNISocket == "" {
		c.CNISocket = "/run/strata/cni.sock"
	}
	if c.ControlSocket == "" {
		c.ControlSocket = DefaultControlSocket
	}
	if c.ProbeMark == 0 {
		c.ProbeMark = 0x5354
	}
	if c.NativeTable == 0 {
		c.NativeTable = 250
	}
	if c.Topology == (topology.Config{}) {
		c.Topology = topology.DefaultConfig()
	}
	if c.APITimeout == 0 {
		c.APITimeout = 20 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.BPF.Setting == "" {
		c.BPF.Setting = bpf.SettingAuto
	}
	c.WAN.defaults()
	if c.PodMetadataAccess == "" {
		c.PodMetadataAccess = MetadataDeny
	}
}

// Validate names the first bad field and the fix.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name is required (in a DaemonSet, set it from spec.nodeName)"))
	}
	if c.GossipKeyFile == "" && !c.GossipInsecure {
		errs = append(errs, errors.New("--gossip-key-file is required: gossip is encrypted; pass --gossip-insecure only in labs"))
	}
	if _, err := bpf.ParseSetting(string(c.BPF.Setting)); err != nil {
		errs = append(errs, fmt.Errorf("--bpf-fastpath: %w", err))
	}
	if c.PodMetadataAccess != MetadataDeny && c.PodMetadataAccess != MetadataAllow {
		errs = append(errs, fmt.Errorf("--pod-metadata-access %q: want %s (pods reach the metadata service only with the %s: %s annotation) or %s", c.PodMetadataAccess, MetadataDeny, wire.MetadataAccessAnnotation, wire.MetadataAccessAllow, MetadataAllow))
	}
	if err := c.WAN.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Topology.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("topology settings: %w", err))
	}
	return errors.Join(errs...)
}

// RoleEnv is what a role factory gets.
type RoleEnv struct {
	NodeName string
	Node     *corev1.Node // nil when the API server was unreachable at start
	Facts    topology.NodeFacts
	StateDir string
	IPAMDir  string
	Kube     kubernetes.Interface // nil when offline
	// RESTConfig reaches the API server (for dynamic clients of CRDs).
	RESTConfig *rest.Config
	// Handle mounts a role's HTTP handler next to /metrics and /status.
	Handle   func(path string, h http.Handler)
	Registry prometheus.Registerer
	Logger   *slog.Logger
	// Profile is what the node's annotations and NodePool say about its
	// VXLAN and BGP settings; roles resolve their flags against it.
	Profile nodepool.Profile
	// PodMTU is the underlay MTU minus the VXLAN overhead, and at most the
	// WAN device's MTU when the WAN is on: every pod may need the overlay or
	// the WAN (after a failover), so pods use it from the start rather than
	// rely on PMTU discovery (see docs/wan.md).
	PodMTU int
}

// RoleFactory builds the role for one datapath.
type RoleFactory func(ctx context.Context, env RoleEnv) (role.Role, error)

// Roles maps each datapath the plan can name to its role. The wiring in
// internal/cli fills it; the agent only looks a datapath up.
type Roles map[topology.Datapath]RoleFactory

// Discoverer adds what one subsystem can find out about the node to its
// facts before the plan names a datapath: the cloud metadata service (ENI
// capability and quota), the BGPPeers selecting this node, kernel features.
// A discoverer that finds nothing leaves the facts alone; an error stops
// the agent only when the facts would be wrong, not merely incomplete.
type Discoverer func(ctx context.Context, env RoleEnv, f *topology.NodeFacts) error
