package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/strata-net/strata/internal/agent"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/podipam"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/internal/version"
	"github.com/strata-net/strata/topology"
	"github.com/strata-net/strata/wan"
)

// NewAgent returns the `strata-agent` command: the per-node daemon.
func NewAgent() *cobra.Command {
	var cfg agent.Config
	var cloud cloudFlags
	var bgpf bgpFlags
	var underlayIP, wanIP, logLevel, publicEndpoint, wanImpl string
	var cloudPodCIDRs, reservedCIDRs []string
	cmd := &cobra.Command{
		Use:   "strata-agent",
		Short: "Per-node Strata daemon: discovers facts, builds the datapath, serves CNI",
		Long: `strata-agent runs on every node (as a DaemonSet pod, or by hand in the lab).

On start it reads its Node (labels strata.io/location, strata.io/pool,
strata.io/interconnect, strata.io/eni-mode), discovers its underlay, asks the
topology module for a plan, starts the role the plan names (cloud ENI pool,
or edge pod CIDR + BGP), publishes its facts as Node annotations and over
encrypted gossip, programs native and VXLAN peers, and serves the strata-cni
plugin on a root-only unix socket. If the API server is unreachable it runs
from its cached facts, and gossip keeps failover working.

With --bpf-fastpath=auto (the default) or on, pod traffic on veth datapaths
takes the eBPF fast path (docs/bpf.md); ` + "`strata fastpath off`" + ` turns it off
at run time without a restart, and ` + "`strata status`" + ` shows it.`,
		Version:      version.Version,
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.UnderlayIP, err = optAddr("--underlay-ip", underlayIP); err != nil {
				return err
			}
			if cfg.WANIP, err = optAddr("--wan-ip", wanIP); err != nil {
				return err
			}
			if cfg.CloudPodCIDRs, err = prefixList("--cloud-pod-cidrs", cloudPodCIDRs); err != nil {
				return err
			}
			if cfg.ReservedCIDRs, err = prefixList("--reserved-cidrs", reservedCIDRs); err != nil {
				return err
			}
			if publicEndpoint != "" {
				if cfg.WAN.PublicEndpoint, err = netip.ParseAddrPort(publicEndpoint); err != nil {
					return fmt.Errorf("--public-endpoint %q: want ip:port reachable from the internet (an EIP or a port forward to UDP %d): %w", publicEndpoint, wan.DefaultPort, err)
				}
			}
			if wanImpl != "auto" {
				cfg.WAN.Impl = wan.Impl(wanImpl)
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
			}
			cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			if err := cloud.parse(); err != nil {
				return err
			}
			a, err := agent.New(cfg, agentRoles(cloud, bgpf), cloud.discover, bgpf.discover)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.Run(ctx)
		},
	}
	cmd.SetVersionTemplate(version.String("strata-agent") + "\n")
	f := cmd.Flags()
	f.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses the in-cluster service account")
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/strata", "cached node and peer facts (kept across reboots for edge autonomy)")
	f.StringVar(&cfg.IPAMDir, "ipam-dir", "/run/strata", "pod address stores (tmpfs: they outlive agent restarts, not reboots, when every pod is re-added)")
	f.StringVar(&cfg.CNISocket, "cni-socket", "/run/strata/cni.sock", "unix socket strata-cni calls (created 0600, root only)")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", ":9253", "address for the read-only /metrics, /status and /healthz (GET only); empty disables")
	f.StringVar(&cfg.ControlSocket, "control-socket", agent.DefaultControlSocket, "root-only unix socket (0600) serving the status endpoints and the run-time switches (strata fastpath on|off)")
	f.StringVar(&underlayIP, "underlay-ip", "", "underlay address (default: the default route link's first IPv4 address)")
	f.StringVar(&cfg.UnderlayLink, "underlay-link", "", "underlay link (default: the default route's link)")
	f.StringVar(&wanIP, "wan-ip", "", "public/WAN address, when it differs from the underlay address (informational)")
	f.StringVar(&cfg.WAN.Setting, "wan", envOr("STRATA_WAN", agent.WANOff), "encrypted WAN transport (WireGuard, docs/wan.md): auto (on when the device can be made), on (stop if it cannot), off (default $STRATA_WAN, else off)")
	f.StringVar(&wanImpl, "wan-impl", "auto", "WireGuard implementation: auto (the kernel's where it has one, else userspace over TUN), kernel or userspace")
	f.Uint16Var(&cfg.WAN.Port, "wan-port", wan.DefaultPort, "WireGuard UDP port")
	f.StringVar(&publicEndpoint, "public-endpoint", "", "ip:port where the internet reaches this node's WAN port (an EIP, or a port forward on the site router); default: the node's strata.io/public-endpoint annotation; none: behind NAT")
	f.IntVar(&cfg.WAN.Table, "wan-table", 251, "routing table of the routes into the WAN device (a rule ahead of main looks it up)")
	f.Uint32Var(&cfg.VNI, "vxlan-vni", 0, "VXLAN network identifier; 0: the node's NodePool vxlan.vni, else 1 (a node's strata.io/vxlan-vni annotation overrides both)")
	f.Uint16Var(&cfg.VXLANPort, "vxlan-port", 0, "VXLAN UDP port; 0: the node's NodePool vxlan.port, else 4789 (a node's strata.io/vxlan-port annotation overrides both)")
	f.IntVar(&cfg.GossipPort, "gossip-port", 7946, "memberlist gossip port on the underlay address")
	f.StringVar(&cfg.GossipKeyFile, "gossip-key-file", "", "memberlist keyring file (base64 AES keys, one per line; first is primary)")
	f.BoolVar(&cfg.GossipInsecure, "gossip-insecure", false, "allow unencrypted gossip (labs only)")
	f.StringSliceVar(&cfg.Join, "join", nil, "extra gossip seeds (host or host:port)")
	f.DurationVar(&cfg.ProbePeriod, "probe-period", 0, "native probe period per remote pool (default 100ms)")
	f.IntVar(&cfg.Topology.FailThreshold, "fail-threshold", topology.DefaultConfig().FailThreshold, "consecutive failed native probes before a pair leaves native")
	f.DurationVar(&cfg.Topology.HoldDown, "hold-down", topology.DefaultConfig().HoldDown, "time the native path must stay healthy before pairs return to it")
	f.StringSliceVar(&cloudPodCIDRs, "cloud-pod-cidrs", nil, "the VPC's pod vSwitch CIDRs (comma separated): the authority for cloud nodes' pod prefixes; every agent needs the same list, or cloud nodes' claims are refused (docs/trust.md)")
	f.StringSliceVar(&reservedCIDRs, "reserved-cidrs", nil, "underlay/node subnets no pod prefix may overlap (comma separated), besides this node's own underlay subnets")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&cfg.PodMetadataAccess, "pod-metadata-access", agent.MetadataDeny, "pods' access to the cloud metadata service 100.100.100.200 (the node's RAM-role credentials): deny (only pods annotated strata.io/metadata-access: allow reach it) or allow (every pod)")
	cfg.BPF.AddFlags(f)
	cloud.register(f)
	bgpf.register(f)
	return cmd
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func optAddr(flag, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("%s %q: want an IP address: %w", flag, s, err)
	}
	return a, nil
}

// prefixList parses a list flag of CIDRs, naming the bad entry.
func prefixList(flag string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil || p != p.Masked() || !p.Addr().Is4() {
			return nil, fmt.Errorf("%s: %q is not an IPv4 network prefix such as 10.0.64.0/20 (host bits zero)", flag, s)
		}
		out = append(out, p)
	}
	return out, nil
}

// agentRoles maps each datapath to the role that builds it.
func agentRoles(cloud cloudFlags, bgpf bgpFlags) agent.Roles {
	return agent.Roles{
		topology.DatapathVXLANOverlay: podCIDRRole,
		topology.DatapathENIMultiIP:   cloud.role,
		topology.DatapathBGPUnderlay:  bgpf.role,
	}
}

// podCIDRRole serves pods from the node's pod CIDR with no routing protocol:
// peers reach them over the overlay.
func podCIDRRole(_ context.Context, env agent.RoleEnv) (role.Role, error) {
	if !env.Facts.PodCIDR.IsValid() {
		return nil, fmt.Errorf("node %s has no pod CIDR: give its NodePool spec.podCIDRs, or set Node.spec.podCIDR (kube-controller-manager --allocate-node-cidrs); peers accept pod prefixes only inside it (docs/trust.md)", env.NodeName)
	}
	st, err := ipamstore.Open(filepath.Join(env.IPAMDir, "ipam.db"))
	if err != nil {
		return nil, err
	}
	return podipam.New(env.Facts.PodCIDR, st, podipam.Options{Name: string(topology.DatapathVXLANOverlay), MTU: env.PodMTU, Logger: env.Logger})
}
