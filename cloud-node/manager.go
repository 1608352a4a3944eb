package cloudnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-net/strata/cloud-node/ecsapi"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/role"
)

// StorePool is the ipamstore pool holding every ENI secondary IP handed to a pod.
const StorePool = "eni"

// Tag keys on ENIs Strata creates; reconcile adopts only ENIs carrying both.
const (
	TagCluster = "strata.io/cluster"
	TagNode    = "strata.io/node"
)

// PodGateway is the link-local gateway pods use; the host side answers ARP
// for it (proxy ARP), so the pod never needs the VPC gateway's MAC.
var PodGateway = netip.MustParseAddr("169.254.1.1")

// CloudAPI is the part of the ECS API the manager uses (*ecsapi.Client).
type CloudAPI interface {
	CreateENI(ctx context.Context, vswitchID, securityGroupID string, count int, tags map[string]string, token string) (ecsapi.ENI, error)
	AttachENI(ctx context.Context, eniID, instanceID string) error
	DetachENI(ctx context.Context, eniID, instanceID string) error
	DeleteENI(ctx context.Context, eniID string) error
	DescribeENIs(ctx context.Context, f ecsapi.Filter) ([]ecsapi.ENI, error)
	AssignIPs(ctx context.Context, eniID string, count int, explicit []netip.Addr, prefixCount int, token string) ([]netip.Addr, []netip.Prefix, error)
	UnassignIPs(ctx context.Context, eniID string, ips []netip.Addr) error
	UnassignPrefixes(ctx context.Context, eniID string, prefixes []netip.Prefix) error
	DescribeInstanceType(ctx context.Context, id string) (ecsapi.InstanceType, error)
	DescribeVSwitch(ctx context.Context, id string) (ecsapi.VSwitch, error)
}

// ENIInfo is what the datapath needs to know about an attached ENI.
type ENIInfo struct {
	ID        string
	MAC       string
	PrimaryIP netip.Addr
	Gateway   netip.Addr
	CIDR      netip.Prefix
}

// ENIDatapath programs the node side of an ENI: find its link by MAC, bring
// it up and fill its routing table. ENIUp is idempotent.
type ENIDatapath interface {
	ENIUp(ctx context.Context, eni ENIInfo) (link string, table int, err error)
	ENIDown(ctx context.Context, eni ENIInfo) error
	// Prune removes per-pod rules for addresses not in keep.
	Prune(ctx context.Context, keep map[netip.Addr]bool) error
}

// WarmPool sizes the pool of free secondary IPs a node keeps ready, so a
// pod's address never waits for the cloud. The names map onto Terway's
// eni_conf: MinIdle is min_pool_size, MaxIdle max_pool_size,
// IdleReclaimAfter idle_ip_reclaim_after.
type WarmPool struct {
	// MinIdle: below this many free IPs the pool refills (one batch per call).
	MinIdle int
	// MaxIdle: free IPs above this go back to the cloud once they have been
	// idle IdleReclaimAfter. 0 takes max(MinIdle, 2 x BatchSize).
	MaxIdle int
	// WarmUp is how many free IPs Start fills before the role reports ready.
	WarmUp int
	// IdleReclaimAfter is how long an IP above MaxIdle stays idle before it
	// is unassigned. 0 takes DefaultWarmPool's.
	IdleReclaimAfter time.Duration
}

// DefaultWarmPool is the pool the product ships: the agent's flag defaults,
// the Helm values and the eni benchmark all take it from here. MinIdle 5
// keeps a burst of pods off the cloud's latency; MaxIdle 20 is MinIdle plus
// more than one batch of 10, so a refill never overshoots into an immediate
// reclaim; WarmUp 10 is one AssignPrivateIpAddresses call; idle IPs go back
// after 10 minutes, which rides out a rolling update without churning
// vSwitch addresses.
var DefaultWarmPool = WarmPool{MinIdle: 5, MaxIdle: 20, WarmUp: 10, IdleReclaimAfter: 10 * time.Minute}

// Config configures the ENI manager.
type Config struct {
	ClusterID    string
	InstanceID   string
	InstanceType string
	// PodVSwitchIDs are tried in order for new ENIs (the first with free
	// addresses wins).
	PodVSwitchIDs   []string
	SecurityGroupID string

	// WarmPool sizes the pool of free IPs (DefaultWarmPool is what ships).
	WarmPool
	// BatchSize is IPs per AssignPrivateIpAddresses call (ECS allows 10).
	BatchSize int
	// MaxENIs caps secondary ENIs (0: the instance type's quota).
	MaxENIs int
	// IPv4Prefixes makes the pool ask for /28 prefixes (Ipv4PrefixCount)
	// instead of single secondary IPs: each takes one slot of the ENI's IP
	// quota and gives 16 pod addresses, so an ENI holds 16 times as many
	// pods for the same calls. The vSwitch needs aligned free /28s. Off by
	// default: it spends vSwitch addresses 16 at a time.
	IPv4Prefixes bool

	PollInterval   time.Duration // attach polling (default 200 ms)
	AttachTimeout  time.Duration // default 60 s
	ResyncInterval time.Duration // full reconcile with the cloud (default 5 min)
	// ConfirmGoneAfter is how many consecutive complete listings must leave
	// out an address a listed ENI held before it is taken as gone (default
	// 3, so 15 minutes at the default ResyncInterval). Until then it is
	// unconfirmed: booked against the ENI's quota, never handed out.
	ConfirmGoneAfter int

	MTU int
	// IPVlan selects the ipvlan datapath (kernel feature-detected by the caller).
	IPVlan bool
	// HostBound are destinations ipvlan pods reach via the host (service
	// CIDR, node subnets, overlay and BGP-learned pod CIDRs): the pod routes
	// them via its ENI's primary IP on the node's own ipvlan slave. Veth pods
	// send everything to the host, where datapath rules do the same.
	HostBound []netip.Prefix
	// VPCCIDR (metadata vpc-cidr-block) is what ipvlan pods reach straight
	// through the vSwitch gateway; everything else goes via the host (see
	// role.Allocation.Direct). Unset: default via the gateway, HostBound via
	// the host.
	VPCCIDR netip.Prefix
	// ReadyMAC, if set, reports whether the guest sees an ENI's MAC (the
	// metadata service); attach waits for it after InUse.
	ReadyMAC func(ctx context.Context, mac string) (bool, error)
	// ENIGateway reads an attached ENI's vSwitch gateway from the instance
	// metadata service (network/interfaces/macs/<mac>/gateway, see
	// metadata.Client.Gateway). ECS gateways are not the subnet's first host
	// (x.x.x.253 of a /24), so nothing derives one from the CIDR: it is
	// required with a datapath or IPVlan, which route via the gateway.
	ENIGateway func(ctx context.Context, mac string) (netip.Addr, error)
	Logger     *slog.Logger
}

func (c *Config) defaults() error {
	var errs []error
	if c.ClusterID == "" {
		errs = append(errs, errors.New("ClusterID is required (tags ENIs as this cluster's)"))
	}
	if c.InstanceID == "" || c.InstanceType == "" {
		errs = append(errs, errors.New("InstanceID and InstanceType are required (read them from metadata)"))
	}
	if len(c.PodVSwitchIDs) == 0 {
		errs = append(errs, errors.New("PodVSwitchIDs needs at least one vSwitch ID for pod ENIs"))
	}
	if c.BatchSize == 0 {
		c.BatchSize = 10
	}
	if c.BatchSize < 1 || c.BatchSize > 10 {
		errs = append(errs, fmt.Errorf("BatchSize %d must be 1..10 (ECS assigns at most 10 IPs per call)", c.BatchSize))
	}
	if c.MaxIdle == 0 {
		c.MaxIdle = max(c.MinIdle, 2*c.BatchSize)
	}
	if c.MinIdle < 0 || c.MaxIdle < c.MinIdle || c.WarmUp < 0 {
		errs = append(errs, fmt.Errorf("pool sizes need 0 <= MinIdle (%d) <= MaxIdle (%d) and WarmUp (%d) >= 0", c.MinIdle, c.MaxIdle, c.WarmUp))
	}
	if c.IdleReclaimAfter == 0 {
		c.IdleReclaimAfter = DefaultWarmPool.IdleReclaimAfter
	}
	if c.PollInterval == 0 {
		c.PollInterval = 200 * time.Millisecond
	}
	if c.AttachTimeout == 0 {
		c.AttachTimeout = 60 * time.Second
	}
	if c.ResyncInterval == 0 {
		c.ResyncInterval = 5 * time.Minute
	}
	if c.ConfirmGoneAfter == 0 {
		c.ConfirmGoneAfter = 3
	}
	if c.ConfirmGoneAfter < 1 {
		errs = append(errs, fmt.Errorf("ConfirmGoneAfter %d must be >= 1 (listings that must leave an address out before it is gone)", c.ConfirmGoneAfter))
	}
	if c.MTU == 0 {
		c.MTU = 1500
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if len(errs) > 0 {
		return fmt.Errorf("cloud-node config: %w", errors.Join(errs...))
	}
	return nil
}

type eniState struct {
	info     ENIInfo
	link     string
	table    int
	ips      map[netip.Addr]bool   // pod addresses the cloud holds for this ENI: secondaries and every address of its prefixes
	prefixes map[netip.Prefix]bool // its /28 prefixes
}

// slots is how much of the ENI's IP quota its secondaries and prefixes use
// (the primary IP not counted): a prefix takes one slot for 16 addresses.
func (e *eniState) slots() int { return len(e.ips) - 15*len(e.prefixes) }

// inPrefix says whether ip belongs to one of the ENI's prefixes (it can only
// be given back with its whole prefix).
func (e *eniState) inPrefix(ip netip.Addr) (netip.Prefix, bool) {
	for p := range e.prefixes {
		if p.Contains(ip) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// addPrefix records a prefix and its 16 addresses; it returns the addresses.
func (e *eniState) addPrefix(p netip.Prefix) []netip.Addr {
	e.prefixes[p] = true
	out := prefixAddrs(p)
	for _, a := range out {
		e.ips[a] = true
	}
	return out
}

// prefixAddrs lists every address of p (all 16 of a /28 are usable).
func prefixAddrs(p netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for a := p.Masked().Addr(); a.IsValid() && p.Contains(a); a = a.Next() {
		out = append(out, a)
	}
	return out
}

type freeIP struct {
	eni   string
	since time.Time
}

// Manager is the ENI manager, warm pool and IPAM of a cloud node. Only its
// maintenance goroutine calls the cloud; Allocate and Release touch the
// in-memory pool and the bbolt store only.
type Manager struct {
	cfg   Config
	api   CloudAPI
	dp    ENIDatapath
	store *ipamstore.Store
	log   *slog.Logger

	mu   sync.Mutex
	enis map[string]*eniState
	// unadopted are InUse ENIs of this node that adopt failed for (e.g. no
	// gateway in metadata), with the error: while there is one the pool
	// creates no ENI (a failing adopt would fail again on the next one) and
	// resync retries them.
	unadopted map[string]error
	free      map[netip.Addr]freeIP
	claiming  map[netip.Addr]bool // left the pool, store write in progress
	changed   chan struct{}       // closed and replaced when the pool changes
	waiting   int
	lastErr   error
	started   bool
	limits    ecsapi.InstanceType
	dirty     bool
	wake      chan struct{}
	cancel    context.CancelFunc
	done      chan struct{}
	nodeAddr  netip.Addr
	warm      int // free IPs Start waits for (0 once started)
	poolSize  prometheus.GaugeFunc
	allocs    prometheus.Counter

	// confirmed gone (see resync)
	absent      map[netip.Prefix]int  // consecutive complete listings that left out a booked /32 or /28
	unconfirmed map[netip.Addr]bool   // booked addresses the last listing left out: never handed out
	releasing   map[netip.Prefix]bool // unassigns that failed or timed out: absent once means done
	lost        []string              // pods whose address the cloud confirmed gone
	resyncs     uint64
	resyncing   bool
	resyncErr   error

	metUnconfirmed     prometheus.GaugeFunc
	metLost            prometheus.GaugeFunc
	omissions          prometheus.Counter
	incompleteListings prometheus.Counter
}

// NewManager builds a manager over an open store. dp may be nil (no kernel
// side, e.g. in unit tests).
func NewManager(cfg Config, api CloudAPI, store *ipamstore.Store, dp ENIDatapath) (*Manager, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if cfg.ENIGateway == nil && (dp != nil || cfg.IPVlan) {
		return nil, errors.New("cloud-node config: ENIGateway is required with a datapath or IPVlan (read it from the metadata service: metadata.Client.Gateway)")
	}
	m := &Manager{cfg: cfg, api: api, dp: dp, store: store, log: cfg.Logger,
		enis: map[string]*eniState{}, unadopted: map[string]error{}, free: map[netip.Addr]freeIP{}, claiming: map[netip.Addr]bool{},
		absent: map[netip.Prefix]int{}, unconfirmed: map[netip.Addr]bool{}, releasing: map[netip.Prefix]bool{},
		changed: make(chan struct{}), wake: make(chan struct{}, 1)}
	m.poolSize = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "strata_eni_pool_idle_ips",
		Help: "Free secondary IPs in the warm pool."}, func() float64 { return float64(m.Idle()) })
	m.allocs = prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_eni_allocations_total",
		Help: "Pod IP allocations served."})
	m.metUnconfirmed = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "strata_eni_unconfirmed_addresses",
		Help: "Addresses this node holds that the cloud's last listing left out: kept, not handed out, until listed again or confirmed gone."},
		func() float64 { return float64(m.Unconfirmed()) })
	m.metLost = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "strata_eni_lost_allocations",
		Help: "Pods whose address the cloud has confirmed gone from this node (recreate them; strata status shows them as poolLost)."},
		func() float64 { return float64(len(m.Lost())) })
	m.omissions = prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_eni_listing_omissions_total",
		Help: "DescribeNetworkInterfaces listings that left out an ENI or an address this node holds."})
	m.incompleteListings = prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_eni_incomplete_listings_total",
		Help: "DescribeNetworkInterfaces listings whose pages did not add up (ignored; retried at the next resync)."})
	return m, nil
}

// Collectors are the manager's metrics for the caller's registry.
func (m *Manager) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.poolSize, m.allocs, m.metUnconfirmed, m.metLost, m.omissions, m.incompleteListings}
}

// Unconfirmed is the number of addresses this node holds that the cloud's
// last listing left out (not handed out until listed again or confirmed gone).
func (m *Manager) Unconfirmed() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.unconfirmed)
}

// Lost lists the pods ("container/ifname (address on ENI)") whose address the
// cloud has confirmed gone from this node: they must be recreated.
func (m *Manager) Lost() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.lost)
}

// PoolError is the pool's last cloud error: the last resync's while it
// failed (until one succeeds), else the last refill's. Both are retried.
func (m *Manager) PoolError() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.resyncErr != nil {
		return m.resyncErr
	}
	return m.lastErr
}

// Idle is the number of free IPs in the warm pool.
func (m *Manager) Idle() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.free)
}

// Name is the role's datapath name, as the topology plan spells it.
func (m *Manager) Name() string { return "eni-multi-ip" }

// NodeContainerID is the attachment under which the node's own address (a
// reserved ENI secondary IP, see NodeAddr) is recorded.
const NodeContainerID = "strata-node"

// NodeAddr is an ENI secondary IP reserved for the node itself (the agent
// puts it on the overlay device and probes the native pod path from it).
// It is valid after Start.
func (m *Manager) NodeAddr() netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nodeAddr
}

func (m *Manager) tags() map[string]string {
	return map[string]string{TagCluster: m.cfg.ClusterID, TagNode: m.cfg.InstanceID}
}

// Start reconciles with the cloud (adopting this node's ENIs, collecting
// orphans), fills the pool to WarmUp and starts maintenance. It returns when
// the pool is warm or ctx ends; maintenance runs until Stop.
func (m *Manager) Start(ctx context.Context) error {
	lim, err := m.api.DescribeInstanceType(ctx, m.cfg.InstanceType)
	if err != nil {
		return fmt.Errorf("read ENI capacity of %s: %w", m.cfg.InstanceType, err)
	}
	if lim.ENIs < 2 || lim.IPsPerENI < 2 {
		return fmt.Errorf("instance type %s allows %d ENIs with %d IPs each: too small for ENIIP pods (pick a type with >= 2 ENIs)", lim.ID, lim.ENIs, lim.IPsPerENI)
	}
	m.mu.Lock()
	m.limits = lim
	m.mu.Unlock()
	if err := m.resync(ctx); err != nil {
		return fmt.Errorf("reconcile with the cloud: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.mu.Lock()
	m.cancel, m.done, m.started = cancel, make(chan struct{}), true
	m.mu.Unlock()
	go m.run(runCtx)
	if err := m.reserveNodeAddr(ctx); err != nil {
		return err
	}
	want := min(m.cfg.WarmUp, m.capacity()-1)
	m.mu.Lock()
	m.warm = want
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.warm = 0
		m.mu.Unlock()
	}()
	for {
		m.mu.Lock()
		n, ch, lerr := len(m.free), m.changed, m.lastErr
		m.mu.Unlock()
		if n >= want {
			return nil
		}
		m.kick()
		select {
		case <-ctx.Done():
			return fmt.Errorf("warm-up to %d IPs (have %d, last error %v): %w", want, n, lerr, ctx.Err())
		case <-ch:
		}
	}
}

func (m *Manager) reserveNodeAddr(ctx context.Context) error {
	a, err := m.Allocate(ctx, role.PodRequest{ContainerID: NodeContainerID, IfName: "node"})
	if err != nil {
		return fmt.Errorf("reserve the node's own ENI address: %w", err)
	}
	m.mu.Lock()
	m.nodeAddr = a.Addr.Addr()
	m.mu.Unlock()
	return nil
}

// Stop ends maintenance and closes the store. Allocations stay persisted and
// ENIs stay attached for the next start.
func (m *Manager) Stop(ctx context.Context) error {
	m.halt()
	return m.store.Close()
}

// Kill stops maintenance after its current cloud call, with no cleanup at
// all, like a crash; the store stays open for the caller to close.
func (m *Manager) Kill() { m.halt() }

func (m *Manager) halt() {
	m.mu.Lock()
	cancel, done := m.cancel, m.done
	m.cancel = nil
	m.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// capacity is the most secondary IPs this node may hold.
func (m *Manager) capacity() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.maxENIs() * (m.limits.IPsPerENI - 1) * m.perSlot()
}

// perSlot is the pod addresses one slot of an ENI's IP quota gives.
func (m *Manager) perSlot() int {
	if m.cfg.IPv4Prefixes {
		return 16
	}
	return 1
}

func (m *Manager) maxENIs() int {
	n := m.limits.ENIs - 1 // the primary ENI is the node's own
	if m.cfg.MaxENIs > 0 {
		n = min(n, m.cfg.MaxENIs)
	}
	return n
}

func (m *Manager) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// notify wakes everyone waiting for the pool (locked).
func (m *Manager) notify() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Allocate hands the attachment a free IP from the warm pool. It calls the
// cloud only indirectly, by waiting for the maintainer when the pool is empty.
func (m *Manager) Allocate(ctx context.Context, req role.PodRequest) (role.Allocation, error) {
	if req.ContainerID == "" || req.IfName == "" {
		return role.Allocation{}, errors.New("allocate: ContainerID and IfName are required")
	}
	for {
		if rec, ok, err := m.store.Get(StorePool, req.ContainerID, req.IfName); err != nil {
			return role.Allocation{}, fmt.Errorf("allocate %s: read store: %w", req.Key(), err)
		} else if ok {
			m.mu.Lock()
			a := m.allocation(rec)
			m.mu.Unlock()
			return a, nil
		}
		m.mu.Lock()
		if !m.started {
			m.mu.Unlock()
			return role.Allocation{}, errors.New("allocate: the cloud role is not started")
		}
		ip, f, ok := m.pick()
		if !ok {
			ch, lerr := m.changed, m.lastErr
			m.waiting++
			m.mu.Unlock()
			m.kick()
			select {
			case <-ctx.Done():
				m.mu.Lock()
				m.waiting--
				m.mu.Unlock()
				if lerr != nil {
					return role.Allocation{}, fmt.Errorf("allocate %s: pool empty (last cloud error: %v): %w", req.Key(), lerr, ctx.Err())
				}
				return role.Allocation{}, fmt.Errorf("allocate %s: pool empty: %w", req.Key(), ctx.Err())
			case <-ch:
			}
			m.mu.Lock()
			m.waiting--
			m.mu.Unlock()
			continue
		}
		delete(m.free, ip)
		m.claiming[ip] = true
		low := len(m.free) < m.cfg.MinIdle
		m.mu.Unlock()
		rec, err := m.store.Claim(StorePool, func(yield func(netip.Addr) bool) { yield(ip) }, ipamstore.Record{
			ContainerID: req.ContainerID, IfName: req.IfName, PodNamespace: req.PodNamespace, PodName: req.PodName,
			Meta: map[string]string{"eni": f.eni}})
		m.mu.Lock()
		delete(m.claiming, ip)
		m.mu.Unlock()
		if err != nil {
			m.mu.Lock()
			if !errors.Is(err, ipamstore.ErrExhausted) {
				m.free[ip] = f // not recorded: back to the pool
			} else {
				m.dirty = true // the store already holds it: resync will sort it out
			}
			m.mu.Unlock()
			if errors.Is(err, ipamstore.ErrExhausted) {
				continue
			}
			return role.Allocation{}, fmt.Errorf("allocate %s: persist: %w", req.Key(), err)
		}
		if rec.Addr != ip {
			// a concurrent ADD of the same attachment won: ours goes back
			m.mu.Lock()
			m.free[ip] = f
			m.mu.Unlock()
		}
		if low {
			m.kick()
		}
		m.allocs.Inc()
		m.mu.Lock()
		a := m.allocation(rec)
		m.mu.Unlock()
		return a, nil
	}
}

// pick chooses a free IP (locked): the longest idle first, so released IPs
// rest before reuse.
func (m *Manager) pick() (netip.Addr, freeIP, bool) {
	var best netip.Addr
	var bf freeIP
	for ip, f := range m.free {
		if !best.IsValid() || f.since.Before(bf.since) || (f.since.Equal(bf.since) && ip.Less(best)) {
			best, bf = ip, f
		}
	}
	return best, bf, best.IsValid()
}

func (m *Manager) allocation(rec ipamstore.Record) role.Allocation {
	a := role.Allocation{ContainerID: rec.ContainerID, IfName: rec.IfName, PodNamespace: rec.PodNamespace,
		PodName: rec.PodName, Addr: netip.PrefixFrom(rec.Addr, 32), Gateway: PodGateway, MTU: m.cfg.MTU,
		Datapath: role.DatapathVethRouted}
	e, ok := m.enis[rec.Meta["eni"]]
	if ok {
		a.Table, a.ENILink, a.ENIMAC = e.table, e.link, e.info.MAC
	}
	if m.cfg.IPVlan && ok && e.link != "" {
		// a slave of the ENI: the VPC straight via the vSwitch gateway,
		// the rest via the ENI's primary IP on the node's own slave
		a.Datapath, a.Gateway, a.HostVia = role.DatapathIPVlan, e.info.Gateway, e.info.PrimaryIP
		a.Routes = slices.Clone(m.cfg.HostBound)
		if m.cfg.VPCCIDR.IsValid() {
			a.Direct = []netip.Prefix{m.cfg.VPCCIDR}
		}
	}
	return a
}

// Release returns the attachment's IP to the warm pool.
func (m *Manager) Release(ctx context.Context, containerID, ifName string) error {
	rec, found, err := m.store.Release(StorePool, containerID, ifName)
	if err != nil {
		return fmt.Errorf("release %s/%s: %w", containerID, ifName, err)
	}
	if !found {
		return nil
	}
	m.mu.Lock()
	if e, ok := m.enis[rec.Meta["eni"]]; ok && e.ips[rec.Addr] && !m.unconfirmed[rec.Addr] {
		m.free[rec.Addr] = freeIP{eni: e.info.ID, since: time.Now()}
	} else {
		m.dirty = true
	}
	over := len(m.free) > m.cfg.MaxIdle
	m.notify()
	m.mu.Unlock()
	if over {
		m.kick()
	}
	return nil
}

// Allocations lists live attachments.
func (m *Manager) Allocations(ctx context.Context) ([]role.Allocation, error) {
	recs, err := m.store.List(StorePool)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]role.Allocation, 0, len(recs))
	for _, r := range recs {
		if r.ContainerID == NodeContainerID {
			continue // the node's own address is no pod's: CNI GC must not free it
		}
		out = append(out, m.allocation(r))
	}
	return out, nil
}

// Ready says whether Allocate can succeed now.
func (m *Manager) Ready() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case !m.started:
		return errors.New("cloud role not started")
	case len(m.free) == 0 && m.lastErr != nil:
		return fmt.Errorf("warm pool empty; last cloud error: %w", m.lastErr)
	}
	return nil
}

// OwnedPrefixes are what peers route to this node: the /32s of live pod
// IPs, and every /28 prefix its ENIs hold (all its addresses are this
// node's, so one route covers 16 pods; DESIGN.md's per-prefix routes).
func (m *Manager) OwnedPrefixes() []netip.Prefix {
	recs, err := m.store.List(StorePool)
	if err != nil {
		m.log.Error("list allocations", "err", err)
		return nil
	}
	m.mu.Lock()
	var out []netip.Prefix
	for _, e := range m.enis {
		for p := range e.prefixes {
			out = append(out, p)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	for _, r := range recs {
		if !slices.ContainsFunc(out, func(p netip.Prefix) bool { return p.Contains(r.Addr) }) {
			out = append(out, netip.PrefixFrom(r.Addr, 32))
		}
	}
	return out
}

// Snapshot is the manager's view for accounting checks.
type Snapshot struct {
	ENIs  map[string][]netip.Addr // secondary IPs per ENI, as last seen in the cloud
	Free  []netip.Addr
	Store []netip.Addr
}

// Snapshot returns the current pool, store and ENI view.
func (m *Manager) Snapshot() (Snapshot, error) {
	recs, err := m.store.List(StorePool)
	if err != nil {
		return Snapshot{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Snapshot{ENIs: map[string][]netip.Addr{}}
	for id, e := range m.enis {
		s.ENIs[id] = slices.SortedFunc(maps.Keys(e.ips), func(a, b netip.Addr) int { return a.Compare(b) })
	}
	s.Free = slices.SortedFunc(maps.Keys(m.free), func(a, b netip.Addr) int { return a.Compare(b) })
	for _, r := range recs {
		s.Store = append(s.Store, r.Addr)
	}
	sort.Slice(s.Store, func(i, j int) bool { return s.Store[i].Less(s.Store[j]) })
	return s, nil
}

var (
	_ role.Role          = (*Manager)(nil)
	_ role.NodeAddresser = (*Manager)(nil)
	// what internal/agent's /status reads of a cloud pool
	_ interface {
		Idle() int
		Unconfirmed() int
		Lost() []string
		PoolError() error
	} = (*Manager)(nil)
)
