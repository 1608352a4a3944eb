package vxlan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
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
	nl  *netlink.Handle
	ns  netns.NsHandle

	mu      sync.Mutex
	want    desired
	hasWant bool
	closed  bool
	ifindex int
	ifidx   atomic.Int32 // ifindex for the event filter, read without the lock
	status  Status
	metrics *metrics
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
	// LastChanges is what the last sync wrote (zero when nothing drifted).
	LastChanges Counts
	// Repairs counts syncs that found drift after the first one.
	Repairs uint64
	// Recreations counts device (re)creations, the first one included.
	Recreations uint64
	LastError   string
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
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("vxlan: open a netlink socket: %w", err)
	}
	d := &Datapath{cfg: cfg, log: log.With("component", "vxlan", "device", cfg.Name), nl: h, ns: ns, metrics: newMetrics()}
	d.status = Status{Device: cfg.Name, VNI: cfg.VNI, Port: cfg.Port, MAC: cfg.MAC.String(), LocalIP: cfg.LocalIP}
	return d, nil
}

// Config returns the effective configuration, defaults filled in.
func (d *Datapath) Config() DeviceConfig { return d.cfg }

// Reconcile makes the kernel match peers: it creates or fixes the device,
// then adds, replaces or removes only the neighbour, FDB and route entries
// that differ. Peers are validated first, so bad input changes nothing.
// It is idempotent; Run repeats it from the last accepted peers.
func (d *Datapath) Reconcile(ctx context.Context, peers []Peer) error {
	want, err := plan(d.cfg, peers)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.want, d.hasWant = want, true
	d.status.Peers, d.status.Routes = want.peers, len(want.routes)
	_, err = d.syncLocked(ctx, "reconcile")
	return err
}

// Status returns a snapshot.
func (d *Datapath) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status
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
	c, err := d.sync(ctx)
	d.metrics.observe(why, time.Since(start), c, err)
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
	neighs, err := nlretry.Dump(func() ([]netlink.Neigh, error) { return d.nl.NeighList(idx, netlink.FAMILY_V4) })
	if err != nil {
		return Counts{}, fmt.Errorf("vxlan: dump neighbours of %s: %w", d.cfg.Name, err)
	}
	fdbs, err := nlretry.Dump(func() ([]netlink.Neigh, error) { return d.nl.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return Counts{}, fmt.Errorf("vxlan: dump the FDB of %s: %w", d.cfg.Name, err)
	}
	routes, err := nlretry.Dump(func() ([]netlink.Route, error) {
		return d.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: rtproto.VXLAN}, netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return Counts{}, fmt.Errorf("vxlan: dump routes with protocol %d: %w", rtproto.VXLAN, err)
	}
	cs := diff(d.want, idx, neighs, fdbs, routes)
	return cs.counts(), d.apply(ctx, cs)
}

// apply writes a change set: removals of routes first (so nothing points at
// a neighbour being removed), then neighbours and FDB, then routes.
func (d *Datapath) apply(ctx context.Context, cs changeSet) error {
	var errs []error
	note := func(what string, err error) {
		if err != nil && len(errs) < 5 {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	for i := range cs.routeDel {
		if err := d.nl.RouteDel(&cs.routeDel[i]); err != nil && !errors.Is(err, unix.ESRCH) {
			note("delete route "+cs.routeDel[i].Dst.String(), err)
		}
	}
	for i := range cs.neighDel {
		if err := d.nl.NeighDel(&cs.neighDel[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			note("delete neighbour "+cs.neighDel[i].IP.String(), err)
		}
	}
	for i := range cs.fdbDel {
		if err := d.nl.NeighDel(&cs.fdbDel[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			note("delete fdb "+cs.fdbDel[i].HardwareAddr.String(), err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for i := range cs.fdbSet {
		note("set fdb "+cs.fdbSet[i].HardwareAddr.String()+" dst "+cs.fdbSet[i].IP.String(), d.nl.NeighSet(&cs.fdbSet[i]))
	}
	for i := range cs.neighSet {
		note("set neighbour "+cs.neighSet[i].IP.String(), d.nl.NeighSet(&cs.neighSet[i]))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for i := range cs.routeSet {
		note("set route "+cs.routeSet[i].Dst.String(), d.nl.RouteReplace(&cs.routeSet[i]))
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
	routes, err := nlretry.Dump(func() ([]netlink.Route, error) {
		return d.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: rtproto.VXLAN}, netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("vxlan: dump routes to clean up: %w", err))
	}
	for i := range routes {
		if err := d.nl.RouteDel(&routes[i]); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("vxlan: delete route %s: %w", routes[i].Dst, err))
		}
	}
	d.hasWant = false
	d.closed = true
	d.nl.Close()
	d.ns.Close()
	return errors.Join(errs...)
}

// hwEqual compares MACs.
func hwEqual(a, b net.HardwareAddr) bool { return a.String() == b.String() }
