package vxlan

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/internal/rtproto"
)

const (
	// settle coalesces a burst of events (our own writes echo back too)
	// into one resync.
	settle = 50 * time.Millisecond
	// minEventGap bounds event-driven full resyncs on a node with heavy
	// unrelated route churn (a BGP node replacing routes); the periodic
	// check is not limited.
	minEventGap = 250 * time.Millisecond
	// rtnlgrpNexthop is RTNLGRP_NEXTHOP.
	rtnlgrpNexthop = 32
)

// Run repairs drift until ctx ends: every CheckInterval, and soon after any
// netlink event that touches the device or the underlay link, the device's
// addresses, neighbours or FDB, a nexthop object, or a route with our
// protocol number (a hand-deleted entry, a deleted device, a network
// restart as in flannel#1070). It does nothing until the first Reconcile.
// When a subscription breaks (e.g. the socket overflowed in a burst) Run
// resyncs and subscribes again; the periodic check covers the gap.
//
// While Run is subscribed, a full sync that finds nothing to fix marks the
// state verified, and Reconcile then skips the dumps: a repeated plan costs
// nothing and a changed plan writes only its difference. Any relevant event
// clears the mark. The periodic check always dumps.
//
// Call Run once per Datapath. It leaves the kernel state in place when it
// returns; Close stops it.
func (d *Datapath) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return errors.New("vxlan: Run on a closed datapath")
	}
	h := runHandle{cancel: cancel, done: make(chan struct{})}
	d.runs = append(d.runs, h)
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.runs = slices.DeleteFunc(d.runs, func(r runHandle) bool { return r.done == h.done })
		d.mu.Unlock()
		close(h.done)
	}()

	trigger := make(chan struct{}, 1)
	poke := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	lost := make(chan struct{}, 1)
	var stop func()
	subscribe := func() {
		var err error
		stop, err = d.subscribe(poke, func() {
			select {
			case lost <- struct{}{}:
			default:
			}
		})
		if err != nil {
			d.log.Warn("vxlan netlink subscription failed; relying on the periodic check until it works", "err", err)
			stop = nil
		}
	}
	unsubscribe := func() {
		if stop != nil {
			stop()
			stop = nil
		}
	}
	subscribe()
	defer unsubscribe()

	tick := time.NewTicker(d.cfg.CheckInterval)
	defer tick.Stop()
	var lastEvent time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if stop == nil {
				subscribe()
			}
			d.resync(ctx, "periodic")
		case <-lost:
			unsubscribe()
			subscribe()
			d.resync(ctx, "resubscribe")
		case <-trigger:
			wait := settle
			if gap := minEventGap - time.Since(lastEvent); gap > wait {
				wait = gap
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			select { // events that arrived while settling are covered
			case <-trigger:
			default:
			}
			lastEvent = time.Now()
			d.resync(ctx, "event")
		}
	}
}

func (d *Datapath) resync(ctx context.Context, why string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.hasWant || d.closed || ctx.Err() != nil {
		return
	}
	_, _ = d.syncLocked(ctx, why) // logged and counted inside
}

// subscribe listens to link, address, route, neighbour and nexthop events in
// the datapath's namespace. Relevant events invalidate the verified state
// and call poke; lost is called when a subscription ends unasked. The
// returned stop ends them all.
func (d *Datapath) subscribe(poke, lost func()) (func(), error) {
	done := make(chan struct{})
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			d.subOK.Store(false)
			d.subEpoch.Add(1)
			close(done)
		}
	}
	ended := func() {
		select {
		case <-done:
		default:
			d.subOK.Store(false)
			d.subEpoch.Add(1)
			lost()
		}
	}
	relevant := func() {
		d.evGen.Add(1)
		poke()
	}
	onErr := func(error) { ended() }
	ns := d.ns
	const rcvbuf = 4 << 20
	links := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 256)
	neighs := make(chan netlink.NeighUpdate, 256)
	fail := func(err error) (func(), error) {
		stop()
		// Readers of the channels already subscribed end when their
		// socket closes; drain so their senders never block.
		go drain(links)
		go drain(addrs)
		go drain(routes)
		go drain(neighs)
		return nil, err
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: rcvbuf}); err != nil {
		close(links)
		close(addrs)
		close(routes)
		close(neighs)
		return fail(err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: rcvbuf}); err != nil {
		close(addrs)
		close(routes)
		close(neighs)
		return fail(err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: rcvbuf}); err != nil {
		close(routes)
		close(neighs)
		return fail(err)
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: rcvbuf}); err != nil {
		close(neighs)
		return fail(err)
	}
	nhSock, err := nl.SubscribeAt(ns, netns.None(), unix.NETLINK_ROUTE, rtnlgrpNexthop)
	if err != nil {
		return fail(err)
	}
	go func() {
		<-done
		nhSock.Close()
	}()
	_ = nhSock.SetReceiveBufferSize(rcvbuf, false)

	ifindex := func() int { return int(d.ifidx.Load()) }
	go func() {
		for u := range links {
			if u.Attrs().Name == d.cfg.Name || u.Attrs().Index == ifindex() || (d.cfg.UnderlayLink != "" && u.Attrs().Name == d.cfg.UnderlayLink) {
				relevant()
			}
		}
		ended()
	}()
	go func() {
		for u := range addrs {
			if u.LinkIndex == ifindex() {
				relevant()
			}
		}
		ended()
	}()
	go func() {
		for u := range routes {
			// Ours, through our device, or a replace that may have
			// overwritten one of ours with a foreign route (the kernel sends
			// no delete for the route it replaced).
			if u.Protocol == rtproto.VXLAN || u.LinkIndex == ifindex() ||
				(u.NlFlags&unix.NLM_F_REPLACE != 0 && u.Family == netlink.FAMILY_V4 && (u.Table == unix.RT_TABLE_MAIN || u.Table == 0)) {
				relevant()
			}
		}
		ended()
	}()
	go func() {
		for u := range neighs {
			if u.LinkIndex == ifindex() {
				relevant()
			}
		}
		ended()
	}()
	go func() {
		for {
			msgs, _, err := nhSock.Receive()
			if err != nil {
				ended()
				return
			}
			if len(msgs) > 0 {
				relevant()
			}
		}
	}()
	d.subOK.Store(true)
	d.subEpoch.Add(1)
	return stop, nil
}

func drain[T any](ch <-chan T) {
	for range ch {
	}
}
