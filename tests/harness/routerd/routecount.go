package routerd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
// RouteCounter subscribes but does not wait on the socket: the kernel queues
// the notifications without a wakeup, and Wait drains them between sleeps.
type RouteCounter struct {
	ns     nsutil.NS
	proto  netlink.RouteProtocol
	fd     int
	buf    []byte
	routes map[string]struct{} // destination bytes + prefix length
	lost   error               // notifications were dropped: count by dump
}

// counterRcvBuf holds the notifications that arrive between two drains.
const counterRcvBuf = 32 << 20

// CountRoutes starts counting proto's main-table IPv4 and IPv6 routes in
// ns from now on. Close it when done.
func CountRoutes(ns nsutil.NS, proto netlink.RouteProtocol) (*RouteCounter, error) {
	return countRoutes(ns, proto, counterRcvBuf)
}

func countRoutes(ns nsutil.NS, proto netlink.RouteProtocol, rcvBuf int) (*RouteCounter, error) {
	c := &RouteCounter{ns: ns, proto: proto, fd: -1, buf: make([]byte, 1<<20), routes: map[string]struct{}{}}
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
		c.Close()
		return nil, fmt.Errorf("count routes in %s: %w", ns.Name, err)
	}
	return c, nil
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

// Wait drains the notifications every interval until at least n routes
// were counted, and returns the time of the drain that counted the n-th.
// Once notifications were lost it counts by dumping the table at the same
// interval instead.
func (c *RouteCounter) Wait(ctx context.Context, n int, interval, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if c.lost == nil {
			c.lost = c.drain()
		}
		count := len(c.routes)
		if c.lost != nil {
			rs, err := KernelRoutes(c.ns, c.proto)
			if err != nil {
				return time.Time{}, fmt.Errorf("count proto-%d routes by dump after %v: %w", c.proto, c.lost, err)
			}
			count = len(rs)
		}
		if count >= n {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s: %d of %d proto-%d routes in the kernel after %s: %w", c.ns.Name, count, n, c.proto, timeout, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// Lost says why the counter fell back to dumps, or nil while it counts
// notifications.
func (c *RouteCounter) Lost() error { return c.lost }

// Close releases the socket.
func (c *RouteCounter) Close() {
	if c.fd >= 0 {
		_ = unix.Close(c.fd)
		c.fd = -1
	}
}
