package vxlan

import (
	"context"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/rtproto"
)

// Run repairs drift until ctx ends: every CheckInterval, and soon after any
// netlink event that touches the device, its neighbours or FDB, or a route
// with our protocol number (a hand-deleted entry, a deleted device, a
// network restart as in flannel#1070). It does nothing until the first
// Reconcile. When a netlink subscription breaks (e.g. the socket overflowed
// under a burst) Run resyncs and subscribes again; the periodic check covers
// the gap. Run leaves the kernel state in place when it returns.
func (d *Datapath) Run(ctx context.Context) error {
	trigger := make(chan struct{}, 1)
	poke := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	var stop func()
	lost := make(chan struct{}, 1)
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
	subscribe()
	defer func() {
		if stop != nil {
			stop()
		}
	}()

	tick := time.NewTicker(d.cfg.CheckInterval)
	defer tick.Stop()
	// Coalesce bursts of events (our own writes echo back too) into one sync.
	const settle = 50 * time.Millisecond
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
			if stop != nil {
				stop()
				stop = nil
			}
			subscribe()
			d.resync(ctx, "resubscribe")
		case <-trigger:
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(settle):
			}
			select { // drop events that arrived while settling
			case <-trigger:
			default:
			}
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

// subscribe listens to link, route and neighbour events in the datapath's
// namespace, calling poke for relevant ones and lost when a subscription
// ends. The returned stop ends all three.
func (d *Datapath) subscribe(poke, lost func()) (func(), error) {
	done := make(chan struct{})
	ns := d.ns
	onErr := func(error) {
		select {
		case <-done:
		default:
			lost()
		}
	}
	links := make(chan netlink.LinkUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 256)
	neighs := make(chan netlink.NeighUpdate, 256)
	const rcvbuf = 4 << 20
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: rcvbuf}); err != nil {
		close(done)
		return nil, err
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: rcvbuf}); err != nil {
		close(done)
		go drain(links)
		return nil, err
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: rcvbuf}); err != nil {
		close(done)
		go drain(links)
		go drain(routes)
		return nil, err
	}
	// Report a lost subscription only while it is meant to be running: the
	// channels also close after stop.
	ended := func() {
		select {
		case <-done:
		default:
			lost()
		}
	}
	go func() {
		for u := range links {
			if u.Attrs().Name == d.cfg.Name || u.Attrs().Name == d.cfg.UnderlayLink && d.cfg.UnderlayLink != "" {
				poke()
			}
		}
		ended()
	}()
	go func() {
		for u := range routes {
			if u.Protocol == rtproto.VXLAN {
				poke()
			}
		}
		ended()
	}()
	go func() {
		for u := range neighs {
			if u.LinkIndex == int(d.ifidx.Load()) {
				poke()
			}
		}
		ended()
	}()
	return func() { close(done) }, nil
}

func drain[T any](ch <-chan T) {
	for range ch {
	}
}
