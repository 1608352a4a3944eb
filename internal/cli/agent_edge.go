package cli

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"

	"github.com/strata-net/strata/api"
	"github.com/strata-net/strata/bgp"
	"github.com/strata-net/strata/bgp/peersync"
	edgenode "github.com/strata-net/strata/edge-node"
	"github.com/strata-net/strata/internal/agent"
	"github.com/strata-net/strata/internal/apis/strata/v1alpha1"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/nodepool"
	"github.com/strata-net/strata/topology"
)

// bgpFlags configure the edge role's BGP speaker.
type bgpFlags struct {
	asn             uint32
	secretNamespace string
}

func (b *bgpFlags) register(f *pflag.FlagSet) {
	f.Uint32Var(&b.asn, "bgp-asn", 0, "this node's ASN; 0: the node's NodePool bgp.localASN, else 64512 (a node's strata.io/bgp-local-asn annotation overrides both; a BGPPeer's localASN overrides it per session)")
	f.StringVar(&b.secretNamespace, "bgp-secret-namespace", "strata-system", "namespace of the Secrets BGPPeers take MD5 passwords from")
}

// discover counts the BGPPeers whose node selector picks this node: an edge
// node with peers announces its pod CIDR (bgp-underlay).
func (b *bgpFlags) discover(ctx context.Context, env agent.RoleEnv, f *topology.NodeFacts) error {
	if env.RESTConfig == nil || env.Node == nil {
		return nil
	}
	dyn, err := dynamic.NewForConfig(env.RESTConfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := dyn.Resource(v1alpha1.BGPPeersGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		env.Logger.Info("cannot list BGPPeers; assuming none", "err", err)
		return nil
	}
	n := 0
	for _, item := range list.Items {
		sel, found, _ := unstructuredSelector(item.Object)
		if !found {
			n++ // no selector: every node
			continue
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err == nil && s.Matches(labels.Set(env.Node.Labels)) {
			n++
		}
	}
	f.Capabilities.BGPPeers = n
	return nil
}

// role builds the edge role with BGP: pod IPAM from the node's pod CIDR,
// a speaker whose peers follow the BGPPeers selecting this node, and the
// installer that puts learned routes into the kernel.
func (b *bgpFlags) role(ctx context.Context, env agent.RoleEnv) (role.Role, error) {
	if !env.Facts.PodCIDR.IsValid() {
		return nil, fmt.Errorf("node %s has no pod CIDR to announce: give its NodePool spec.podCIDRs, or set Node.spec.podCIDR", env.NodeName)
	}
	st, err := ipamstore.Open(filepath.Join(env.IPAMDir, "ipam.db"))
	if err != nil {
		return nil, err
	}
	// The import policy protects the node's own pod CIDR and underlay
	// subnets (and every connected subnet it reads from the kernel).
	asn := env.Profile.Resolve(nodepool.Settings{LocalASN: b.asn}).LocalASN
	sp, err := bgp.New(bgp.Config{RouterID: env.Facts.Underlay(), ASN: asn, PodCIDRs: env.Facts.PodAddrs(), UnderlayIPs: env.Facts.UnderlayIPs},
		env.Logger.With("component", "bgp"))
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	if err := sp.Start(ctx); err != nil {
		_ = st.Close()
		return nil, err
	}
	in, err := bgp.NewInstaller("", 0)
	if err != nil {
		return nil, err
	}
	go func() {
		_ = bgp.RunInstaller(ctx, sp, in, bgp.InstallOptions{Keep: true, SweepStale: true, Log: env.Logger.With("component", "bgp-installer")})
	}()
	// The last known peers start at once, so sessions come up while the API
	// server is away; the first reconcile replaces them.
	peerCache := filepath.Join(env.StateDir, peersync.CacheFile)
	peersync.Seed(ctx, sp, peerCache, env.Logger.With("component", "bgp-peers"))
	if env.RESTConfig != nil {
		dyn, err := dynamic.NewForConfig(env.RESTConfig)
		if err != nil {
			return nil, err
		}
		syncer, err := peersync.New(peersync.Config{Dynamic: dyn, Kube: env.Kube, NodeName: env.NodeName, CachePath: peerCache,
			SecretNamespace: b.secretNamespace, Speaker: sp, Reachable: reachable, Logger: env.Logger.With("component", "bgp-peers")})
		if err != nil {
			return nil, err
		}
		go func() { _ = syncer.Run(ctx) }()
	}
	r, err := edgenode.New(edgenode.Config{CIDR: edgenode.CIDRSource{NodePodCIDR: env.Facts.PodCIDR.String()}, Store: st,
		Speaker: sp, MTU: env.PodMTU, Logger: env.Logger})
	if err != nil {
		return nil, err
	}
	if env.Registry != nil {
		env.Registry.MustRegister(bgp.NewCollector(sp), bgp.NewInstallCollector(in))
	}
	if env.Handle != nil {
		env.Handle(api.BGPPeersPath, bgp.StatusHandler(sp))
		env.Handle(api.BGPInstallPath, bgp.InstallHandler(in))
	}
	return &bgpRole{Role: r, sp: sp}, nil
}

// bgpRole stops the speaker gracefully with the role: no Cease, so peers
// keep the node's routes (helper mode) while the agent restarts.
type bgpRole struct {
	*edgenode.Role
	sp *bgp.Speaker
}

func (r *bgpRole) Stop(ctx context.Context) error {
	err := r.Role.Stop(ctx)
	if serr := r.sp.Stop(ctx, bgp.StopGraceful); serr != nil && err == nil {
		err = serr
	}
	return err
}

// reachable says whether a peer address has a route from this node.
func reachable(a netip.Addr) error {
	if _, err := netlink.RouteGet(a.AsSlice()); err != nil {
		return fmt.Errorf("no route to %s: %w", a, err)
	}
	return nil
}

func unstructuredSelector(obj map[string]any) (*metav1.LabelSelector, bool, error) {
	spec, _ := obj["spec"].(map[string]any)
	raw, ok := spec["nodeSelector"].(map[string]any)
	if !ok {
		return nil, false, nil
	}
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	if ml, ok := raw["matchLabels"].(map[string]any); ok {
		for k, v := range ml {
			if s, ok := v.(string); ok {
				sel.MatchLabels[k] = s
			}
		}
	}
	return sel, true, nil
}
