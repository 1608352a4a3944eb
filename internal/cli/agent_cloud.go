package cli

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/pflag"

	cloudnode "github.com/strata-net/strata/cloud-node"
	"github.com/strata-net/strata/cloud-node/cloudrole"
	"github.com/strata-net/strata/cloud-node/metadata"
	"github.com/strata-net/strata/internal/agent"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/topology"
)

// cloudFlags configure the cloud (ECS ENI) role and its discovery.
type cloudFlags struct {
	metadataURL    string
	endpoint       string
	clusterID      string
	podVSwitches   []string
	securityGroup  string
	pool           cloudnode.WarmPool
	ipv4Prefixes   bool
	hostBoundFlags []string
	hostBound      []netip.Prefix
}

func (c *cloudFlags) register(f *pflag.FlagSet) {
	f.StringVar(&c.metadataURL, "cloud-metadata-url", metadata.DefaultBaseURL, `ECS metadata service; "off" on nodes that are not ECS instances`)
	f.StringVar(&c.endpoint, "cloud-endpoint", "", "ECS OpenAPI endpoint override (host:port or URL); empty uses the region's")
	f.StringVar(&c.clusterID, "cluster-id", "strata", "tag on the ENIs this cluster creates (GC only touches its own)")
	f.StringSliceVar(&c.podVSwitches, "pod-vswitches", nil, "vSwitch IDs pod ENIs are created in (default: the node's)")
	f.StringVar(&c.securityGroup, "security-group", "", "security group for pod ENIs (default: the node's)")
	// the warm pool, as Terway's min_pool_size, max_pool_size and idle_ip_reclaim_after
	d := cloudnode.DefaultWarmPool
	f.IntVar(&c.pool.MinIdle, "eni-min-idle", d.MinIdle, "warm pool: free pod IPs kept ready; below this the pool refills (Terway min_pool_size)")
	f.IntVar(&c.pool.MaxIdle, "eni-max-idle", d.MaxIdle, "warm pool: free pod IPs above this go back to the cloud after --eni-idle-reclaim-after (Terway max_pool_size)")
	f.IntVar(&c.pool.WarmUp, "eni-warm-up", d.WarmUp, "warm pool: free pod IPs filled at start, before the node takes pods")
	f.DurationVar(&c.pool.IdleReclaimAfter, "eni-idle-reclaim-after", d.IdleReclaimAfter, "warm pool: how long a free IP above --eni-max-idle stays idle before it is released (Terway idle_ip_reclaim_after)")
	f.DurationVar(&c.pool.IdleReclaimAfter, "eni-idle-release", d.IdleReclaimAfter, "")
	_ = f.MarkDeprecated("eni-idle-release", "use --eni-idle-reclaim-after")
	f.BoolVar(&c.ipv4Prefixes, "eni-ipv4-prefixes", false, "warm pool: assign /28 IPv4 prefixes to ENIs instead of single secondary IPs (16 addresses per prefix, up to 10 prefixes per call, one route per /28; the vSwitch needs free aligned /28s)")
	f.StringSliceVar(&c.hostBoundFlags, "host-bound-cidrs", []string{"10.96.0.0/12"}, "destinations cloud pods reach through the host, not the ENI gateway (service CIDR)")
}

func (c *cloudFlags) parse() error {
	if p := c.pool; p.MinIdle < 0 || p.WarmUp < 0 || p.MaxIdle < p.MinIdle || p.IdleReclaimAfter <= 0 {
		return fmt.Errorf("warm pool: want 0 <= --eni-min-idle (%d) <= --eni-max-idle (%d), --eni-warm-up (%d) >= 0 and --eni-idle-reclaim-after (%s) > 0",
			p.MinIdle, p.MaxIdle, p.WarmUp, p.IdleReclaimAfter)
	}
	for _, s := range c.hostBoundFlags {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("--host-bound-cidrs %q: want CIDRs: %w", s, err)
		}
		c.hostBound = append(c.hostBound, p)
	}
	return nil
}

// discover asks the metadata service whether this node is an ECS instance
// with ENIs. Off, or no answer within two seconds, leaves the facts alone.
func (c *cloudFlags) discover(ctx context.Context, env agent.RoleEnv, f *topology.NodeFacts) error {
	if c.metadataURL == "off" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	in, err := metadata.New(c.metadataURL).Instance(ctx)
	if err != nil {
		env.Logger.Info("no ECS metadata service: not an ENI node", "url", c.metadataURL, "err", err)
		return nil
	}
	env.Logger.Info("ECS instance", "instance", in.ID, "type", in.Type)
	f.Capabilities.ENI = true
	return nil
}

// role builds the ENI multi-IP role from the metadata service and the
// instance's RAM role, or ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET when set (the DaemonSet maps them from an optional Secret).
func (c *cloudFlags) role(ctx context.Context, env agent.RoleEnv) (role.Role, error) {
	return cloudrole.New(ctx, cloudrole.Options{
		ClusterID: c.clusterID, MetadataURL: c.metadataURL, Endpoint: c.endpoint,
		AccessKeyID: os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_ID"), AccessKeySecret: os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
		PodVSwitchIDs: c.podVSwitches, SecurityGroupID: c.securityGroup,
		Pool: c.pool, IPv4Prefixes: c.ipv4Prefixes, MTU: env.PodMTU,
		HostBound: c.hostBound, StateDir: env.IPAMDir, Registry: env.Registry, Logger: env.Logger,
	})
}
