//go:build privileged

package routerd

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/tests/harness/netlab"
)

func TestPrivilegedRouteCounterCountsOneProtocolsMainTableRoutes(t *testing.T) {
	testRouteCounter(t, counterRcvBuf)
}

// With a receive buffer far too small for the burst the kernel drops
// notifications (ENOBUFS), and the counter must fall back to dumps.
func TestPrivilegedRouteCounterSurvivesLostNotifications(t *testing.T) {
	testRouteCounter(t, 4096)
}

func testRouteCounter(t *testing.T, rcvBuf int) {
	lab := netlab.New(t, netlab.Spec{Hosts: []netlab.Host{{Name: "rc"}}})
	ns := lab.NS("rc")
	c, err := countRoutes(ns, BIRDKernelProto, time.Millisecond, rcvBuf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	route := func(i int, proto netlink.RouteProtocol, table int) *netlink.Route {
		return &netlink.Route{
			Dst:      &net.IPNet{IP: net.IPv4(198, 18, byte(i>>6), byte(i<<2)), Mask: net.CIDRMask(30, 32)},
			Type:     unix.RTN_BLACKHOLE,
			Protocol: proto,
			Table:    table,
		}
	}
	const n = 3000 // more than one drain's worth of notifications
	if err := ns.Do(func() error {
		for i := range n {
			if err := netlink.RouteAdd(route(i, BIRDKernelProto, unix.RT_TABLE_MAIN)); err != nil {
				return err
			}
		}
		// Neither another protocol nor another table counts.
		if err := netlink.RouteAdd(route(n, BIRDKernelProto+1, unix.RT_TABLE_MAIN)); err != nil {
			return err
		}
		return netlink.RouteAdd(route(n+1, BIRDKernelProto, 100))
	}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Wait(ctx, n, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if lost := c.Lost(); (lost != nil) != (rcvBuf < counterRcvBuf) {
		t.Fatalf("receive buffer %d bytes for %d notifications: lost = %v", rcvBuf, n, lost)
	}
	if _, err := c.Wait(ctx, n+1, 100*time.Millisecond); err == nil {
		t.Fatal("counted a route of another protocol or table")
	}
	if err := ns.Do(func() error { return netlink.RouteDel(route(0, BIRDKernelProto, unix.RT_TABLE_MAIN)) }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx, n, 100*time.Millisecond); err == nil {
		t.Fatal("a deleted route is still counted")
	}
	if _, err := c.Wait(ctx, n-1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}
