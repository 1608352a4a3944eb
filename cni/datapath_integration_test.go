//go:build integration

package cni_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/cni/server"
	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/podipam"
	"github.com/strata-net/strata/internal/role"
)

// shapedRole rewrites podipam's allocations the way a cloud role would
// (ENIIP with a policy-routing table, or an exclusive ENI).
type shapedRole struct {
	*podipam.IPAM
	shape func(*role.Allocation)
}

func (r *shapedRole) Allocate(ctx context.Context, req role.PodRequest) (role.Allocation, error) {
	a, err := r.IPAM.Allocate(ctx, req)
	if err == nil {
		r.shape(&a)
	}
	return a, err
}

func (r *shapedRole) Allocations(ctx context.Context) ([]role.Allocation, error) {
	all, err := r.IPAM.Allocations(ctx)
	for i := range all {
		r.shape(&all[i])
	}
	return all, err
}

// serveShaped runs the CNI server in-process for a shaped role.
func serveShaped(t *testing.T, shape func(*role.Allocation)) (socket string, held func(string) string) {
	t.Helper()
	dir := t.TempDir()
	store, err := ipamstore.Open(filepath.Join(dir, "ipam.db"))
	if err != nil {
		t.Fatal(err)
	}
	ipam, err := podipam.New(podCIDR, store, podipam.Options{})
	if err != nil {
		t.Fatal(err)
	}
	socket = filepath.Join(dir, "cni.sock")
	l, err := server.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.New(&shapedRole{IPAM: ipam, shape: shape}, server.Options{}).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		<-done
		store.Close()
	})
	c := &wire.Client{Socket: socket}
	return socket, func(id string) string {
		a, err := c.Check(testCtx(t), wire.Attachment{ContainerID: id, IfName: "eth0"})
		if err != nil {
			return ""
		}
		return a.Addr.String()
	}
}

func linkIn(t *testing.T, l *lab, name string) netlink.Link {
	t.Helper()
	var link netlink.Link
	_ = l.node.Do(func() error {
		link, _ = netlink.LinkByName(name)
		return nil
	})
	return link
}

func TestIntegrationExclusiveENI(t *testing.T) {
	l := newLab(t)
	// No dummy devices on this kernel: one end of a veth pair stands in
	// for the ENI.
	if err := l.node.Do(func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eni7"}, PeerName: "eni7peer"})
	}); err != nil {
		t.Fatal(err)
	}
	eniMAC := linkIn(t, l, "eni7").Attrs().HardwareAddr.String()
	wantMAC := eniMAC
	socket, held := serveShaped(t, func(a *role.Allocation) {
		a.Datapath = role.DatapathExclusiveENI
		a.ENILink, a.ENIMAC = "eni7", wantMAC
		a.Addr = netip.PrefixFrom(a.Addr.Addr(), 24)
		a.Gateway = netip.MustParseAddr("10.244.1.254")
		a.MTU = 1400
	})
	netName := uniq("strata-it-")
	list := loadList(t, writeConf(t, netName, "1.0.0", socket, false), netName)
	cn := l.libcni()
	pod := l.pod()
	rt := rtConf(uniq("eni"), pod)
	if err := l.inNode(func() error { _, err := cn.AddNetworkList(testCtx(t), list, rt); return err }); err != nil {
		t.Fatal(err)
	}
	if linkIn(t, l, "eni7") != nil {
		t.Fatal("ENI still in the node namespace after ADD")
	}
	var podMAC string
	var mtu int
	_ = pod.Do(func() error {
		if k, err := netlink.LinkByName("eth0"); err == nil {
			podMAC, mtu = k.Attrs().HardwareAddr.String(), k.Attrs().MTU
		}
		return nil
	})
	if podMAC != eniMAC || mtu != 1400 {
		t.Fatalf("pod eth0 MAC %s MTU %d, want the ENI's %s and 1400", podMAC, mtu, eniMAC)
	}
	if err := l.inNode(func() error { return cn.CheckNetworkList(testCtx(t), list, rt) }); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	for range 2 {
		if err := l.inNode(func() error { return cn.DelNetworkList(testCtx(t), list, rt) }); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	}
	eni := linkIn(t, l, "eni7")
	if eni == nil || eni.Attrs().HardwareAddr.String() != eniMAC {
		t.Fatal("ENI not back in the node namespace under its own name after DEL")
	}
	if held(rt.ContainerID) != "" {
		t.Fatal("address still held after DEL")
	}

	// A wrong MAC is refused before the ENI moves, and the address released.
	wantMAC = "02:00:00:00:00:01"
	rt2 := rtConf(uniq("eni"), l.pod())
	err := l.inNode(func() error { _, err := cn.AddNetworkList(testCtx(t), list, rt2); return err })
	if err == nil || !strings.Contains(err.Error(), "MAC") {
		t.Fatalf("ADD with a mismatched ENI MAC: %v", err)
	}
	if linkIn(t, l, "eni7") == nil || held(rt2.ContainerID) != "" {
		t.Fatal("failed ENI ADD left state behind")
	}
}

func TestIntegrationPolicyRoutingTable(t *testing.T) {
	l := newLab(t)
	socket, held := serveShaped(t, func(a *role.Allocation) { a.Table = 1007 })
	netName := uniq("strata-it-")
	list := loadList(t, writeConf(t, netName, "1.1.0", socket, false), netName)
	cn := l.libcni()
	pod := l.pod()
	rt := rtConf(uniq("tbl"), pod)
	var ip string
	if err := l.inNode(func() error {
		r, err := cn.AddNetworkList(testCtx(t), list, rt)
		if err == nil {
			ip = firstIP(t, r).String()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	rules := func() []string {
		var out []string
		_ = l.node.Do(func() error {
			rs, err := nlretry.Dump(func() ([]netlink.Rule, error) { return netlink.RuleList(netlink.FAMILY_V4) })
			for _, r := range rs {
				if r.Table == 1007 && r.Src != nil {
					out = append(out, r.Src.IP.String())
				}
			}
			return err
		})
		return out
	}
	if got := rules(); len(got) != 1 || got[0] != ip {
		t.Fatalf("rules to table 1007: %v, want from %s", got, ip)
	}
	if err := l.inNode(func() error { return cn.DelNetworkList(testCtx(t), list, rt) }); err != nil {
		t.Fatal(err)
	}
	if got := rules(); len(got) != 0 {
		t.Fatalf("rules left after DEL: %v", got)
	}
	if held(rt.ContainerID) != "" || len(l.nodeLinks()) != 0 {
		t.Fatal("DEL left the address or a link")
	}
}
