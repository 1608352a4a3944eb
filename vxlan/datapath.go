package vxlan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/rtproto"
)

// Datapath is this node's VXLAN overlay: the device and the per-peer state on
// it. It works in the network namespace that was current when New ran (the
// host namespace in the agent; a test namespace in tests), whatever thread
// later calls it. All methods are safe for concurrent use.
type Datapath struct {
	cfg DeviceConfig
	log *slog.Logger
	nl  *netlink.Handle // device and addresses
	// Neighbours, the FDB and routes get their own sockets so the kinds are
	// dumped and written in parallel (a netlink socket serialises requests).
	nlNeigh, nlFDB *netlink.Handle
	rt             *rtSock // nexthop objects and routes
	// Batched writes of neighbours and FDB entries, one socket per stream.
	rtNeigh, rtFDB *rtSock
	ns             netns.NsHandle

	mu        sync.Mutex
	want      desired
	hasWant   bool
	rejected  error // the peers the last plan left out (*PeerError each)
	lastPeers []Peer
	runs      []runHandle // active Run calls, stopped by Close

	// Event-verified state: the last full sync found the kernel equal to
	// want, and no relevant netlink event has arrived since on a
	// subscription that stayed up. Only then may Reconcile trust want as the
	// kernel's state and skip the dumps (see Run).
	evGen    atomic.Uint64 // bumped by Run's event readers
	subEpoch atomic.Uint64 // bumped when a subscription starts or breaks
	subOK    atomic.Bool
	verified bool
	verGen   uint64
	verEpoch uint64
	closed   bool
	ifindex  int
	ifidx    atomic.Int32 // ifindex for the event filter, read without the lock
	status   Status
	metrics  *metrics
	filter   memberFilter
}

type runHandle struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Status is a snapshot of the datapath for `strata status` and debugging.
type Status struct {
	Device  string
	Ifindex int
	VNI     uint32
	Port    uint16
	MTU     int
	MAC     string
	LocalIP netip.Addr
	// Peers, Routes: what the last accepted Reconcile asked for.
	Peers  int
	Routes int
	// LastSync is when the kernel state last matched the desired state.
	LastSync time.Time
	// LastChanges is what the last sync (Reconcile or repair) wrote.
	LastChanges Counts
	// LastReconcile is what the last Reconcile call wrote.
	LastReconcile Counts
	// Repairs counts syncs that found drift after the first one.
	Repairs uint64
	// Recreations counts device (re)creations, the first one included.
	Recreations uint64
	// Verified: the last full sync matched and Run has seen no relevant
	// netlink event since, so a repeat Reconcile needs no dumps.
	Verified  bool
	LastError string
	// MemberFilter is the state of the nftables filter that accepts VXLAN
	// only from cluster members: "enforcing", or "not enforcing: <why>"
	// (then any host that reaches the VTEP port can inject into pods).
	MemberFilter string
	// Members is how many sources the filter accepts; NonMemberDrops the
	// packets it has dropped (at the last check).
	Members        int
	NonMemberDrops uint64
}

// New validates cfg and binds the datapath to the current network namespace.
// It touches no kernel state; the first Reconcile creates or adopts the device.
func New(cfg DeviceConfig, log *slog.Logger) (*Datapath, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("vxlan: read the current network namespace: %w", err)
	}
	var hs [3]*netlink.Handle
	for i := range hs {
		if hs[i], err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE); err != nil {
			for _, h := range hs[:i] {
				h.Close()
			}
			_ = ns.Close()
			return nil, fmt.Errorf("vxlan: open a netlink socket: %w", err)
		}
	}
	var rs [3]*rtSock
	for i := range rs {
		if rs[i], err = openRtSock(ns); err != nil {
			for _, r := range rs[:i] {
				r.close()
			}
			for _, h := range hs {
				h.Close()
			}
			_ = ns.Close()
			return nil, fmt.Errorf("vxlan: open a netlink socket: %w", err)
		}
	}
	d := &Datapath{cfg: cfg, log: log.With("component", "vxlan", "device", cfg.Name), nl: hs[0], nlNeigh: hs[1], nlFDB: hs[2],
		rt: rs[0], rtNeigh: rs[1], rtFDB: rs[2], ns: ns, metrics: newMetrics()}
	d.status = Status{Device: cfg.Name, VNI: cfg.VNI, Port: cfg.Port, MAC: cfg.MAC.String(), LocalIP: cfg.LocalIP}
	d.filterMetrics()
	return d, nil
}

// Config returns the effective configuration, defaults filled in.
func (d *Datapath) Config() DeviceConfig { return d.cfg }

// Reconcile makes the kernel match peers: it creates or fixes the device,
// then adds, replaces or removes only the neighbour, FDB and route entries
// that differ. Peers are validated first, each on its own: a bad peer is left
// out (the error lists each as a *PeerError) and the others are programmed.
// It is idempotent; Run repeats it from the last accepted peers.
func (d *Datapath) Reconcile(ctx context.Context, peers []Peer) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("vxlan: datapath is closed; create a new one with New")
	}
	// The same peers as last time (the common case: a periodic re-apply of
	// an unchanged plan) reuse the validated desired state.
	same := d.hasWant && samePeers(d.lastPeers, peers)
	if same && d.trusted() {
		// Nothing asked, nothing changed in the kernel since it was verified.
		d.status.LastChanges, d.status.LastReconcile = Counts{}, Counts{}
		d.metrics.observe("reconcile-verified", 0, Counts{}, nil)
		return d.rejected
	}
	old, trusted := d.want, d.trusted()
	if !same {
		// Bad peers are left out (d.rejected says which); the rest are
		// programmed.
		d.want, d.rejected = plan(d.cfg, peers)
		d.hasWant, d.lastPeers = true, clonePeers(peers)
	}
	rejected := d.rejected
	d.status.Peers, d.status.Routes = d.want.peers, len(d.want.routes)
	if trusted {
		// Incremental: the kernel is known to hold old, so write only the
		// difference between old and the new plan, without dumps. Run's
		// resync after the echoed events verifies the result.
		return errors.Join(rejected, d.applyDelta(ctx, old))
	}
	c, err := d.syncLocked(ctx, "reconcile")
	d.status.LastReconcile = c
	return errors.Join(rejected, err)
}

// trusted reports whether d.want is known to be the kernel's state.
func (d *Datapath) trusted() bool {
	return d.verified && d.ifindex != 0 && d.subOK.Load() &&
		d.evGen.Load() == d.verGen && d.subEpoch.Load() == d.verEpoch
}

// applyDelta writes the difference between old (the kernel's verified
// state) and d.want.
func (d *Datapath) applyDelta(ctx context.Context, old desired) error {
	start := time.Now()
	was, err := diff(old, d.ifindex, nil, nil, nil, nil)
	if err == nil {
		var cs changeSet
		cs, err = diff(d.want, d.ifindex, was.neighSet, was.fdbSet, was.nhSet, was.routeSet)
		if err == nil {
			c := cs.counts()
			err = d.apply(ctx, cs)
			d.syncFilter()
			d.metrics.observe("reconcile-delta", time.Since(start), c, err)
			d.status.LastChanges, d.status.LastReconcile = c, c
		}
	}
	d.verified = false
	if err != nil {
		d.status.LastError = err.Error()
		return err
	}
	d.status.LastError = ""
	d.status.LastSync = time.Now()
	return nil
}

func samePeers(a, b []Peer) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Name != y.Name || x.UnderlayIP != y.UnderlayIP || x.OverlayIP != y.OverlayIP ||
			!bytes.Equal(x.MAC, y.MAC) || !slices.Equal(x.Prefixes, y.Prefixes) {
			return false
		}
	}
	return true
}

// clonePeers copies peers so a caller reusing its slices cannot change what
// samePeers compares against.
func clonePeers(ps []Peer) []Peer {
	out := make([]Peer, len(ps))
	for i, p := range ps {
		p.MAC = slices.Clone(p.MAC)
		p.Prefixes = slices.Clone(p.Prefixes)
		out[i] = p
	}
	return out
}

// Status returns a snapshot.
func (d *Datapath) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.status
	st.Verified = d.trusted()
	st.MemberFilter, st.Members, st.NonMemberDrops = d.filter.state, d.filter.members, d.filter.dropped.Load()
	if st.MemberFilter == "" {
		st.MemberFilter = "not enforcing: no peers programmed yet"
	}
	return st
}

// Resync re-checks everything against the last accepted peers and repairs
// drift. It is what Run does on every tick and netlink event.
func (d *Datapath) Resync(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.hasWant {
		return nil
	}
	_, err := d.syncLocked(ctx, "resync")
	return err
}

// syncLocked does one full pass: device, address, one dump per kind, diff,
// writes. d.mu must be held.
func (d *Datapath) syncLocked(ctx context.Context, why string) (Counts, error) {
	start := time.Now()
	g0, e0, ok0 := d.evGen.Load(), d.subEpoch.Load(), d.subOK.Load()
	c, err := d.sync(ctx)
	d.syncFilter()
	d.metrics.observe(why, time.Since(start), c, err)
	// Verified only if nothing was written (our own writes echo back as
	// events still in flight) and no event or subscription change raced
	// with the dumps.
	d.verified = err == nil && c.Total() == 0 && ok0 && d.subOK.Load() &&
		d.evGen.Load() == g0 && d.subEpoch.Load() == e0
	d.verGen, d.verEpoch = g0, e0
	if err != nil {
		d.status.LastError = err.Error()
		d.log.Warn("vxlan sync failed", "trigger", why, "err", err)
		return c, err
	}
	if c.Total() > 0 {
		if why != "reconcile" {
			d.status.Repairs++
			d.log.Info("vxlan drift repaired", "trigger", why, "changes", c)
		} else {
			d.log.Debug("vxlan reconciled", "changes", c, "took", time.Since(start))
		}
	}
	d.status.LastError = ""
	d.status.LastSync = time.Now()
	d.status.LastChanges = c
	return c, nil
}

func (d *Datapath) sync(ctx context.Context) (Counts, error) {
	if err := ctx.Err(); err != nil {
		return Counts{}, err
	}
	link, err := d.ensureDevice()
	if err != nil {
		return Counts{}, err
	}
	idx := link.Attrs().Index
	d.ifindex = idx
	d.ifidx.Store(int32(idx))
	d.status.Ifindex = idx
	d.status.MTU = link.Attrs().MTU
	if err := d.ensureAddr(link); err != nil {
		return Counts{}, err
	}
	var (
		wg                             sync.WaitGroup
		neighs, fdbs                   []netlink.Neigh
		routes                         []kroute
		nhs                            []nexthop
		neighErr, fdbErr, rtErr, nhErr error
	)
	wg.Go(func() {
		neighs, neighErr = nlretry.Dump(func() ([]netlink.Neigh, error) { return d.nlNeigh.NeighList(idx, netlink.FAMILY_V4) })
	})
	wg.Go(func() {
		fdbs, fdbErr = nlretry.Dump(func() ([]netlink.Neigh, error) { return d.nlFDB.NeighList(idx, unix.AF_BRIDGE) })
	})
	nhs, nhErr = d.rt.dumpNexthops()
	if nhErr == nil {
		routes, rtErr = d.rt.dumpRoutes()
	}
	wg.Wait()
	switch {
	case neighErr != nil:
		return Counts{}, fmt.Errorf("vxlan: dump neighbours of %s: %w", d.cfg.Name, neighErr)
	case fdbErr != nil:
		return Counts{}, fmt.Errorf("vxlan: dump the FDB of %s: %w", d.cfg.Name, fdbErr)
	case nhErr != nil:
		return Counts{}, fmt.Errorf("vxlan: dump nexthop objects: %w", nhErr)
	case rtErr != nil:
		return Counts{}, fmt.Errorf("vxlan: dump routes with protocol %d: %w", rtproto.VXLAN, rtErr)
	}
	cs, err := diff(d.want, idx, neighs, fdbs, nhs, routes)
	if err != nil {
		return Counts{}, err
	}
	return cs.counts(), d.apply(ctx, cs)
}

// apply writes a change set as three parallel streams, one per kind and
// socket, each removing before it adds. The kinds do not depend on each
// other: an onlink route needs no neighbour to exist, and a neighbour no FDB
// entry, so no ordering between streams is needed.
func (d *Datapath) apply(ctx context.Context, cs changeSet) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	note := func(what string, err error) {
		if err == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if len(errs) < 5 {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	wg.Go(func() {
		for i := range cs.fdbDel {
			if err := d.nlFDB.NeighDel(&cs.fdbDel[i]); err != nil && !errors.Is(err, unix.ENOENT) {
				note("delete fdb "+cs.fdbDel[i].HardwareAddr.String(), err)
			}
		}
		reqs := make([]*nl.NetlinkRequest, len(cs.fdbSet))
		for i := range cs.fdbSet {
			reqs[i] = neighReq(cs.fdbSet[i])
		}
		note("set fdb entries", d.rtFDB.batch(reqs, func(i int, err error) {
			note("set fdb "+cs.fdbSet[i].HardwareAddr.String()+" dst "+cs.fdbSet[i].IP.String(), err)
		}))
	})
	wg.Go(func() {
		for i := range cs.neighDel {
			if err := d.nlNeigh.NeighDel(&cs.neighDel[i]); err != nil && !errors.Is(err, unix.ENOENT) {
				note("delete neighbour "+cs.neighDel[i].IP.String(), err)
			}
		}
		reqs := make([]*nl.NetlinkRequest, len(cs.neighSet))
		for i := range cs.neighSet {
			reqs[i] = neighReq(cs.neighSet[i])
		}
		note("set neighbours", d.rtNeigh.batch(reqs, func(i int, err error) {
			note("set neighbour "+cs.neighSet[i].IP.String(), err)
		}))
	})
	// Nexthops before the routes that name them; deleting a nexthop also
	// removes any route still using it.
	for _, id := range cs.nhDel {
		if err := d.rt.delNexthop(id); err != nil && !errors.Is(err, unix.ENOENT) {
			note(fmt.Sprintf("delete nexthop %d", id), err)
		}
	}
	nhReqs := make([]*nl.NetlinkRequest, len(cs.nhSet))
	for i, nh := range cs.nhSet {
		nhReqs[i] = nexthopReq(nh.id, nh.gw, nh.oif)
	}
	note("set nexthops", d.rt.batch(nhReqs, func(i int, err error) {
		note(fmt.Sprintf("set nexthop %d via %s", cs.nhSet[i].id, cs.nhSet[i].gw), err)
	}))
	for _, r := range cs.routeDel {
		if err := d.rt.delRoute(r); err != nil && !errors.Is(err, unix.ESRCH) {
			note("delete route "+r.dst.String(), err)
		}
	}
	rtReqs := make([]*nl.NetlinkRequest, len(cs.routeSet))
	for i, r := range cs.routeSet {
		rtReqs[i] = routeReq(r.dst, r.nhid)
	}
	note("set routes", d.rt.batch(rtReqs, func(i int, err error) {
		note("set route "+cs.routeSet[i].dst.String(), err)
	}))
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(errs) > 0 {
		return fmt.Errorf("vxlan: programming %s failed (the next resync retries): %w", d.cfg.Name, errors.Join(errs...))
	}
	return nil
}

// ensureAddr puts OverlayIP/32 on the device and removes any other IPv4
// address from it (the device is ours).
func (d *Datapath) ensureAddr(link netlink.Link) error {
	addrs, err := nlretry.Dump(func() ([]netlink.Addr, error) { return d.nl.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("vxlan: dump addresses of %s: %w", d.cfg.Name, err)
	}
	want := netip.PrefixFrom(d.cfg.OverlayIP.Unmap(), 32)
	have := false
	for i := range addrs {
		p, ok := prefixOf(addrs[i].IPNet)
		if ok && p == want {
			have = true
			continue
		}
		d.log.Info("removing a stray address from the vxlan device", "addr", addrs[i].IPNet.String())
		if err := d.nl.AddrDel(link, &addrs[i]); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("vxlan: remove stray address %s from %s: %w", addrs[i].IPNet, d.cfg.Name, err)
		}
	}
	if have {
		return nil
	}
	if err := d.nl.AddrReplace(link, &netlink.Addr{IPNet: ipNet(want)}); err != nil {
		return fmt.Errorf("vxlan: add overlay address %s to %s: %w", want, d.cfg.Name, err)
	}
	return nil
}

// Close removes everything the datapath owns: the device (with its
// neighbours, FDB and the routes through it) and any route left with our
// protocol number. An agent that restarts should not call it: the kernel
// state keeps forwarding while the agent is away and the next Reconcile
// adopts it.
func (d *Datapath) Close() error {
	// Stop a running Run first (outside the lock: its last resync may be
	// waiting for it), so nothing re-creates what we remove.
	d.mu.Lock()
	runs := d.runs
	d.runs = nil
	d.mu.Unlock()
	for _, r := range runs {
		r.cancel()
		<-r.done
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	var errs []error
	if link, err := d.nl.LinkByName(d.cfg.Name); err == nil {
		if _, ok := link.(*netlink.Vxlan); ok {
			if err := d.nl.LinkDel(link); err != nil {
				errs = append(errs, fmt.Errorf("vxlan: delete device %s: %w", d.cfg.Name, err))
			}
		}
	}
	// The device's deletion took its nexthops and their routes; anything
	// of ours left elsewhere (another table, a stale nexthop) goes too.
	routes, err := d.rt.dumpRoutes()
	if err != nil {
		errs = append(errs, fmt.Errorf("vxlan: dump routes to clean up: %w", err))
	}
	for _, r := range routes {
		if err := d.rt.delRoute(r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("vxlan: delete route %s: %w", r.dst, err))
		}
	}
	nhs, err := d.rt.dumpNexthops()
	if err != nil {
		errs = append(errs, fmt.Errorf("vxlan: dump nexthops to clean up: %w", err))
	}
	for _, nh := range nhs {
		if nh.proto == uint8(rtproto.VXLAN) {
			if err := d.rt.delNexthop(nh.id); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("vxlan: delete nexthop %d: %w", nh.id, err))
			}
		}
	}
	if err := d.removeFilter(); err != nil && d.filter.ok.Load() {
		errs = append(errs, err)
	}
	d.filter.ok.Store(false)
	d.hasWant = false
	d.verified = false
	d.closed = true
	d.nl.Close()
	d.nlNeigh.Close()
	d.nlFDB.Close()
	d.rt.close()
	d.rtNeigh.close()
	d.rtFDB.close()
	_ = d.ns.Close()
	return errors.Join(errs...)
}

// hwEqual compares MACs.
func hwEqual(a, b net.HardwareAddr) bool { return a.String() == b.String() }
