package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/strata-net/strata/bpf"
	"github.com/strata-net/strata/cni/server"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/nodepool"
	"github.com/strata-net/strata/topology"
	"github.com/strata-net/strata/topology/probe"
	"github.com/strata-net/strata/vxlan"
)

// Agent is one node's daemon.
type Agent struct {
	cfg      Config
	roles    Roles
	discover []Discoverer
	log      *slog.Logger
	reg      *prometheus.Registry
	m        *metrics

	kube    kubernetes.Interface
	rest    *rest.Config
	meta    atomic.Pointer[metadataFilter] // nil until the CNI server starts (metadata.go)
	mux     *http.ServeMux
	self    topology.NodeFacts
	role    role.Role
	decider *topology.Decider
	overlay *vxlan.Datapath
	native  *nativeRoutes
	prober  *probe.Prober
	fast    *podFastpath
	wan     *wanPath

	events chan func() // serialised updates to the decider

	profile    nodepool.Profile    // the node's annotations and NodePool (nodepool.go)
	overlayMTU int                 // the NodePool's vxlan.mtu; 0: from the underlay
	poolAlloc  *nodepool.Allocator // set when the node's pool has podCIDRs
	poolName   string
	pools      poolSpecs

	apiNodes    nameSet     // nodes the API server has shown us
	cachedNodes nameSet     // nodes in the peer cache this agent started from
	offline     atomic.Bool // started from cached facts; gossip is the only channel

	mu       sync.Mutex
	plan     *topology.Plan
	programs map[string]topology.PeerProgram // last programmed, per peer
}

// New checks the configuration; Run does the work. Discoverers run in order
// at start, before the plan names this node's datapath.
func New(cfg Config, roles Roles, discover ...Discoverer) (*Agent, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	log := cfg.Logger.With("node", cfg.NodeName)
	return &Agent{cfg: cfg, roles: roles, discover: discover, log: log, reg: reg, m: newMetrics(reg),
		events: make(chan func(), 1024), programs: map[string]topology.PeerProgram{}, wan: newWANPath(cfg, log)}, nil
}

// Run starts the node and serves until ctx ends. On return everything the
// agent started is stopped; kernel state and IPAM stay, so pods keep
// working across an agent restart.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, d := range []string{a.cfg.StateDir, a.cfg.IPAMDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	// The fast-path decision comes first: --bpf-fastpath=on on a kernel
	// that cannot run it stops the agent before it changes anything.
	fast, err := newPodFastpath(a.cfg.BPF, bpf.Supported, nil, a.log.With("component", "bpf"))
	if err != nil {
		return err
	}
	a.fast = fast
	defer a.fast.close() // programs detach: pod traffic falls back to routing
	a.fast.register(a.reg)
	if err := a.serveHTTP(ctx); err != nil {
		return err
	}

	// 1. Node facts: the API server, or the cache when it is unreachable.
	node, err := a.loadNode(ctx)
	if err != nil {
		return err
	}
	if err := a.applyPool(ctx, &node); err != nil {
		return err
	}
	ul, err := discoverUnderlay(a.cfg.UnderlayIP, a.cfg.UnderlayLink)
	if err != nil {
		return err
	}
	self, err := localFacts(a.cfg, node, ul)
	if err != nil {
		return err
	}
	if err := enableForwarding(); err != nil {
		return err
	}
	env := RoleEnv{NodeName: a.cfg.NodeName, Node: node.obj, StateDir: a.cfg.StateDir, IPAMDir: a.cfg.IPAMDir, Kube: a.kube,
		RESTConfig: a.rest, Handle: a.handle,
		Registry: a.reg, Logger: a.log, PodMTU: a.poolPodMTU(wanPodMTU(a.cfg.WAN.Setting, ul.mtu)), Profile: a.profile}
	if node.cached {
		// Discoverers that need the API server find nothing now; the
		// capabilities found at the last online start keep the same role.
		self.Capabilities = a.loadCapabilities()
	}
	for _, d := range a.discover {
		env.Facts = self
		if err := d(ctx, env, &self); err != nil {
			return fmt.Errorf("discover node facts: %w", err)
		}
	}
	if !node.cached {
		a.saveCapabilities(self.Capabilities)
	}

	// 2. The node's declared facts and capabilities name its datapath,
	// hence its role.
	d, err := topology.NewDecider(a.cfg.Topology)
	if err != nil {
		return err
	}
	a.decider = d
	// Ownership checks are on before any claim is seen (docs/trust.md).
	d.SetAuthority(a.baseAuthority(ul))
	d.SetNodeAuthority(self.Name, node.allocation(), node.Created)
	dp, reason := topology.RoleFor(self)
	factory, ok := a.roles[dp]
	if !ok {
		return fmt.Errorf("this node needs datapath %q (%s), which this agent cannot build; check the node's strata.io labels", dp, reason)
	}
	a.log.Info("datapath chosen", "datapath", dp, "reason", reason)
	env.Facts, env.Logger = self, a.log.With("role", string(dp))
	a.role, err = factory(ctx, env)
	if err != nil {
		return fmt.Errorf("build role %s: %w", dp, err)
	}
	if err := a.role.Start(ctx); err != nil {
		return fmt.Errorf("start role %s: %w", dp, err)
	}
	defer func() { _ = a.role.Stop(context.WithoutCancel(ctx)) }()
	a.m.datapath.WithLabelValues(string(dp)).Set(1)

	// 3. What the role owns completes the facts.
	na, ok := a.role.(role.NodeAddresser)
	if !ok || !na.NodeAddr().IsValid() {
		return fmt.Errorf("role %s reserves no node address for probes and the overlay", a.role.Name())
	}
	self.ProbeIP = na.NodeAddr()
	self.PodPrefixes = a.ownedPrefixes(self)
	self.VTEPMAC = vxlan.DefaultMAC(a.cfg.VNI, self.ProbeIP).String()
	self.VTEPPort = a.cfg.VXLANPort
	if err := a.startWAN(&self); err != nil {
		return err
	}
	defer a.wan.close()
	a.self = self
	if _, err := d.UpsertNode(self); err != nil {
		return fmt.Errorf("this node's facts: %w", err)
	}

	// 4. Datapaths: the overlay device and the native probe path.
	a.overlay, err = vxlan.New(vxlan.DeviceConfig{VNI: a.cfg.VNI, Port: a.cfg.VXLANPort, MTU: a.overlayMTU, LocalIP: ul.ip,
		UnderlayLink: ul.link, OverlayIP: self.ProbeIP}, a.log.With("datapath", "vxlan"))
	if err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	a.reg.MustRegister(a.overlay)
	go func() {
		if err := a.overlay.Run(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("vxlan drift repair stopped", "err", err)
		}
	}()
	a.native = &nativeRoutes{table: a.cfg.NativeTable, mark: a.cfg.ProbeMark, underlay: ul}
	if err := a.native.setupProbePath(); err != nil {
		return err
	}

	// 5. Learn the peers (API server, else the facts cached at the last
	// programming), program them, which creates the overlay device and the
	// node address on it, then start gossip and probes from that address.
	a.publish(ctx, dp)
	a.offline.Store(node.cached)
	if a.kube != nil && !node.cached {
		a.watchNodes(ctx)
	} else {
		a.loadCachedPeers()
	}
	a.drainEvents()
	a.program(ctx, time.Now(), true)
	a.fast.start(ctx, a.role.Allocations)
	if err := a.startProber(ctx); err != nil {
		return err
	}
	defer func() { _ = a.prober.Close() }()
	if err := a.startWANProber(); err != nil {
		return err
	}
	if a.kube != nil && node.cached {
		go a.watchNodesWhenReachable(ctx)
	}

	// 6. Serve CNI.
	l, err := server.Listen(a.cfg.CNISocket)
	if err != nil {
		return fmt.Errorf("CNI socket %s: %w", a.cfg.CNISocket, err)
	}
	srv := server.New(a.fast.wrap(a.role), server.Options{Logger: a.log.With("component", "cni"), Blocked: a.startMetadata(ctx)})
	for _, c := range srv.Collectors() {
		a.reg.MustRegister(c)
	}
	go func() {
		if err := srv.Serve(ctx, l); err != nil && ctx.Err() == nil {
			a.log.Error("CNI server stopped", "err", err)
			cancel()
		}
	}()
	a.log.Info("agent ready", "underlay", ul.ip, "probe", self.ProbeIP, "cni", a.cfg.CNISocket)
	return a.loop(ctx)
}

// loop applies fact and probe updates in order and reprograms peers whose
// path changed. Time advances every probe period so hold-downs expire.
func (a *Agent) loop(ctx context.Context) error {
	period := a.cfg.ProbePeriod
	if period == 0 {
		period = probe.DefaultProbePeriod
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	resync := time.NewTicker(30 * time.Second)
	defer resync.Stop()
	owned := time.NewTicker(time.Second)
	defer owned.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case fn := <-a.events:
			t0 := time.Now()
			fn()
			for drained := false; !drained; { // batch what is queued
				select {
				case fn := <-a.events:
					fn()
				default:
					drained = true
				}
			}
			a.program(ctx, t0, false)
		case now := <-tick.C:
			if _, changed := a.decider.Advance(now); changed {
				a.program(ctx, now, false)
			}
		case <-resync.C:
			a.program(ctx, time.Now(), true)
		case <-owned.C:
			a.refreshOwned(ctx)
		}
	}
}

// refreshOwned republishes this node's facts when the addresses its role
// owns change (cloud pods are per-pod /32s that come and go).
func (a *Agent) refreshOwned(ctx context.Context) {
	pfx := a.ownedPrefixes(a.self)
	if slices.Equal(pfx, a.self.PodPrefixes) {
		return
	}
	a.self.PodPrefixes = pfx
	if _, err := a.decider.UpsertNode(a.self); err != nil {
		a.log.Error("own facts rejected", "err", err)
		return
	}
	if err := a.prober.SetFacts(a.self); err != nil {
		a.log.Warn("gossip cannot carry this node's facts; the API server still does", "err", err)
	}
	go a.publish(ctx, "")
}

// ownedPrefixes are the pod addresses peers route to this node: what the
// role owns beyond the pod CIDR, plus the node's own probe/overlay address
// when the role's prefixes do not cover it.
func (a *Agent) ownedPrefixes(self topology.NodeFacts) []netip.Prefix {
	var out []netip.Prefix
	covered := self.PodCIDR.IsValid() && self.PodCIDR.Contains(self.ProbeIP)
	for _, p := range a.role.OwnedPrefixes() {
		if p == self.PodCIDR {
			continue
		}
		covered = covered || p.Contains(self.ProbeIP)
		out = append(out, p)
	}
	if !covered && self.ProbeIP.IsValid() {
		out = append(out, netip.PrefixFrom(self.ProbeIP, self.ProbeIP.BitLen()))
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// drainEvents applies every queued update now (before the first programming).
func (a *Agent) drainEvents() {
	for {
		select {
		case fn := <-a.events:
			fn()
		default:
			return
		}
	}
}

// post queues an update of the decider for the loop.
func (a *Agent) post(fn func()) {
	select {
	case a.events <- fn:
	default:
		a.m.droppedEvents.Inc()
	}
}

// program pushes the current plan's peers to the datapaths: every peer on
// full resync, else only when some peer's programming changed.
func (a *Agent) program(ctx context.Context, since time.Time, full bool) {
	plan := a.decider.Plan()
	peers := plan.PeersOf(a.self.Name)
	a.mu.Lock()
	changed := full
	next := make(map[string]topology.PeerProgram, len(peers))
	var changes []topology.PeerChange
	for _, pp := range peers {
		next[pp.Peer] = pp
		if old, ok := a.programs[pp.Peer]; !ok || !old.SameProgramming(pp) {
			changed = true
			changes = append(changes, topology.PeerChange{Local: a.self.Name, Old: old, New: pp})
			if ok && old.Path != pp.Path {
				a.log.Info("path switch", "peer", pp.Peer, "from", old.Path, "to", pp.Path, "reason", pp.Reason)
			}
		}
	}
	if len(next) != len(a.programs) {
		changed = true
	}
	a.plan = plan
	a.mu.Unlock()
	if !changed {
		return
	}
	var overlay []vxlan.Peer
	var native []nativeRoute
	for _, pp := range peers {
		switch pp.Path {
		case topology.PathVXLAN:
			p, err := a.overlayPeer(plan, pp)
			if err != nil {
				a.log.Warn("cannot program overlay peer", "peer", pp.Peer, "err", err)
				continue
			}
			overlay = append(overlay, p)
		case topology.PathNative:
			for _, pfx := range pp.PodPrefixes {
				if pp.NextHop.IsValid() && a.native.onLink(pp.NextHop) {
					native = append(native, nativeRoute{dst: pfx, via: pp.NextHop})
				}
			}
		}
	}
	a.overlay.SetMembers(overlayMembers(peers))
	err := errors.Join(a.overlay.Reconcile(ctx, overlay), a.native.reconcile(native), a.programWAN(plan, peers))
	if err != nil {
		a.log.Error("programming peers failed; retrying on the next resync", "err", err)
		a.m.programErrors.Inc()
		return
	}
	a.mu.Lock()
	a.programs = next
	a.mu.Unlock()
	a.fast.setPodPrefixes(plan)
	a.fast.attachUplinks(a.native.underlay.link, a.overlay.Config().Name)
	a.savePeers(plan)
	a.m.topo.SetPlan(plan)
	a.m.topo.Switched(changes, time.Since(since))
}

// overlayMembers are the underlay addresses VXLAN is accepted from: every
// peer this node routes to, natively or over the overlay, so a pair moving
// to the overlay is accepted before this node has reprogrammed it. Isolated
// and unreachable peers are not members.
func overlayMembers(peers []topology.PeerProgram) []netip.Addr {
	var out []netip.Addr
	for _, pp := range peers {
		switch {
		case pp.Path == topology.PathVXLAN && pp.VTEP.IsValid():
			out = append(out, pp.VTEP)
		case pp.Path == topology.PathNative && pp.NextHop.IsValid():
			out = append(out, pp.NextHop)
		}
	}
	return out
}

func (a *Agent) overlayPeer(plan *topology.Plan, pp topology.PeerProgram) (vxlan.Peer, error) {
	np, ok := plan.Node(pp.Peer)
	if !ok || !np.Facts.ProbeIP.IsValid() {
		return vxlan.Peer{}, fmt.Errorf("peer %s has published no probe/overlay address yet", pp.Peer)
	}
	mac, err := net.ParseMAC(pp.VTEPMAC)
	if err != nil {
		return vxlan.Peer{}, fmt.Errorf("peer %s VTEP MAC %q: %w", pp.Peer, pp.VTEPMAC, err)
	}
	return vxlan.Peer{Name: pp.Peer, UnderlayIP: pp.VTEP, MAC: mac, OverlayIP: np.Facts.ProbeIP, Prefixes: pp.PodPrefixes}, nil
}

// nameSet is a concurrent set of node names.
type nameSet struct{ m sync.Map }

func (s *nameSet) Add(name string)      { s.m.Store(name, struct{}{}) }
func (s *nameSet) Has(name string) bool { _, ok := s.m.Load(name); return ok }
func (s *nameSet) Delete(name string)   { s.m.Delete(name) }
