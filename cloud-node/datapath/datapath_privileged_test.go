//go:build privileged

package datapath_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	cloudnode "github.com/strata-net/strata/cloud-node"
	"github.com/strata-net/strata/cloud-node/datapath"
	"github.com/strata-net/strata/cloud-node/ecsapi"
	"github.com/strata-net/strata/cloud-node/metadata"
	"github.com/strata-net/strata/cni/plugin"
	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/ecsemu"
	"github.com/strata-net/strata/tests/harness/netlab"
)

const ak, sk = "LTAI-lab", "lab-secret"

var (
	serviceCIDR = netip.MustParsePrefix("10.96.0.0/12")
	edgePods    = netip.MustParsePrefix("10.244.0.0/16")
)

type cloudLab struct {
	lab  *netlab.Lab
	emu  *ecsemu.Emulator
	url  string
	mgrs map[string]*cloudnode.Manager
}

func newCloudLab(t *testing.T) *cloudLab {
	t.Helper()
	lab := netlab.New(t, netlab.Spec{
		Hosts: []netlab.Host{{Name: "node1", Forward: true}, {Name: "node2", Forward: true}},
		Switches: []netlab.Switch{{Name: "vpc", Ports: []netlab.Port{
			{Host: "node1", Ifname: "eth0", Addr: "10.0.1.11/24", MAC: "00:16:3e:00:01:11"},
			{Host: "node2", Ifname: "eth0", Addr: "10.0.1.12/24", MAC: "00:16:3e:00:01:12"},
		}}},
	})
	att := &ecsemu.VethAttacher{Bridge: lab.NS("sw-vpc"), Nodes: map[string]nsutil.NS{"i-node1": lab.NS("node1"), "i-node2": lab.NS("node2")}}
	emu, err := ecsemu.New(ecsemu.Config{
		AccessKeyID: ak, AccessKeySecret: sk, RegionID: "cn-hangzhou", VPCCIDR: "10.0.0.0/16",
		InstanceTypes: []ecsemu.InstanceType{{ID: "ecs.g7.xlarge", ENIQuantity: 5, IPsPerENI: 15}},
		VSwitches:     []ecsemu.VSwitch{{ID: "vsw-node", CIDR: "10.0.1.0/24"}, {ID: "vsw-pod", CIDR: "10.0.64.0/20"}},
		Instances: []ecsemu.Instance{
			{ID: "i-node1", Type: "ecs.g7.xlarge", VSwitchID: "vsw-node", PrimaryIP: "10.0.1.11", MAC: "00:16:3e:00:01:11"},
			{ID: "i-node2", Type: "ecs.g7.xlarge", VSwitchID: "vsw-node", PrimaryIP: "10.0.1.12", MAC: "00:16:3e:00:01:12"},
		},
		AttachDelay: 50 * time.Millisecond, Attacher: att,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu.Handler())
	cl := &cloudLab{lab: lab, emu: emu, url: srv.URL, mgrs: map[string]*cloudnode.Manager{}}
	t.Cleanup(func() {
		for _, m := range cl.mgrs {
			m.Stop(context.Background())
		}
		emu.Wait()
		srv.Close()
	})
	return cl
}

// start runs the cloud role of one node, as the agent would: identity from
// the metadata service, the real SDK client, the kernel datapath in the
// node's namespace.
func (cl *cloudLab) start(t *testing.T, host, instance string) *cloudnode.Manager {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	md := metadata.New(cl.url + "/i/" + instance)
	in, err := md.Instance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	api, err := ecsapi.New(ecsapi.Config{RegionID: in.RegionID, Endpoint: cl.url,
		Credentials: ecsapi.Credentials{AccessKeyID: ak, AccessKeySecret: sk}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := ipamstore.Open(filepath.Join(t.TempDir(), "ipam.db"))
	if err != nil {
		t.Fatal(err)
	}
	ns := cl.lab.NS(host)
	var ipvlan bool
	if err := ns.Do(func() error { ipvlan = datapath.IPVlanSupported(); return nil }); err != nil {
		t.Fatal(err)
	}
	dp := &datapath.Node{NS: &ns, HostBound: []netip.Prefix{serviceCIDR, edgePods}}
	m, err := cloudnode.NewManager(cloudnode.Config{ClusterID: "lab", InstanceID: in.ID, InstanceType: in.Type,
		PodVSwitchIDs: []string{"vsw-pod"}, WarmPool: cloudnode.WarmPool{MinIdle: 5, MaxIdle: 20, WarmUp: 10, IdleReclaimAfter: time.Hour},
		PollInterval: 20 * time.Millisecond, IPVlan: ipvlan,
		ReadyMAC: func(ctx context.Context, mac string) (bool, error) {
			macs, err := md.MACs(ctx)
			for _, m := range macs {
				if m == mac {
					return true, nil
				}
			}
			return false, err
		},
		ENIGateway: md.Gateway}, api, st, dp)
	if err != nil {
		t.Fatal(err)
	}
	cl.mgrs[host] = m
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return m
}

// pod makes a pod namespace wired to node by the CNI plugin's own code
// (plugin.Wire: veth, /32, link-local gateway, host route, proxy ARP, the
// rule to the ENI's table). It returns the namespace and the host veth.
func pod(t *testing.T, node nsutil.NS, name string, a role.Allocation) (nsutil.NS, string) {
	t.Helper()
	p, err := nsutil.Create(nsutil.OwnedName(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(p.Name) })
	var hostVeth string
	if err := node.Do(func() error {
		res, err := plugin.Wire(p.Path, a.ContainerID, a.IfName, wire.FromRole(a))
		if err != nil {
			return err
		}
		hostVeth = res.Interfaces[0].Name
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = node.Do(func() error { return plugin.Unwire(p.Path, a.ContainerID, a.IfName, wire.FromRole(a)) })
	})
	return p, hostVeth
}

func txPackets(t *testing.T, ns nsutil.NS, link string) uint64 {
	t.Helper()
	var n uint64
	if err := ns.Do(func() error {
		l, err := netlink.LinkByName(link)
		if err != nil {
			return err
		}
		n = l.Attrs().Statistics.TxPackets
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPrivilegedCloudNodeLab(t *testing.T) {
	testutil.RequireRoot(t)
	ping := testutil.RequireCommand(t, "ping", "apt-get install iputils-ping")
	cl := newCloudLab(t)
	m1 := cl.start(t, "node1", "i-node1")
	m2 := cl.start(t, "node2", "i-node2")
	node1, node2 := cl.lab.NS("node1"), cl.lab.NS("node2")

	// ENIs attached are links in the node namespace, with the MAC the API reported
	for _, x := range cl.emu.ENIs() {
		if x.Type != "Secondary" {
			continue
		}
		if x.Status != ecsemu.StatusInUse {
			t.Fatalf("ENI %s is %s", x.ID, x.Status)
		}
		ns := node1
		if x.InstanceID == "i-node2" {
			ns = node2
		}
		found := false
		if err := ns.Do(func() error {
			links, err := netlink.LinkList()
			for _, l := range links {
				if l.Attrs().HardwareAddr.String() == x.MAC && l.Attrs().OperState != netlink.OperDown {
					found = true
				}
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if !found {
			t.Fatalf("ENI %s (MAC %s) attached to %s has no link there", x.ID, x.MAC, x.InstanceID)
		}
	}

	// 40 pods' IPs allocated and released, pool refilled
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	seen := map[netip.Prefix]bool{}
	for i := range 40 {
		a, err := m1.Allocate(ctx, role.PodRequest{ContainerID: fmt.Sprintf("bulk%d", i), IfName: "eth0"})
		if err != nil {
			t.Fatal(err)
		}
		if seen[a.Addr] || a.ENILink == "" || a.Table == 0 {
			t.Fatalf("bad or duplicate allocation %+v", a)
		}
		seen[a.Addr] = true
		if a.Datapath != role.DatapathVethRouted {
			t.Fatalf("this kernel has no ipvlan: want the veth fallback, got %s", a.Datapath)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for m1.Idle() < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("pool not refilled to MinIdle: %d idle", m1.Idle())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range 40 {
		if err := m1.Release(ctx, fmt.Sprintf("bulk%d", i), "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := m1.Allocations(ctx); len(n) != 0 {
		t.Fatalf("%d allocations left after releasing all", len(n))
	}

	// a pod on node1 reaches a pod on node2 through the emulated vSwitch
	a1, err := m1.Allocate(ctx, role.PodRequest{ContainerID: "pod1", IfName: "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	a2, err := m2.Allocate(ctx, role.PodRequest{ContainerID: "pod2", IfName: "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	p1, vp1 := pod(t, node1, "p1", a1)
	pod(t, node2, "p2", a2)

	// egress policy: from pod1 lookup its ENI's table, default via the vSwitch gateway on that ENI
	rules := testutil.Run(t, node1.Exec("ip", "-4", "rule", "show")...)
	wantRule := fmt.Sprintf("from %s lookup %d", a1.Addr.Addr(), a1.Table)
	if !strings.Contains(rules, wantRule) {
		t.Fatalf("ip rule has no %q:\n%s", wantRule, rules)
	}
	for _, hb := range []netip.Prefix{serviceCIDR, edgePods} {
		if !strings.Contains(rules, fmt.Sprintf("1000:\tfrom all to %s lookup main", hb)) {
			t.Fatalf("ip rule has no host-bound rule for %s before the pod rules:\n%s", hb, rules)
		}
	}
	tbl := testutil.Run(t, node1.Exec("ip", "route", "show", "table", fmt.Sprint(a1.Table))...)
	// the vSwitch gateway from metadata: ECS's .253, not the first host
	if !strings.Contains(tbl, "default via 10.0.79.253 dev "+a1.ENILink) {
		t.Fatalf("table %d:\n%s", a1.Table, tbl)
	}
	// overlay/BGP-learned destinations go via the host's main table, not the ENI
	testutil.Run(t, node1.Exec("ip", "route", "add", "10.244.7.0/24", "via", "10.0.1.12", "dev", "eth0")...)
	got := testutil.Run(t, node1.Exec("ip", "route", "get", "10.244.7.9", "from", a1.Addr.Addr().String(), "iif", vp1)...)
	if !strings.Contains(got, "dev eth0") {
		t.Fatalf("edge pod destination does not go via the host: %s", got)
	}
	got = testutil.Run(t, node1.Exec("ip", "route", "get", "8.8.8.8", "from", a1.Addr.Addr().String(), "iif", vp1)...)
	if !strings.Contains(got, "dev "+a1.ENILink) {
		t.Fatalf("internet egress does not leave by the pod's ENI %s: %s", a1.ENILink, got)
	}

	before := txPackets(t, node1, a1.ENILink)
	// the ping runs inside pod1's namespace only
	cmd := exec.Command("ip", append([]string{"netns", "exec", p1.Name, ping, "-c", "3", "-i", "0.2", "-W", "5"}, a2.Addr.Addr().String())...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pod1 %s -> pod2 %s: %v\n%s\nnode1 rules:\n%s", a1.Addr, a2.Addr, err, out, rules)
	}
	after := txPackets(t, node1, a1.ENILink)
	if after-before < 3 {
		t.Fatalf("ENI %s sent %d packets during 3 pings: egress did not use the pod's ENI", a1.ENILink, after-before)
	}

	// a second pod on another ENI of node1 leaves by its own ENI, not pod1's
	var a3 role.Allocation
	var spare []string
	for i := 0; a3.ENILink == "" || a3.ENILink == a1.ENILink; i++ {
		if i > 60 {
			t.Fatalf("node1 never handed out an address on an ENI other than %s", a1.ENILink)
		}
		id := fmt.Sprintf("probe%d", i)
		a, err := m1.Allocate(ctx, role.PodRequest{ContainerID: id, IfName: "eth0"})
		if err != nil {
			t.Fatal(err)
		}
		a3 = a
		spare = append(spare, id)
	}
	for _, id := range spare[:len(spare)-1] {
		_ = m1.Release(ctx, id, "eth0")
	}
	p3, vp3 := pod(t, node1, "p3", a3)
	b1, b3 := txPackets(t, node1, a1.ENILink), txPackets(t, node1, a3.ENILink)
	cmd = exec.Command("ip", append([]string{"netns", "exec", p3.Name, ping, "-c", "5", "-i", "0.2", "-W", "5"}, a2.Addr.Addr().String())...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pod3 %s (ENI %s) -> pod2 %s: %v\n%s", a3.Addr, a3.ENILink, a2.Addr, err, out)
	}
	// The kernel's decision is the proof; the counters confirm the pings
	// left there. (pod1's ENI may still send a few ARP replies meanwhile:
	// both ENIs sit on the same vSwitch, so only "more on pod3's" holds.)
	got = testutil.Run(t, node1.Exec("ip", "route", "get", a2.Addr.Addr().String(), "from", a3.Addr.Addr().String(), "iif", vp3)...)
	if !strings.Contains(got, "dev "+a3.ENILink) {
		t.Fatalf("pod3's egress is not routed by its ENI %s: %s", a3.ENILink, got)
	}
	d1, d3 := txPackets(t, node1, a1.ENILink)-b1, txPackets(t, node1, a3.ENILink)-b3
	if d3 < 5 || d1 >= d3 {
		t.Fatalf("pod3's 5 pings: its ENI %s sent %d packets, pod1's ENI %s sent %d: egress not pinned to the owning ENI", a3.ENILink, d3, a1.ENILink, d1)
	}

	// the plugin's DEL removes the pod's rule and route
	if err := node1.Do(func() error { return plugin.Unwire(p1.Path, a1.ContainerID, a1.IfName, wire.FromRole(a1)) }); err != nil {
		t.Fatal(err)
	}
	if rules := testutil.Run(t, node1.Exec("ip", "-4", "rule", "show")...); strings.Contains(rules, a1.Addr.Addr().String()) {
		t.Fatalf("rules left after teardown:\n%s", rules)
	}
}

func TestPrivilegedIPVlanProbeAndFallback(t *testing.T) {
	testutil.RequireRoot(t)
	ns, err := nsutil.Create(nsutil.OwnedName("ipvl"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(ns.Name) })
	var supported bool
	var left int
	if err := ns.Do(func() error {
		supported = datapath.IPVlanSupported()
		links, err := netlink.LinkList()
		left = len(links)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if left != 1 { // only lo
		t.Fatalf("the ipvlan probe left %d links", left)
	}
	// what `ip link` says must agree with the probe
	err = exec.Command("ip", "netns", "exec", ns.Name, "ip", "link", "add", "ipv0", "link", "lo", "type", "ipvlan").Run()
	if supported != (err == nil) {
		t.Fatalf("probe says ipvlan=%v, ip link add says %v", supported, err)
	}
	t.Logf("kernel ipvlan support: %v (the veth + policy routing fallback is used when false)", supported)
}

// TestPrivilegedExclusiveENI moves an ENI the emulator attached into a pod
// with strata-cni's own code (plugin.Wire, the one implementation of the
// move), checks the pod answers on the ENI's primary IP across the vSwitch,
// and that DEL (plugin.Unwire) puts the ENI back on the node under its name.
func TestPrivilegedExclusiveENI(t *testing.T) {
	testutil.RequireRoot(t)
	cl := newCloudLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	api, err := ecsapi.New(ecsapi.Config{RegionID: "cn-hangzhou", Endpoint: cl.url, Credentials: ecsapi.Credentials{AccessKeyID: ak, AccessKeySecret: sk}})
	if err != nil {
		t.Fatal(err)
	}
	eni, err := api.CreateENI(ctx, "vsw-pod", "", 0, nil, ecsapi.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	if err := api.AttachENI(ctx, eni.ID, "i-node1"); err != nil {
		t.Fatal(err)
	}
	cl.emu.Wait()
	node1, node2 := cl.lab.NS("node1"), cl.lab.NS("node2")
	var link string
	if err := node1.Do(func() error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if l.Attrs().HardwareAddr.String() == eni.MAC {
				link = l.Attrs().Name
			}
		}
		return err
	}); err != nil || link == "" {
		t.Fatalf("attached ENI %s (%s) has no link on node1 (%v)", eni.ID, eni.MAC, err)
	}
	gw, err := metadata.New(cl.url+"/i/i-node1").Gateway(ctx, eni.MAC)
	if err != nil {
		t.Fatal(err)
	}
	p, err := nsutil.Create(nsutil.OwnedName("excl"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(p.Name) })
	a := wire.Allocation{ContainerID: "excl1", IfName: "eth0", Addr: netip.PrefixFrom(eni.PrimaryIP, 20), Gateway: gw,
		MTU: 1500, Datapath: role.DatapathExclusiveENI, ENILink: link, ENIMAC: eni.MAC}
	if err := node1.Do(func() error { _, err := plugin.Wire(p.Path, a.ContainerID, a.IfName, a); return err }); err != nil {
		t.Fatal(err)
	}
	out := testutil.Run(t, p.Exec("ip", "-br", "addr", "show", "eth0")...)
	if !strings.Contains(out, a.Addr.String()) {
		t.Fatalf("exclusive ENI in the pod: %s", out)
	}
	if err := node1.Do(func() error {
		if l, _ := netlink.LinkByName(link); l != nil {
			return fmt.Errorf("ENI link %s still on the node", link)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// node2 plays the vSwitch gateway: the pod's default route must leave
	// by the moved ENI, onto the vSwitch, for the echo to come back.
	testutil.Run(t, node2.Exec("ip", "addr", "add", gw.String()+"/20", "dev", "eth0")...)
	testutil.Run(t, node2.Exec("ping", "-c", "1", "-W", "2", "-I", gw.String(), eni.PrimaryIP.String())...)
	testutil.Run(t, node2.Exec("ping", "-c", "1", "-W", "2", "-I", "10.0.1.12", eni.PrimaryIP.String())...)

	if err := node1.Do(func() error { return plugin.Unwire(p.Path, a.ContainerID, a.IfName, a) }); err != nil {
		t.Fatal(err)
	}
	if err := node1.Do(func() error {
		l, err := netlink.LinkByName(link)
		if err != nil {
			return fmt.Errorf("ENI not back on the node as %s after DEL: %w", link, err)
		}
		if l.Attrs().HardwareAddr.String() != eni.MAC {
			return fmt.Errorf("%s on the node has MAC %s, want the ENI's %s", link, l.Attrs().HardwareAddr, eni.MAC)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
