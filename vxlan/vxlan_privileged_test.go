//go:build privileged

package vxlan

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/rtproto"
	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/harness/netlab"
)

// The lab: three nodes on three subnets joined by two routers (an L3-routed
// underlay, no shared L2 segment), and one pod behind each node. n1 and n2
// are edge-style (pod CIDR, gateway = its first address); n3 is cloud-style
// (a per-pod /32 and a dedicated gateway /32 outside any pod prefix).
//
//	p1 - n1 - r1 ==== r2 - n2 - p2
//	                   |
//	                   n3 - p3
type node struct {
	name, pod     string
	underlay      string // VTEP address
	overlay       string // gateway address on the vxlan device
	podIP, prefix string
	dp            *Datapath
	stop          context.CancelFunc
	done          chan struct{}
}

const podMTU = 1500 - Overhead

func labSpec() netlab.Spec {
	nodeLink := func(n, ip, r, rip string) netlab.Link {
		return netlab.Link{A: netlab.Port{Host: n, Ifname: "eth0", Addr: ip}, B: netlab.Port{Host: r, Ifname: "to-" + n, Addr: rip}}
	}
	podLink := func(n, p, podIP string) netlab.Link {
		return netlab.Link{A: netlab.Port{Host: n, Ifname: "pod0", Addr: "169.254.1.1/32"}, B: netlab.Port{Host: p, Ifname: "eth0", Addr: podIP + "/32"}, MTU: podMTU}
	}
	return netlab.Spec{
		Hosts: []netlab.Host{
			{Name: "r1", Forward: true, Routes: []netlab.Route{{Dst: "192.168.20.0/24", Via: "100.64.0.2"}, {Dst: "192.168.30.0/24", Via: "100.64.0.2"}}},
			{Name: "r2", Forward: true, Routes: []netlab.Route{{Dst: "192.168.10.0/24", Via: "100.64.0.1"}}},
			{Name: "n1", Forward: true, Routes: []netlab.Route{{Dst: "default", Via: "192.168.10.1"}}},
			{Name: "n2", Forward: true, Routes: []netlab.Route{{Dst: "default", Via: "192.168.20.1"}}},
			{Name: "n3", Forward: true, Routes: []netlab.Route{{Dst: "default", Via: "192.168.30.1"}}},
			{Name: "p1"}, {Name: "p2"}, {Name: "p3"},
		},
		Links: []netlab.Link{
			{A: netlab.Port{Host: "r1", Ifname: "wan", Addr: "100.64.0.1/30"}, B: netlab.Port{Host: "r2", Ifname: "wan", Addr: "100.64.0.2/30"}},
			nodeLink("n1", "192.168.10.11/24", "r1", "192.168.10.1/24"),
			nodeLink("n2", "192.168.20.11/24", "r2", "192.168.20.1/24"),
			nodeLink("n3", "192.168.30.11/24", "r2", "192.168.30.1/24"),
			podLink("n1", "p1", "10.244.1.2"),
			podLink("n2", "p2", "10.244.2.2"),
			podLink("n3", "p3", "10.0.64.7"),
		},
	}
}

// wirePod adds the routed-veth plumbing netlab does not: the node's host
// route to the pod, and the pod's default route via the node's link-local.
func wirePod(t *testing.T, lab *netlab.Lab, n *node) {
	t.Helper()
	must(t, lab.NS(n.name).Do(func() error {
		l, err := netlink.LinkByName("pod0")
		if err != nil {
			return err
		}
		return netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(netip.MustParsePrefix(n.podIP + "/32")), Scope: netlink.SCOPE_LINK, Protocol: rtproto.Pod})
	}))
	must(t, lab.NS(n.pod).Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		gw := netip.MustParseAddr("169.254.1.1")
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(netip.PrefixFrom(gw, 32)), Scope: netlink.SCOPE_LINK}); err != nil {
			return err
		}
		return netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()})
	}))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// start builds a datapath inside the node's namespace and runs its drift
// repair until the test ends (or stopRun).
func start(t *testing.T, lab *netlab.Lab, n *node) {
	t.Helper()
	cfg := DeviceConfig{
		LocalIP: netip.MustParseAddr(n.underlay), OverlayIP: netip.MustParseAddr(n.overlay),
		UnderlayLink: "eth0", CheckInterval: time.Second,
	}
	must(t, lab.NS(n.name).Do(func() error {
		var err error
		n.dp, err = New(cfg, testLogger().With("node", n.name))
		return err
	}))
	ctx, cancel := context.WithCancel(context.Background())
	n.stop, n.done = cancel, make(chan struct{})
	go func() { defer close(n.done); _ = n.dp.Run(ctx) }()
	t.Cleanup(func() { stopRun(n) })
}

func stopRun(n *node) {
	if n.stop != nil {
		n.stop()
		<-n.done
		n.stop = nil
	}
}

func (n *node) peer() Peer {
	return Peer{Name: n.name, UnderlayIP: netip.MustParseAddr(n.underlay), OverlayIP: netip.MustParseAddr(n.overlay), Prefixes: []netip.Prefix{netip.MustParsePrefix(n.prefix)}}
}

func reconcileAll(t *testing.T, nodes []*node, skip ...string) {
	t.Helper()
	for _, n := range nodes {
		var peers []Peer
		for _, p := range nodes {
			if p != n && !contains(skip, p.name) && !contains(skip, n.name) {
				peers = append(peers, p.peer())
			}
		}
		if contains(skip, n.name) {
			continue
		}
		must(t, n.dp.Reconcile(context.Background(), peers))
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// eventually polls fn until it succeeds, failing after a generous deadline
// (the machine is shared; nothing here is a timing assertion).
func eventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: still failing after 45s: %v", what, err)
}

func ping(lab *netlab.Lab, from, to string, size int) error {
	args := []string{"ping", "-n", "-c", "1", "-W", "1", "-M", "do"}
	if size > 0 {
		args = append(args, "-s", fmt.Sprint(size))
	}
	argv := lab.NS(from).Exec(append(args, to)...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s -> %s (size %d): %v: %s", from, to, size, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// tcpEcho sends 1 MiB from one pod to an echo server in another and checks
// it comes back intact: large segments cross the overlay at the pod MTU.
func tcpEcho(lab *netlab.Lab, client, server, serverIP string) error {
	var ln net.Listener
	if err := lab.NS(server).Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", serverIP+":0")
		return err
	}); err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	var conn net.Conn
	if err := lab.NS(client).Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	payload := make([]byte, 1<<20)
	_, _ = rand.Read(payload)
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		_ = conn.(*net.TCPConn).CloseWrite()
		errc <- err
	}()
	got, err := io.ReadAll(conn)
	if werr := <-errc; werr != nil {
		return fmt.Errorf("tcp %s -> %s write: %w", client, server, werr)
	}
	if err != nil {
		return fmt.Errorf("tcp %s -> %s read: %w", client, server, err)
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("tcp %s -> %s: echoed %d bytes, want the same 1 MiB back", client, server, len(got))
	}
	return nil
}

func inNS(lab *netlab.Lab, host string, fn func() error) error { return lab.NS(host).Do(fn) }

func vxRoutes(lab *netlab.Lab, host string) ([]netlink.Route, error) {
	var rs []netlink.Route
	err := inNS(lab, host, func() error {
		var err error
		rs, err = nlretry.Dump(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: rtproto.VXLAN}, netlink.RT_FILTER_PROTOCOL)
		})
		return err
	})
	return rs, err
}

func hasRoute(lab *netlab.Lab, host, dst string) (bool, error) {
	rs, err := vxRoutes(lab, host)
	if err != nil {
		return false, err
	}
	for _, r := range rs {
		if r.Dst != nil && r.Dst.String() == dst {
			return true, nil
		}
	}
	return false, nil
}

func TestPrivilegedOverlay(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "ping", "apt-get install iputils-ping")
	lab := netlab.New(t, labSpec())
	nodes := []*node{
		{name: "n1", pod: "p1", underlay: "192.168.10.11", overlay: "10.244.1.0", podIP: "10.244.1.2", prefix: "10.244.1.0/24"},
		{name: "n2", pod: "p2", underlay: "192.168.20.11", overlay: "10.244.2.0", podIP: "10.244.2.2", prefix: "10.244.2.0/24"},
		{name: "n3", pod: "p3", underlay: "192.168.30.11", overlay: "10.0.63.3", podIP: "10.0.64.7", prefix: "10.0.64.7/32"},
	}
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	for _, n := range nodes {
		wirePod(t, lab, n)
		start(t, lab, n)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			stopRun(n)
			_ = n.dp.Close()
		}
	})
	// A route some other datapath owns, on our device's future name: it must
	// survive every reconcile.
	foreignDst := netip.MustParsePrefix("10.98.0.0/16")
	must(t, inNS(lab, "n1", func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(foreignDst), Gw: net.ParseIP("192.168.10.1"), Protocol: rtproto.BGP})
	}))
	reconcileAll(t, nodes)

	all := func(t *testing.T) {
		t.Helper()
		for _, a := range nodes {
			for _, b := range nodes {
				if a != b {
					eventually(t, a.pod+" pings "+b.pod, func() error { return ping(lab, a.pod, b.podIP, 0) })
				}
			}
		}
	}

	t.Run("ping and TCP pod to pod both ways", func(t *testing.T) {
		all(t)
		for _, pair := range [][2]*node{{n1, n2}, {n2, n1}, {n1, n3}, {n3, n2}} {
			eventually(t, "tcp echo", func() error { return tcpEcho(lab, pair[0].pod, pair[1].pod, pair[1].podIP) })
		}
		// The node itself reaches a remote cloud-style pod: replies come back
		// to its OverlayIP through the gateway /32 route on the peer.
		eventually(t, "n1 pings p3", func() error { return ping(lab, "n1", n3.podIP, 0) })
	})

	t.Run("large packets at pod MTU over a 1500-byte underlay", func(t *testing.T) {
		// Pod MTU is underlay - 50: the biggest unfragmentable ICMP payload
		// is 1450 - 28 bytes, and it crosses the overlay with DF set.
		for _, pair := range [][2]*node{{n1, n2}, {n2, n3}, {n3, n1}} {
			eventually(t, "big ping", func() error { return ping(lab, pair[0].pod, pair[1].podIP, podMTU-28) })
		}
	})

	t.Run("reconcile is idempotent and leaves foreign routes", func(t *testing.T) {
		reconcileAll(t, nodes)
		if c := n1.dp.Status().LastReconcile; c.Total() != 0 {
			t.Fatalf("second reconcile wrote %+v, want nothing", c)
		}
		must(t, inNS(lab, "n1", func() error {
			rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipNet(foreignDst)}, netlink.RT_FILTER_DST)
			if err != nil || len(rs) != 1 || rs[0].Protocol != rtproto.BGP {
				return fmt.Errorf("foreign route 10.98.0.0/16 proto bgp gone or changed: %v %v", rs, err)
			}
			return nil
		}))
	})

	t.Run("hand-deleted route, FDB and neighbour are repaired", func(t *testing.T) {
		var idx int
		must(t, inNS(lab, "n1", func() error {
			l, err := netlink.LinkByName(DefaultName)
			idx = l.Attrs().Index
			return err
		}))
		before := n1.dp.Status().Repairs
		must(t, inNS(lab, "n1", func() error {
			return netlink.RouteDel(&netlink.Route{Dst: ipNet(netip.MustParsePrefix(n2.prefix)), Protocol: rtproto.VXLAN})
		}))
		eventually(t, "route to p2 repaired", func() error {
			if ok, err := hasRoute(lab, "n1", n2.prefix); err != nil || !ok {
				return fmt.Errorf("route %s missing (%v)", n2.prefix, err)
			}
			return ping(lab, "p1", n2.podIP, 0)
		})
		mac := DefaultMAC(1, netip.MustParseAddr(n2.overlay))
		must(t, inNS(lab, "n1", func() error {
			return netlink.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, HardwareAddr: mac, IP: net.ParseIP(n2.underlay)})
		}))
		eventually(t, "fdb for n2 repaired", func() error {
			return inNS(lab, "n1", func() error {
				fs, err := nlretry.Dump(func() ([]netlink.Neigh, error) { return netlink.NeighList(idx, unix.AF_BRIDGE) })
				if err != nil {
					return err
				}
				for _, f := range fs {
					if f.HardwareAddr.String() == mac.String() && f.IP.String() == n2.underlay {
						return nil
					}
				}
				return errors.New("fdb entry missing")
			})
		})
		must(t, inNS(lab, "n1", func() error {
			return netlink.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, IP: net.ParseIP(n3.overlay)})
		}))
		eventually(t, "neighbour for n3 repaired", func() error {
			return inNS(lab, "n1", func() error {
				ns, err := nlretry.Dump(func() ([]netlink.Neigh, error) { return netlink.NeighList(idx, netlink.FAMILY_V4) })
				if err != nil {
					return err
				}
				for _, n := range ns {
					if n.IP.String() == n3.overlay && n.State&netlink.NUD_PERMANENT != 0 {
						return nil
					}
				}
				return errors.New("neighbour missing")
			})
		})
		// An attribute changed by hand is fixed in place.
		must(t, inNS(lab, "n1", func() error {
			l, err := netlink.LinkByName(DefaultName)
			if err != nil {
				return err
			}
			return netlink.LinkSetMTU(l, 1300)
		}))
		eventually(t, "device MTU repaired", func() error {
			return inNS(lab, "n1", func() error {
				l, err := netlink.LinkByName(DefaultName)
				if err != nil {
					return err
				}
				if l.Attrs().MTU != podMTU {
					return fmt.Errorf("MTU %d", l.Attrs().MTU)
				}
				return nil
			})
		})
		// A "network restart" (flannel#1070): the device goes down, which
		// flushes its nexthops and every route through it.
		must(t, inNS(lab, "n1", func() error {
			l, err := netlink.LinkByName(DefaultName)
			if err != nil {
				return err
			}
			return netlink.LinkSetDown(l)
		}))
		eventually(t, "device up with routes after a down/up", func() error {
			for _, p := range []*node{n2, n3} {
				if ok, err := hasRoute(lab, "n1", p.prefix); err != nil || !ok {
					return fmt.Errorf("route %s not back (%v)", p.prefix, err)
				}
			}
			return ping(lab, "p1", n2.podIP, 0)
		})
		if n1.dp.Status().Repairs <= before {
			t.Fatalf("repairs counter did not move: %+v", n1.dp.Status())
		}
		all(t)
	})

	t.Run("deleted device is recreated with a full resync", func(t *testing.T) {
		before := n2.dp.Status().Recreations
		must(t, inNS(lab, "n2", func() error {
			l, err := netlink.LinkByName(DefaultName)
			if err != nil {
				return err
			}
			return netlink.LinkDel(l)
		}))
		eventually(t, "device recreated", func() error {
			if st := n2.dp.Status(); st.Recreations <= before {
				return fmt.Errorf("not recreated yet: %+v", st)
			}
			for _, p := range []*node{n1, n3} {
				if ok, err := hasRoute(lab, "n2", p.prefix); err != nil || !ok {
					return fmt.Errorf("route %s not back (%v)", p.prefix, err)
				}
			}
			return nil
		})
		all(t)
	})

	t.Run("peer removed and added back", func(t *testing.T) {
		// With Run subscribed and nothing drifting, the state becomes
		// verified and the removal is written as a delta without dumps.
		eventually(t, "n1 verified", func() error {
			if !n1.dp.Status().Verified {
				return errors.New("not verified yet")
			}
			return nil
		})
		reconcileAll(t, nodes, "n3")
		want := Counts{NeighRemoved: 1, FDBRemoved: 1, NexthopsRemoved: 1, RoutesRemoved: 2}
		if got := n1.dp.Status().LastReconcile; got != want {
			t.Fatalf("removing n3 wrote %+v, want %+v", got, want)
		}
		for _, h := range []string{"n1", "n2"} {
			rs, err := vxRoutes(lab, h)
			must(t, err)
			for _, r := range rs {
				if strings.HasPrefix(r.Dst.String(), "10.0.6") {
					t.Fatalf("%s still routes %s to removed peer n3", h, r.Dst)
				}
			}
		}
		if err := ping(lab, "p1", n3.podIP, 0); err == nil {
			t.Fatal("p1 still reaches p3 after n3 was removed as a peer")
		}
		if err := ping(lab, "p1", n2.podIP, 0); err != nil {
			eventually(t, "p1 pings p2 while n3 is gone", func() error { return ping(lab, "p1", n2.podIP, 0) })
		}
		reconcileAll(t, nodes)
		all(t)
	})

	t.Run("peer underlay IP changes", func(t *testing.T) {
		// n3 moves to a new VTEP address: its device is adopted by a new
		// datapath with the new LocalIP (and recreated), the peers update FDB.
		must(t, inNS(lab, "n3", func() error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			// Keep the new (secondary) address when the old primary goes.
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/eth0/promote_secondaries", []byte("1"), 0o644); err != nil {
				return err
			}
			a, _ := netlink.ParseAddr("192.168.30.12/24")
			return netlink.AddrAdd(l, a)
		}))
		stopRun(n3)
		n3.underlay = "192.168.30.12"
		start(t, lab, n3) // the old datapath is abandoned, its device adopted
		reconcileAll(t, nodes)
		must(t, inNS(lab, "n3", func() error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			a, _ := netlink.ParseAddr("192.168.30.11/24")
			return netlink.AddrDel(l, a)
		}))
		must(t, inNS(lab, "n3", func() error {
			l, err := netlink.LinkByName(DefaultName)
			if err != nil {
				return err
			}
			if src := l.(*netlink.Vxlan).SrcAddr.String(); src != "192.168.30.12" {
				return fmt.Errorf("device local %s, want 192.168.30.12", src)
			}
			return nil
		}))
		all(t)
	})

	t.Run("one bad peer stops no other", func(t *testing.T) {
		// n3 leaves, then comes back in the same list as a bad peer: the
		// bad one is refused by name and n3 is programmed anyway.
		must(t, n1.dp.Reconcile(context.Background(), []Peer{n2.peer()}))
		if ok, err := hasRoute(lab, "n1", n3.prefix); err != nil || ok {
			t.Fatalf("n3's route stayed after n3 left the peers (%v)", err)
		}
		bad := []Peer{n2.peer(), {Name: "v6", UnderlayIP: netip.MustParseAddr("2001:db8::2"), OverlayIP: netip.MustParseAddr("10.244.9.0")}, n3.peer()}
		err := n1.dp.Reconcile(context.Background(), bad)
		var pe *PeerError
		if !errors.As(err, &pe) || pe.Peer != "v6" || !strings.Contains(err.Error(), "IPv6") {
			t.Fatalf("IPv6 peer: err %v, want a *PeerError naming v6 with a clear IPv6 refusal", err)
		}
		for _, n := range []*node{n2, n3} {
			if ok, err := hasRoute(lab, "n1", n.prefix); err != nil || !ok {
				t.Fatalf("a bad peer kept %s's route out (%v)", n.name, err)
			}
		}
	})

	t.Run("close removes what it owns", func(t *testing.T) {
		stopRun(n1)
		must(t, n1.dp.Close())
		must(t, inNS(lab, "n1", func() error {
			if _, err := netlink.LinkByName(DefaultName); err == nil {
				return errors.New("device still there after Close")
			}
			return nil
		}))
		rs, err := vxRoutes(lab, "n1")
		must(t, err)
		if len(rs) != 0 {
			t.Fatalf("routes left after Close: %v", rs)
		}
		must(t, inNS(lab, "n1", func() error {
			rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipNet(foreignDst)}, netlink.RT_FILTER_DST)
			if err != nil || len(rs) != 1 {
				return fmt.Errorf("Close removed a foreign route: %v %v", rs, err)
			}
			return nil
		}))
	})
}
