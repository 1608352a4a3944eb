package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/api"
	"github.com/strata-net/strata/bpf"
	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/internal/rtproto"
	"github.com/strata-net/strata/topology"
)

// fastpathResync is how often every pod's fast-path entries are rebuilt from
// the role's allocations and the kernel, repairing missed route events.
const fastpathResync = 10 * time.Second

// podFastpath wires the eBPF fast path (package bpf) into the agent: the
// decision, the pods' endpoint entries, the pod prefixes, the uplinks and the
// run-time switch. With the fast path inactive every method is a no-op and
// wrap returns the role unchanged, so the agent behaves as without it.
//
// Pod entries follow the CNI calls, but the plugin creates the pod's veth
// only after ADD returns. So ADD records the allocation, and the entry is
// written once the kernel shows the plugin's /32 host route (protocol
// rtproto.Pod) to the pod's address: that route names the host veth. A route
// subscription gives low latency; a periodic full Sync repairs any miss and
// drops entries of pods that are gone. DEL removes the entries before the
// role frees the address.
type podFastpath struct {
	setting  bpf.Setting
	decision bpf.Decision
	fp       *bpf.Fastpath // nil when inactive
	ns       *nsutil.NS    // the node namespace; nil means the agent's own
	log      *slog.Logger
	kick     chan struct{} // something changed: sync the pods soon
	stopRun  context.CancelFunc
	runDone  chan struct{}

	// opMu orders pod writes: a sync that found a pod never writes its
	// entry after DEL removed it.
	opMu     sync.Mutex
	mu       sync.Mutex
	pods     map[netip.Addr]role.Allocation // veth pods the role has handed out
	attached map[netip.Addr]hostVeth        // pod address -> host veth of its entry
	prefixes []netip.Prefix
	lastErr  string

	// netfilter lists the forward rules the fast path would bypass; nil
	// skips the check. With --bpf-fastpath=auto the fast path steps aside
	// (switches off) while any exist, unless the operator switched it.
	netfilter    func() ([]bpf.ForwardFilter, error)
	filters      []bpf.ForwardFilter
	steppedAside bool
	operatorSet  bool // switched at run time: the check no longer toggles it
}

// netfilterCheckEvery is how often the forward rules are re-read: a
// NetworkPolicy enforcer that starts after the agent is bypassed for at
// most this long.
const netfilterCheckEvery = 2 * time.Second

// newPodFastpath decides whether the fast path runs and loads it if so. The
// probe runs only when the setting allows the fast path. It fails only when
// the setting is "on" and the fast path cannot run.
func newPodFastpath(cfg bpf.Config, probe func() error, ns *nsutil.NS, log *slog.Logger) (*podFastpath, error) {
	f := &podFastpath{setting: cfg.Setting, ns: ns, log: log, kick: make(chan struct{}, 1),
		pods: map[netip.Addr]role.Allocation{}, attached: map[netip.Addr]hostVeth{}}
	if f.setting == "" {
		f.setting = bpf.SettingAuto
	}
	var perr error
	if f.setting != bpf.SettingOff {
		perr = probe()
	}
	d, err := bpf.Decide(f.setting, perr)
	if err != nil {
		return nil, err
	}
	f.decision = d
	if !d.Active {
		log.Info("bpf fast path inactive", "reason", d.Reason)
		return f, nil
	}
	fp, err := bpf.Load(bpf.Options{NS: ns, Attach: cfg.Attach, Logger: log})
	if err != nil {
		if f.setting == bpf.SettingOn {
			return nil, fmt.Errorf("bpf fast path is required (--bpf-fastpath=on) but does not load: %w; set --bpf-fastpath=auto or off", err)
		}
		f.decision = bpf.Decision{Reason: "programs failed to load, using kernel routing: " + err.Error()}
		log.Warn("bpf fast path inactive", "reason", f.decision.Reason)
		return f, nil
	}
	f.fp = fp
	ignore := cfg.NetfilterIgnore
	if ignore == nil {
		ignore = bpf.DefaultForwardIgnore
	}
	f.netfilter = func() ([]bpf.ForwardFilter, error) { return bpf.FindForwardFilters(ns, ignore) }
	log.Info("bpf fast path active", "reason", d.Reason)
	f.checkNetfilter() // before the first pod is fast-pathed
	return f, nil
}

// checkNetfilter re-reads the forward rules. Fast-pathed pod packets never
// reach the FORWARD hook, so where a rule there can drop them (a
// NetworkPolicy enforcer, a host firewall) the auto fast path switches off
// and says why, and switches on again once no such rule is left. Rules
// that cannot be read count as filtering.
func (f *podFastpath) checkNetfilter() {
	if !f.active() || f.netfilter == nil {
		return
	}
	filters, err := f.netfilter()
	if err != nil {
		filters = []bpf.ForwardFilter{{Why: "netfilter rules unreadable, assumed to filter: " + err.Error()}}
	}
	f.mu.Lock()
	changed := !slices.Equal(filters, f.filters)
	f.filters = filters
	toggle := f.setting == bpf.SettingAuto && !f.operatorSet
	aside := f.steppedAside
	f.mu.Unlock()
	if !toggle {
		if changed && len(filters) > 0 && f.setting == bpf.SettingOn {
			f.log.Warn("bpf fast path forced on while netfilter filters forwarded traffic: those rules do not see fast-pathed pod packets", "filters", fmt.Sprint(filters))
		}
		return
	}
	switch {
	case len(filters) > 0 && !aside:
		if err := f.fp.SetEnabled(false); err != nil {
			f.noteErr(fmt.Errorf("step aside for netfilter: %w", err))
			return
		}
		f.log.Warn("bpf fast path stepped aside: netfilter filters forwarded traffic, so pod traffic takes the kernel path through those rules", "filters", fmt.Sprint(filters))
	case len(filters) == 0 && aside:
		if err := f.fp.SetEnabled(true); err != nil {
			f.noteErr(fmt.Errorf("resume after netfilter: %w", err))
			return
		}
		f.log.Info("bpf fast path resumed: no netfilter forward rule filters pod traffic any more")
	default:
		return
	}
	f.mu.Lock()
	f.steppedAside = !aside
	f.mu.Unlock()
}

func (f *podFastpath) active() bool { return f != nil && f.fp != nil }

// register exports the counters and whether the fast path forwards.
func (f *podFastpath) register(reg prometheus.Registerer) {
	on := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "strata_bpf_fastpath_active",
		Help: "1 when the eBPF fast path is loaded and switched on, 0 when pod traffic takes kernel routing."},
		func() float64 {
			if f.enabled() {
				return 1
			}
			return 0
		})
	aside := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "strata_bpf_fastpath_stepped_aside",
		Help: "1 while the auto fast path is off because netfilter rules filter forwarded traffic (strata status names them)."},
		func() float64 {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.steppedAside {
				return 1
			}
			return 0
		})
	reg.MustRegister(on, aside)
	if f.active() {
		reg.MustRegister(bpf.NewCollector(f.fp))
	}
}

func (f *podFastpath) enabled() bool {
	if !f.active() {
		return false
	}
	on, err := f.fp.Enabled()
	return err == nil && on
}

// setEnabled is the run-time switch. Switching off needs no detach: every
// packet goes to the stack at once, so no connectivity is lost.
func (f *podFastpath) setEnabled(on bool) error {
	if !f.active() {
		return fmt.Errorf("the bpf fast path is not loaded on this node (%s); restart the agent with --bpf-fastpath=auto or on", f.decision.Reason)
	}
	if err := f.fp.SetEnabled(on); err != nil {
		return err
	}
	f.mu.Lock()
	f.operatorSet, f.steppedAside = true, false
	filters := f.filters
	f.mu.Unlock()
	if on && len(filters) > 0 {
		f.log.Warn("bpf fast path switched on while netfilter filters forwarded traffic: those rules do not see fast-pathed pod packets", "filters", fmt.Sprint(filters))
	}
	f.log.Info("bpf fast path switched", "enabled", on)
	return nil
}

// start runs the pod sync loop in the background until close.
func (f *podFastpath) start(ctx context.Context, allocations func(context.Context) ([]role.Allocation, error)) {
	if !f.active() {
		return
	}
	ctx, f.stopRun = context.WithCancel(ctx)
	f.runDone = make(chan struct{})
	go func() {
		defer close(f.runDone)
		f.run(ctx, allocations)
	}()
}

// close stops the sync loop, then detaches every program: pod traffic
// falls back to kernel routing.
func (f *podFastpath) close() {
	if f.stopRun != nil {
		f.stopRun()
		<-f.runDone
	}
	if f.active() {
		if err := f.fp.Close(); err != nil {
			f.log.Warn("bpf fast path close", "err", err)
		}
	}
}

func (f *podFastpath) inNS(fn func() error) error {
	if f.ns == nil {
		return fn()
	}
	return f.ns.Do(fn)
}

// attachUplinks hooks the from-netdev program to each device that exists
// (the VXLAN device appears with the first overlay peer and may be
// recreated); attaching again is a no-op.
func (f *podFastpath) attachUplinks(names ...string) {
	if !f.active() {
		return
	}
	for _, n := range names {
		if n == "" {
			continue
		}
		var exists bool
		_ = f.inNS(func() error {
			_, err := netlink.LinkByName(n)
			exists = err == nil
			return nil
		})
		if !exists {
			continue
		}
		if err := f.fp.AttachUplink(n); err != nil {
			f.noteErr(fmt.Errorf("attach uplink %s: %w", n, err))
		}
	}
}

// setPodPrefixes lets the fast path forward to every pod prefix the plan
// accepted (this node's and its peers'); other destinations take the stack.
// Only accepted claims count: a refused prefix (docs/trust.md) must not be
// forwarded past the routing table that leaves it out.
func (f *podFastpath) setPodPrefixes(plan *topology.Plan) {
	if !f.active() || plan == nil {
		return
	}
	var want []netip.Prefix
	for _, n := range plan.Nodes() {
		want = append(want, n.PodPrefixes...)
	}
	want = collapsePrefixes(want)
	f.mu.Lock()
	same := slices.Equal(want, f.prefixes)
	f.mu.Unlock()
	if same {
		return
	}
	if err := f.fp.SetPodPrefixes(want); err != nil {
		f.noteErr(fmt.Errorf("set pod prefixes: %w", err))
		return
	}
	f.mu.Lock()
	f.prefixes = want
	f.mu.Unlock()
}

// collapsePrefixes sorts, masks and drops prefixes covered by another one:
// a cloud node's per-pod /32s inside a CIDR cost no trie entries.
func collapsePrefixes(in []netip.Prefix) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		if p.IsValid() {
			ps = append(ps, p.Masked())
		}
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	out := ps[:0]
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Bits() <= p.Bits() && out[n-1].Contains(p.Addr()) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// wrap returns the role the CNI server calls: Allocate and Release also
// keep the fast path's pod entries. Only the CNI server gets it; the agent
// keeps the role itself (its optional interfaces stay visible).
func (f *podFastpath) wrap(r role.Role) role.Role {
	if !f.active() {
		return r
	}
	return &fastpathRole{Role: r, f: f}
}

type fastpathRole struct {
	role.Role
	f *podFastpath
}

func (r *fastpathRole) Allocate(ctx context.Context, req role.PodRequest) (role.Allocation, error) {
	a, err := r.Role.Allocate(ctx, req)
	if err == nil {
		r.f.track(a)
	}
	return a, err
}

// Release removes the pod's entries first, so the address is never handed
// to a new pod while the old entry still points at the old veth.
func (r *fastpathRole) Release(ctx context.Context, containerID, ifName string) error {
	r.f.untrack(containerID, ifName)
	return r.Role.Release(ctx, containerID, ifName)
}

// track remembers a veth pod; its entry is written once its veth exists.
func (f *podFastpath) track(a role.Allocation) {
	if a.Datapath != role.DatapathVethRouted || !a.Addr.IsValid() {
		return // exclusive ENI and ipvlan pods have no host veth to hook
	}
	f.mu.Lock()
	f.pods[a.Addr.Addr()] = a
	f.mu.Unlock()
	f.poke()
}

func (f *podFastpath) untrack(containerID, ifName string) {
	f.opMu.Lock()
	defer f.opMu.Unlock()
	f.mu.Lock()
	var gone []netip.Addr
	for ip, a := range f.pods {
		if a.ContainerID == containerID && a.IfName == ifName {
			gone = append(gone, ip)
		}
	}
	for _, ip := range gone {
		delete(f.pods, ip)
	}
	f.mu.Unlock()
	for _, ip := range gone {
		f.removePod(ip)
	}
}

// hostVeth is the host side of a pod's veth, as its entry was written. The
// name is kept because the plugin may delete the veth before DEL reaches us.
type hostVeth struct {
	name    string
	ifindex int
}

func (f *podFastpath) removePod(ip netip.Addr) {
	f.mu.Lock()
	hv := f.attached[ip]
	delete(f.attached, ip)
	f.mu.Unlock()
	if err := f.fp.RemovePod(hv.name, ip); err != nil {
		f.noteErr(fmt.Errorf("remove pod %s: %w", ip, err))
	}
}

func (f *podFastpath) poke() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// run keeps the pods' entries in step with the kernel until ctx ends:
// at once, on every host route event and every fastpathResync.
func (f *podFastpath) run(ctx context.Context, allocations func(context.Context) ([]role.Allocation, error)) {
	if !f.active() {
		return
	}
	events := make(chan netlink.RouteUpdate, 256)
	if err := f.subscribe(ctx, events); err != nil {
		f.log.Warn("bpf fast path: no route subscription, pods are picked up by the periodic resync", "err", err)
	}
	resync := time.NewTicker(fastpathResync)
	defer resync.Stop()
	nf := time.NewTicker(netfilterCheckEvery)
	defer nf.Stop()
	full := true
	for {
		if full {
			f.reload(ctx, allocations)
		}
		f.syncPods(full)
		full = false
		select {
		case <-ctx.Done():
			return
		case <-nf.C:
			f.checkNetfilter()
			continue
		case <-resync.C:
			full = true
		case <-f.kick:
		case u, ok := <-events:
			if !ok {
				events = nil // subscription ended; the resync still runs
				continue
			}
			if u.Protocol != rtproto.Pod {
				continue
			}
			drain(events) // one sync serves a burst of pod routes
		}
	}
}

func drain(ch chan netlink.RouteUpdate) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func (f *podFastpath) subscribe(ctx context.Context, ch chan netlink.RouteUpdate) error {
	opts := netlink.RouteSubscribeOptions{ErrorCallback: func(err error) { f.log.Debug("route subscription", "err", err) }}
	if f.ns != nil {
		h, err := netns.GetFromPath(f.ns.Path)
		if err != nil {
			return fmt.Errorf("open node namespace %s: %w", f.ns.Path, err)
		}
		defer func() { _ = h.Close() }()
		opts.Namespace = &h
	}
	return netlink.RouteSubscribeWithOptions(ch, ctx.Done(), opts)
}

// reload takes the role's allocations as the truth about which pods live
// (covers agent restarts and a missed CNI call).
func (f *podFastpath) reload(ctx context.Context, allocations func(context.Context) ([]role.Allocation, error)) {
	if allocations == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	all, err := allocations(ctx)
	if err != nil {
		f.noteErr(fmt.Errorf("list allocations: %w", err))
		return
	}
	pods := map[netip.Addr]role.Allocation{}
	for _, a := range all {
		if a.Datapath == role.DatapathVethRouted && a.Addr.IsValid() {
			pods[a.Addr.Addr()] = a
		}
	}
	f.mu.Lock()
	f.pods = pods
	f.mu.Unlock()
}

// syncPods writes entries for tracked pods whose veth exists. full also
// runs bpf Sync, which drops entries and attachments of pods not listed.
func (f *podFastpath) syncPods(full bool) {
	f.opMu.Lock()
	defer f.opMu.Unlock()
	found, err := f.findPods(!full)
	if err != nil {
		f.noteErr(err)
		return
	}
	if full {
		pods := make([]bpf.Pod, len(found))
		for i, p := range found {
			pods[i] = p.Pod
		}
		if err := f.fp.Sync(pods); err != nil {
			f.noteErr(fmt.Errorf("sync pods: %w", err))
		}
		f.mu.Lock()
		f.attached = map[netip.Addr]hostVeth{}
		for _, p := range found {
			f.attached[p.IPs[0]] = hostVeth{p.HostIfname, p.ifindex}
		}
		f.mu.Unlock()
		return
	}
	for _, p := range found {
		f.mu.Lock()
		done := f.attached[p.IPs[0]] == hostVeth{p.HostIfname, p.ifindex}
		f.mu.Unlock()
		if done {
			continue
		}
		if err := f.fp.AddPod(p.Pod); err != nil {
			f.noteErr(fmt.Errorf("add pod %s on %s: %w", p.IPs[0], p.HostIfname, err))
			continue
		}
		f.mu.Lock()
		f.attached[p.IPs[0]] = hostVeth{p.HostIfname, p.ifindex}
		f.mu.Unlock()
	}
}

type foundPod struct {
	bpf.Pod
	ifindex int
}

// findPods matches tracked pods with the plugin's host routes and reads
// each pod interface's MAC from the peer end of its veth. onlyNew skips
// pods whose entry is already written for the same veth.
func (f *podFastpath) findPods(onlyNew bool) ([]foundPod, error) {
	f.mu.Lock()
	want := make(map[netip.Addr]int, len(f.pods)) // pod -> ifindex already written
	for ip := range f.pods {
		want[ip] = -1
		if hv, ok := f.attached[ip]; ok && onlyNew {
			want[ip] = hv.ifindex
		}
	}
	f.mu.Unlock()
	var out []foundPod
	err := f.inNS(func() error {
		routes, err := nlretry.Dump(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: rtproto.Pod},
				netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			return fmt.Errorf("list pod host routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			ip, ok := netip.AddrFromSlice(r.Dst.IP)
			ip = ip.Unmap()
			written, tracked := want[ip]
			if ones, bits := r.Dst.Mask.Size(); !ok || ones != bits || !tracked || written == r.LinkIndex {
				continue
			}
			l, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil {
				continue // the veth went with its pod
			}
			if l.Type() != "veth" {
				continue
			}
			mac, err := vethPeerMAC(l)
			if err != nil {
				f.log.Debug("bpf fast path: pod MAC not readable yet", "pod", ip, "veth", l.Attrs().Name, "err", err)
				continue
			}
			out = append(out, foundPod{Pod: bpf.Pod{HostIfname: l.Attrs().Name, PodMAC: mac, IPs: []netip.Addr{ip}}, ifindex: l.Attrs().Index})
		}
		return nil
	})
	return out, err
}

// vethPeerMAC reads the MAC of a veth's other end, which lives in the pod's
// namespace, by asking the kernel for that ifindex in the peer's namespace id
// (IFLA_TARGET_NETNSID): no namespace path is needed, so it works for pods
// created before an agent restart too.
func vethPeerMAC(host netlink.Link) (net.HardwareAddr, error) {
	a := host.Attrs()
	if a.ParentIndex == 0 {
		return nil, fmt.Errorf("veth %s: peer index unknown", a.Name)
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(a.ParentIndex)
	req.AddData(msg)
	if a.NetNsID >= 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_TARGET_NETNSID, nl.Uint32Attr(uint32(a.NetNsID))))
	}
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return nil, fmt.Errorf("veth %s: read peer %d in netns id %d: %w", a.Name, a.ParentIndex, a.NetNsID, err)
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("veth %s: peer %d not found", a.Name, a.ParentIndex)
	}
	peer, err := netlink.LinkDeserialize(nil, msgs[0])
	if err != nil {
		return nil, fmt.Errorf("veth %s: decode peer: %w", a.Name, err)
	}
	mac := peer.Attrs().HardwareAddr
	if len(mac) != 6 {
		return nil, fmt.Errorf("veth %s: peer has no Ethernet address", a.Name)
	}
	return mac, nil
}

func (f *podFastpath) noteErr(err error) {
	f.log.Warn("bpf fast path", "err", err)
	f.mu.Lock()
	f.lastErr = err.Error()
	f.mu.Unlock()
}

// FastPathStatus is the fast path's part of /status.
type FastPathStatus = api.FastPath

func (f *podFastpath) status() FastPathStatus {
	st := FastPathStatus{Setting: string(f.setting), Active: f.active(), Reason: f.decision.Reason}
	f.mu.Lock()
	st.Prefixes, st.LastError = slices.Clone(f.prefixes), f.lastErr
	st.Netfilter, st.SteppedAside = slices.Clone(f.filters), f.steppedAside
	f.mu.Unlock()
	if !f.active() {
		return st
	}
	s, err := f.fp.Status()
	if err != nil {
		st.LastError = err.Error()
		return st
	}
	st.Enabled, st.Attach, st.Attached, st.Endpoints, st.Counters = s.Active, string(s.Mode), s.Attached, s.Endpoints, &s.Counters
	return st
}

// serveStatus answers GET /bpf/fastpath.
func (f *podFastpath) serveStatus(w http.ResponseWriter, _ *http.Request) { writeJSON(w, f.status()) }

// serveSwitch answers POST /bpf/fastpath/{state} (on or off), the run-time
// switch behind `strata fastpath on|off`. It is mounted only on the
// root-only control socket (startHTTP).
func (f *podFastpath) serveSwitch(w http.ResponseWriter, r *http.Request) {
	var on bool
	switch r.PathValue("state") {
	case "on":
		on = true
	case "off":
	default:
		http.Error(w, fmt.Sprintf("fast-path state %q: want on or off", r.PathValue("state")), http.StatusBadRequest)
		return
	}
	if err := f.setEnabled(on); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	f.serveStatus(w, r)
}
