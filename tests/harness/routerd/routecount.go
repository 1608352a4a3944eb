package routerd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/internal/nsutil"
)

// RouteCounter counts the main-table routes one protocol adds in a
// namespace, from the kernel's route notifications, for benchmarks that
// wait for a bulk load.
//
// Both obvious ways to wait disturb the load they measure. Dumping 100k
// routes every few milliseconds competes with the daemon writing them, and
// a listener blocked in recv is woken by every route the daemon writes.
// RouteCounter subscribes but never waits on the socket: the kernel queues
// the notifications without a wakeup, and a goroutine drains them between
// sleeps.
type RouteCounter struct {
	ns       nsutil.NS
	proto    netlink.RouteProtocol
	fd       int
	interval time.Duration
	buf      []byte
	stop     chan struct{}
	stopped  chan struct{}

	mu      sync.Mutex
	routes  map[string]struct{} // family + prefix length + destination bytes
	count   int
	lost    error // notifications were dropped: count by dump from then on
	waiters []countWaiter
}

type countWaiter struct {
	n  int
	at chan time.Time
}

// counterRcvBuf holds the notifications that arrive between two drains.
const counterRcvBuf = 32 << 20

// dumpInterval paces the fallback: a dump of a large table is expensive.
const dumpInterval = 50 * time.Millisecond

// CountRoutes starts counting proto's main-table IPv4 and IPv6 routes in
// ns from now on, draining the notifications every interval. Close it when
// done.
func CountRoutes(ns nsutil.NS, proto netlink.RouteProtocol, interval time.Duration) (*RouteCounter, error) {
	return countRoutes(ns, proto, interval, counterRcvBuf)
}

func countRoutes(ns nsutil.NS, proto netlink.RouteProtocol, interval time.Duration, rcvBuf int) (*RouteCounter, error) {
	c := &RouteCounter{
		ns: ns, proto: proto, fd: -1, interval: interval, buf: make([]byte, 1<<20),
		stop: make(chan struct{}), stopped: make(chan struct{}), routes: map[string]struct{}{},
	}
	// A netlink socket belongs to the namespace of the thread that opens it.
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("open netlink socket: %w", err)
		}
		c.fd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf); err != nil {
			return fmt.Errorf("size netlink receive buffer: %w", err)
		}
		return unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE})
	})
	if err != nil {
		if c.fd >= 0 {
			_ = unix.Close(c.fd)
		}
		return nil, fmt.Errorf("count routes in %s: %w", ns.Name, err)
	}
	go c.run()
	return c, nil
}

func (c *RouteCounter) run() {
	defer close(c.stopped)
	for {
		c.mu.Lock()
		if c.lost == nil {
			c.lost = c.drain()
			c.count = len(c.routes)
		}
		lost := c.lost
		c.mu.Unlock()
		wait := c.interval
		if lost != nil {
			wait = max(wait, dumpInterval)
			rs, err := KernelRoutes(c.ns, c.proto)
			if err == nil {
				c.mu.Lock()
				c.count = len(rs)
				c.mu.Unlock()
			}
		}
		c.mu.Lock()
		now := time.Now()
		kept := c.waiters[:0]
		for _, w := range c.waiters {
			if c.count >= w.n {
				w.at <- now
				continue
			}
			kept = append(kept, w)
		}
		c.waiters = kept
		c.mu.Unlock()
		select {
		case <-c.stop:
			return
		case <-time.After(wait):
		}
	}
}

// drain reads every queued notification without blocking.
func (c *RouteCounter) drain() error {
	for {
		n, _, err := unix.Recvfrom(c.fd, c.buf, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			return nil
		}
		if err != nil {
			// ENOBUFS: notifications were lost, the count is no longer
			// exact.
			return fmt.Errorf("read route notifications: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(c.buf[:n])
		if err != nil {
			return fmt.Errorf("parse route notifications: %w", err)
		}
		for _, m := range msgs {
			c.apply(m)
		}
	}
}

func (c *RouteCounter) apply(m syscall.NetlinkMessage) {
	if (m.Header.Type != unix.RTM_NEWROUTE && m.Header.Type != unix.RTM_DELROUTE) || len(m.Data) < unix.SizeofRtMsg {
		return
	}
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol, ...
	family, dstLen, table8, proto := m.Data[0], m.Data[1], m.Data[4], m.Data[5]
	if proto != uint8(c.proto) {
		return
	}
	table := uint32(table8)
	key := []byte{family, dstLen}
	attrs, err := syscall.ParseNetlinkRouteAttr(&m)
	if err != nil {
		return
	}
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.RTA_TABLE:
			if len(a.Value) == 4 {
				table = binary.NativeEndian.Uint32(a.Value) // netlink uses host order
			}
		case unix.RTA_DST:
			key = append(key, a.Value...)
		}
	}
	if table != unix.RT_TABLE_MAIN {
		return
	}
	if m.Header.Type == unix.RTM_NEWROUTE {
		c.routes[string(key)] = struct{}{}
	} else {
		delete(c.routes, string(key))
	}
}

// Wait returns the time of the first drain that counted at least n routes,
// waiting for it if needed.
func (c *RouteCounter) Wait(ctx context.Context, n int, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	at := make(chan time.Time, 1)
	c.mu.Lock()
	c.waiters = append(c.waiters, countWaiter{n: n, at: at})
	c.mu.Unlock()
	select {
	case t := <-at:
		return t, nil
	case <-ctx.Done():
		c.mu.Lock()
		count := c.count
		c.mu.Unlock()
		return time.Time{}, fmt.Errorf("%s: %d of %d proto-%d routes in the kernel after %s: %w", c.ns.Name, count, n, c.proto, timeout, ctx.Err())
	}
}

// Lost says why the counter fell back to dumps, or nil while it counts
// notifications.
func (c *RouteCounter) Lost() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lost
}

// Close stops the counter and releases its socket.
func (c *RouteCounter) Close() {
	select {
	case <-c.stop:
		return
	default:
	}
	close(c.stop)
	<-c.stopped
	_ = unix.Close(c.fd)
}
