//go:build privileged

package plugin

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/testutil"
)

// ipvlanLab is a node namespace whose "ENI" is a veth (eni0, its peer up in
// the same namespace for carrier) carrying the ENI primary IP as a /32, as
// cloud-node/datapath's ENIUp leaves it, and an empty pod namespace.
type ipvlanLab struct {
	node, pod nsutil.NS
	podNS     ns.NetNS
}

func newIPVlanLab(t *testing.T, tag string) *ipvlanLab {
	t.Helper()
	testutil.RequireRoot(t)
	l := &ipvlanLab{}
	var err error
	if l.node, err = nsutil.Create(nsutil.OwnedName(tag + "n")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(l.node.Name) })
	if l.pod, err = nsutil.Create(nsutil.OwnedName(tag + "p")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(l.pod.Name) })
	if l.podNS, err = ns.GetNS(l.pod.Path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.podNS.Close() })
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	if err := l.node.Do(func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eni0", HardwareAddr: mac, MTU: 1500}, PeerName: "eni0peer"}); err != nil {
			return err
		}
		for _, n := range []string{"eni0", "eni0peer"} {
			if err := nsutil.LinkUp(n); err != nil {
				return err
			}
		}
		eni, err := netlink.LinkByName("eni0")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(eni, &netlink.Addr{IPNet: toIPNet(netip.MustParsePrefix("10.0.64.5/32")), Flags: unix.IFA_F_NOPREFIXROUTE})
	}); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *ipvlanLab) args(ifName string) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: "ctr-ipvlan", IfName: ifName, Netns: l.pod.Path}
}

func (l *ipvlanLab) alloc() wire.Allocation {
	a := ipvlanAlloc()
	a.ENILink, a.ENIMAC = "eni0", "02:00:00:00:00:01"
	a.Direct = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")} // as the cloud role sends it
	return a
}

// nodeState is what the node holds for pod addresses: rules and proto 203 routes.
func (l *ipvlanLab) nodeState(t *testing.T) string {
	return testutil.Run(t, l.node.Exec("ip", "-4", "rule", "show")...) + testutil.Run(t, l.node.Exec("ip", "-4", "route", "show", "proto", "203")...)
}

func kernelHasIPVlan(t *testing.T, l *ipvlanLab) bool {
	var err error
	_ = l.node.Do(func() error {
		eni, lerr := netlink.LinkByName("eni0")
		if lerr != nil {
			return lerr
		}
		err = netlink.LinkAdd(&netlink.IPVlan{LinkAttrs: netlink.LinkAttrs{Name: "probeipvl", ParentIndex: eni.Attrs().Index}, Mode: netlink.IPVLAN_MODE_L2})
		if err == nil {
			p, _ := netlink.LinkByName("probeipvl")
			_ = netlink.LinkDel(p)
		}
		return nil
	})
	if err != nil && !isUnsupported(err) {
		t.Fatalf("probe ipvlan on eni0: %v", err)
	}
	return err == nil
}

// A kernel without ipvlan refuses the first ipvlan link: the pod is wired
// veth-routed with the same address and ENI table, and CHECK, DEL agree.
// On a kernel with ipvlan the refusal is injected, so this runs everywhere.
func TestPrivilegedIPVlanFallsBackPerPod(t *testing.T) {
	l := newIPVlanLab(t, "ipvf")
	if kernelHasIPVlan(t, l) {
		orig := addIPVlan
		addIPVlan = func(*netlink.IPVlan) error { return unix.EOPNOTSUPP }
		t.Cleanup(func() { addIPVlan = orig })
	} else {
		t.Log("the kernel itself refuses ipvlan")
	}
	args, a := l.args("eth0"), l.alloc()
	if err := l.node.Do(func() error {
		res, err := setup(l.podNS, args, a)
		if err != nil {
			return err
		}
		if len(res.Interfaces) != 2 || !strings.HasPrefix(res.Interfaces[0].Name, HostVethPrefix) {
			t.Errorf("fallback result interfaces %+v: want a host veth and the pod end", res.Interfaces)
		}
		return check(l.podNS, args, a)
	}); err != nil {
		t.Fatalf("ADD/CHECK with ipvlan refused: %v", err)
	}
	if links := testutil.Run(t, l.node.Exec("ip", "-o", "link", "show")...); strings.Contains(links, HostIPVlanPrefix) {
		t.Fatalf("a host ipvlan was left although the kernel refused ipvlan:\n%s", links)
	}
	if st := l.nodeState(t); !strings.Contains(st, "from 10.0.64.20 lookup 1007") || !strings.Contains(st, "10.0.64.20 dev "+HostVethPrefix) {
		t.Fatalf("fallback host side incomplete:\n%s", st)
	}
	if r := testutil.Run(t, l.pod.Exec("ip", "-4", "route", "show", "default")...); !strings.Contains(r, "via 169.254.1.1") {
		t.Fatalf("fallback pod default route %q: want via 169.254.1.1", r)
	}
	testutil.Run(t, l.node.Exec("ping", "-c1", "-W2", "10.0.64.20")...)
	if err := l.node.Do(func() error {
		found, err := teardown(l.pod.Path, args.ContainerID, args.IfName)
		if !found && err == nil {
			err = errors.New("teardown found nothing")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if st := l.nodeState(t); strings.Contains(st, "10.0.64.20") {
		t.Fatalf("DEL left host state:\n%s", st)
	}
}

// The ipvlan datapath itself; it needs a kernel with ipvlan (real cloud
// nodes), so it skips only when the kernel has none.
func TestPrivilegedIPVlanPod(t *testing.T) {
	l := newIPVlanLab(t, "ipvl")
	if !kernelHasIPVlan(t, l) {
		t.Skip("this kernel has no ipvlan (EOPNOTSUPP creating one): the ipvlan datapath cannot run here; TestPrivilegedIPVlanFallsBackPerPod covers the fallback")
	}
	args, a := l.args("eth0"), l.alloc()
	host := hostIPVlanName("eni0")
	add := func(a wire.Allocation, args *skel.CmdArgs) error {
		return l.node.Do(func() error { _, err := setup(l.podNS, args, a); return err })
	}
	if err := add(a, args); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if err := l.node.Do(func() error { return check(l.podNS, args, a) }); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if out := testutil.Run(t, l.pod.Exec("ip", "-d", "link", "show", "eth0")...); !strings.Contains(out, "ipvlan") || !strings.Contains(out, "strata-ipvl:10.0.64.20/1007/"+host) {
		t.Fatalf("pod eth0 is not the labelled ipvlan slave:\n%s", out)
	}
	if out := testutil.Run(t, l.node.Exec("ip", "-4", "addr", "show", "dev", host)...); !strings.Contains(out, "10.0.64.5/32") {
		t.Fatalf("host ipvlan %s lacks the ENI primary IP:\n%s", host, out)
	}
	if st := l.nodeState(t); !strings.Contains(st, "from 10.0.64.20 lookup 1007") || !strings.Contains(st, "10.0.64.20 dev "+host) {
		t.Fatalf("host side incomplete:\n%s", st)
	}
	routes := testutil.Run(t, l.pod.Exec("ip", "-4", "route", "show")...)
	for _, want := range []string{"default via 10.0.64.1", "10.96.0.0/12 via 10.0.64.5", "10.0.64.5 dev eth0 scope link"} {
		if !strings.Contains(routes, want) {
			t.Fatalf("pod routes lack %q:\n%s", want, routes)
		}
	}
	// the node reaches its pod through its own slave, and the pod the node
	testutil.Run(t, l.node.Exec("ping", "-c1", "-W2", "10.0.64.20")...)
	testutil.Run(t, l.pod.Exec("ping", "-c1", "-W2", "10.0.64.5")...)

	// a failing ADD (the name is taken in the pod) leaves nothing of its own
	b := a
	b.Addr = netip.MustParsePrefix("10.0.64.21/32")
	if err := add(b, args); err == nil {
		t.Fatal("ADD onto a taken interface name succeeded")
	}
	if st := l.nodeState(t); strings.Contains(st, "10.0.64.21") {
		t.Fatalf("failed ADD left host state:\n%s", st)
	}

	// DEL with the namespace, then re-ADD (the host slave is reused)
	if err := l.node.Do(func() error { _, err := teardown(l.pod.Path, args.ContainerID, args.IfName); return err }); err != nil {
		t.Fatal(err)
	}
	if st := l.nodeState(t); strings.Contains(st, "10.0.64.20") {
		t.Fatalf("DEL left host state:\n%s", st)
	}
	if err := add(a, args); err != nil {
		t.Fatalf("re-ADD: %v", err)
	}
	// DEL after the namespace is gone: only the agent's record finds the host side
	_ = l.podNS.Close()
	if err := nsutil.Delete(l.pod.Name); err != nil {
		t.Fatal(err)
	}
	if err := l.node.Do(func() error {
		found, err := teardown(l.pod.Path, args.ContainerID, args.IfName)
		if err != nil || found {
			return errors.Join(err, errors.New("teardown claims to have found the pod in a deleted namespace"))
		}
		return teardownByAllocation(a)
	}); err != nil {
		t.Fatal(err)
	}
	if st := l.nodeState(t); strings.Contains(st, "10.0.64.20") {
		t.Fatalf("DEL without the namespace left host state:\n%s", st)
	}
}
