//go:build privileged

package plugin

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/internal/testutil"
)

// metadataLab is a node namespace that forwards, a "cloud" namespace behind
// it holding the metadata service (a TCP listener on 100.100.100.200:80, as
// ECS answers from the vSwitch), and pod namespaces wired by setup.
type metadataLab struct {
	node, cloud nsutil.NS
	tag         string
}

func newMetadataLab(t *testing.T, tag string) *metadataLab {
	t.Helper()
	testutil.RequireRoot(t)
	l := &metadataLab{tag: tag}
	var err error
	if l.node, err = nsutil.Create(nsutil.OwnedName(tag + "n")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(l.node.Name) })
	if l.cloud, err = nsutil.Create(nsutil.OwnedName(tag + "c")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(l.cloud.Name) })
	cloudNS, err := ns.GetNS(l.cloud.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cloudNS.Close() }()
	if err := l.node.Do(func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "vswitch",
			PeerNamespace: netlink.NsFd(int(cloudNS.Fd()))}); err != nil {
			return err
		}
		up, err := netlink.LinkByName("uplink")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(up, &netlink.Addr{IPNet: toIPNet(netip.MustParsePrefix("192.0.2.1/30"))}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(up); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{Dst: toIPNet(wire.MetadataPrefix), Gw: net.ParseIP("192.0.2.2")}); err != nil {
			return err
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, l.node.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1")...)
	if err := l.cloud.Do(func() error {
		vs, err := netlink.LinkByName("vswitch")
		if err != nil {
			return err
		}
		for _, p := range []string{"192.0.2.2/30", "100.100.100.200/32"} {
			if err := netlink.AddrAdd(vs, &netlink.Addr{IPNet: toIPNet(netip.MustParsePrefix(p))}); err != nil {
				return err
			}
		}
		if err := netlink.LinkSetUp(vs); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{Dst: toIPNet(netip.MustParsePrefix("10.244.0.0/16")), Gw: net.ParseIP("192.0.2.1")})
	}); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := l.cloud.Do(func() (err error) {
		ln, err = net.Listen("tcp", "100.100.100.200:80")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("ram-role-credentials\n"))
			_ = c.Close()
		}
	}()
	return l
}

// pod wires a pod namespace for a from the node namespace.
func (l *metadataLab) pod(t *testing.T, name string, a wire.Allocation) nsutil.NS {
	t.Helper()
	p, err := nsutil.Create(nsutil.OwnedName(l.tag + name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(p.Name) })
	podNS, err := ns.GetNS(p.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = podNS.Close() }()
	if err := l.node.Do(func() error {
		_, err := setup(podNS, &skel.CmdArgs{ContainerID: "ctr-" + name, IfName: "eth0", Netns: p.Path}, a)
		return err
	}); err != nil {
		t.Fatalf("wire pod %s: %v", name, err)
	}
	return p
}

// reach connects from the pod to the metadata service and reads its answer.
// 3 s covers a SYN lost while a new veth gains carrier (resent after 1 s).
func reach(p nsutil.NS) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := p.DialContext(ctx, "tcp", net.JoinHostPort(wire.MetadataPrefix.Addr().String(), "80"))
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(buf[:n]), "ram-role") {
		return errors.New("unexpected answer " + string(buf[:n]))
	}
	return nil
}

func vethAlloc(addr string, blocked bool) wire.Allocation {
	a := wire.Allocation{Addr: netip.MustParsePrefix(addr), Gateway: VethGateway, MTU: 1500, Datapath: role.DatapathVethRouted}
	if blocked {
		a.Blocked = []netip.Prefix{wire.MetadataPrefix}
	}
	return a
}

// TestPrivilegedMetadataBlockedVeth: on the veth datapath a denied pod does
// not reach the metadata service (its prohibit route answers EACCES); with
// the route deleted, as a pod with NET_ADMIN can, the node's table still
// drops it (the control: with the table removed, it gets through); an
// allowed pod reaches it.
func TestPrivilegedMetadataBlockedVeth(t *testing.T) {
	l := newMetadataLab(t, "mdv")
	if err := l.node.Do(WriteMetadataFilter); err != nil {
		t.Fatalf("write the node's metadata table: %v", err)
	}
	allowed := l.pod(t, "a", vethAlloc("10.244.1.10/32", false))
	denied := l.pod(t, "d", vethAlloc("10.244.1.11/32", true))

	if err := reach(allowed); err != nil {
		t.Fatalf("allowed pod cannot reach the metadata service: %v", err)
	}
	err := reach(denied)
	if err == nil {
		t.Fatal("denied pod reached the metadata service")
	}
	if !errors.Is(err, unix.EACCES) {
		t.Errorf("denied pod: %v, want EACCES from its prohibit route", err)
	}

	// The pod deletes its own route (NET_ADMIN in its namespace).
	testutil.Run(t, denied.Exec("ip", "route", "del", "prohibit", wire.MetadataPrefix.String())...)
	if err := reach(denied); err == nil {
		t.Fatal("denied pod without its prohibit route reached the metadata service: the node's table did not drop it")
	} else {
		t.Logf("denied pod without its route: %v (dropped on the node)", err)
	}
	var dropped uint64
	if err := l.node.Do(func() (err error) { dropped, err = MetadataFilterOK(); return err }); err != nil {
		t.Fatalf("metadata table after the drop: %v", err)
	}
	if dropped == 0 {
		t.Error("the node's table counted no dropped packet")
	}
	// Control: without the node's table the same pod gets through, so the
	// table is what stopped it.
	if err := l.node.Do(RemoveMetadataFilter); err != nil {
		t.Fatal(err)
	}
	if err := reach(denied); err != nil {
		t.Fatalf("control: with the node's table removed the pod should get through, got %v", err)
	}
	if err := l.node.Do(func() error { _, err := MetadataFilterOK(); return err }); !errors.Is(err, ErrMetadataFilterDrift) {
		t.Errorf("MetadataFilterOK with the table removed: %v, want drift", err)
	}
}

// TestPrivilegedMetadataBlockedIPVlan: an ENIIP pod (datapath ipvlan) that
// is denied has the prohibit route inside its namespace, which is the lock
// that holds when its packets leave by the ENI without crossing the node.
// On a kernel without ipvlan the pod is wired veth-routed (as strata-cni
// falls back) and then also gets the node's half.
func TestPrivilegedMetadataBlockedIPVlan(t *testing.T) {
	il := newIPVlanLab(t, "mdi")
	if !kernelHasIPVlan(t, il) {
		t.Log("this kernel has no ipvlan: the ipvlan datapath itself cannot be tested here; testing the veth-routed fallback strata-cni wires ipvlan allocations with instead")
		l := newMetadataLab(t, "mdf")
		if err := l.node.Do(func() error {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eni0"}, PeerName: "eni0peer"}); err != nil {
				return err
			}
			return WriteMetadataFilter()
		}); err != nil {
			t.Fatal(err)
		}
		eniip := func(addr string, blocked bool) wire.Allocation {
			a := vethAlloc(addr, blocked)
			a.Datapath, a.Gateway, a.HostVia, a.ENILink = role.DatapathIPVlan, netip.MustParseAddr("10.0.64.1"), netip.MustParseAddr("10.0.64.5"), "eni0"
			return a
		}
		denied := l.pod(t, "f", eniip("10.244.1.12/32", true))
		if err := reach(denied); !errors.Is(err, unix.EACCES) {
			t.Errorf("denied pod on the ipvlan fallback: %v, want EACCES from its prohibit route", err)
		}
		testutil.Run(t, denied.Exec("ip", "route", "del", "prohibit", wire.MetadataPrefix.String())...)
		if err := reach(denied); err == nil {
			t.Error("denied pod on the ipvlan fallback, its route deleted, reached the metadata service")
		}
		if err := reach(l.pod(t, "g", eniip("10.244.1.13/32", false))); err != nil {
			t.Errorf("allowed pod on the ipvlan fallback: %v", err)
		}
		return
	}
	args := il.args("eth0")
	for _, tc := range []struct {
		name    string
		blocked []netip.Prefix
	}{{"denied", []netip.Prefix{wire.MetadataPrefix}}, {"allowed", nil}} {
		a := il.alloc()
		a.Blocked = tc.blocked
		if err := il.node.Do(func() error { _, err := setup(il.podNS, args, a); return err }); err != nil {
			t.Fatalf("%s: wire ipvlan pod: %v", tc.name, err)
		}
		var err error
		_ = il.pod.Do(func() error {
			_, err = net.DialTimeout("tcp", "100.100.100.200:80", 500*time.Millisecond)
			return nil
		})
		switch {
		case tc.blocked != nil && !errors.Is(err, unix.EACCES):
			t.Errorf("denied ipvlan pod: %v, want EACCES from its prohibit route", err)
		case tc.blocked == nil && errors.Is(err, unix.EACCES):
			t.Errorf("allowed ipvlan pod got EACCES: %v", err)
		}
		if err := il.node.Do(func() error { _, err := teardown(il.pod.Path, args.ContainerID, args.IfName); return err }); err != nil {
			t.Fatal(err)
		}
	}
}
