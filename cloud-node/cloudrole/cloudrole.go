// Package cloudrole assembles the cloud role for the agent: identity from the
// metadata service, credentials from config or the instance's RAM role, the
// SDK client, the IPAM store in the state dir, the kernel datapath (ipvlan
// when the kernel has it, else veth + policy routing) and the ENI manager.
package cloudrole

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	cloudnode "github.com/strata-net/strata/cloud-node"
	"github.com/strata-net/strata/cloud-node/datapath"
	"github.com/strata-net/strata/cloud-node/ecsapi"
	"github.com/strata-net/strata/cloud-node/metadata"
	"github.com/strata-net/strata/internal/ipamstore"
)

// Options configure the cloud role. Zero values take the defaults of
// cloudnode.Config.
type Options struct {
	ClusterID string
	// MetadataURL defaults to the real service (http://100.100.100.200).
	MetadataURL string
	// Endpoint overrides the ECS endpoint (e.g. the emulator's URL).
	Endpoint string
	// AccessKeyID/AccessKeySecret, or empty to use the instance's RAM role
	// (RAMRole names it; empty takes the only one attached).
	AccessKeyID     string
	AccessKeySecret string
	RAMRole         string

	PodVSwitchIDs   []string
	SecurityGroupID string
	// Pool sizes the warm pool; the zero value keeps no idle IPs, so callers
	// start from cloudnode.DefaultWarmPool.
	Pool cloudnode.WarmPool
	MTU  int
	// IPv4Prefixes makes the pool use /28 prefixes (cloudnode.Config.IPv4Prefixes).
	IPv4Prefixes bool
	// HostBound are destinations pods reach via the host (service CIDR,
	// overlay and BGP-learned pod CIDRs).
	HostBound []netip.Prefix
	StateDir  string
	// DetectIPVlan probes the kernel (default datapath.IPVlanSupported).
	DetectIPVlan func() bool
	Registry     prometheus.Registerer
	Logger       *slog.Logger
}

// New builds (but does not start) the cloud role on this node.
func New(ctx context.Context, o Options) (*cloudnode.Manager, error) {
	if o.StateDir == "" {
		return nil, errors.New("cloud role: StateDir is required (where the IPAM store lives)")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.DetectIPVlan == nil {
		o.DetectIPVlan = datapath.IPVlanSupported
	}
	md := metadata.New(o.MetadataURL)
	in, err := md.Instance(ctx)
	if err != nil {
		return nil, fmt.Errorf("cloud role: read instance identity: %w", err)
	}
	cfg := ecsapi.Config{RegionID: in.RegionID, Endpoint: o.Endpoint, Logger: o.Logger}
	if o.AccessKeyID != "" || o.AccessKeySecret != "" {
		cfg.Credentials = ecsapi.Credentials{AccessKeyID: o.AccessKeyID, AccessKeySecret: o.AccessKeySecret}
	} else {
		cfg.Source = roleSource(md, o.RAMRole)
	}
	api, err := ecsapi.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("cloud role: %w", err)
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("cloud role: state dir: %w", err)
	}
	st, err := ipamstore.Open(filepath.Join(o.StateDir, "eni-ipam.db"))
	if err != nil {
		return nil, err
	}
	dp := &datapath.Node{HostBound: slices.Clone(o.HostBound), Log: o.Logger}
	m, err := cloudnode.NewManager(cloudnode.Config{
		ClusterID: o.ClusterID, InstanceID: in.ID, InstanceType: in.Type,
		PodVSwitchIDs: o.PodVSwitchIDs, SecurityGroupID: o.SecurityGroupID,
		WarmPool: o.Pool, MTU: o.MTU, IPv4Prefixes: o.IPv4Prefixes,
		IPVlan: o.DetectIPVlan(), HostBound: slices.Clone(o.HostBound), VPCCIDR: in.VPCCIDR,
		ReadyMAC: func(ctx context.Context, mac string) (bool, error) {
			macs, err := md.MACs(ctx)
			return slices.Contains(macs, mac), err
		},
		ENIGateway: md.Gateway,
		Logger:     o.Logger,
	}, api, st, dp)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	if o.Registry != nil {
		for _, c := range append(m.Collectors(), api.Collectors()...) {
			if err := o.Registry.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					_ = st.Close()
					return nil, fmt.Errorf("cloud role metrics: %w", err)
				}
			}
		}
	}
	return m, nil
}

// roleSource reads the RAM role's temporary credentials, cached until five
// minutes before they expire.
func roleSource(md *metadata.Client, role string) ecsapi.CredentialSource {
	var mu sync.Mutex
	var cur metadata.RoleCredentials
	return func() (ecsapi.Credentials, error) {
		mu.Lock()
		defer mu.Unlock()
		if cur.AccessKeyID == "" || time.Until(cur.Expiration) < 5*time.Minute {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rc, err := md.RoleCredentials(ctx, role)
			if err != nil {
				return ecsapi.Credentials{}, err
			}
			cur = rc
		}
		return ecsapi.Credentials{AccessKeyID: cur.AccessKeyID, AccessKeySecret: cur.AccessKeySecret, SecurityToken: cur.SecurityToken}, nil
	}
}
