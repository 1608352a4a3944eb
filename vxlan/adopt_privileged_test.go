//go:build privileged

package vxlan

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"

	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/harness/netlab"
)

func adoptLab(t *testing.T) (*netlab.Lab, *Datapath) {
	t.Helper()
	lab := netlab.New(t, netlab.Spec{
		Hosts: []netlab.Host{{Name: "a"}, {Name: "b"}},
		Links: []netlab.Link{{A: netlab.Port{Host: "a", Ifname: "eth0", Addr: "10.20.0.1/24"}, B: netlab.Port{Host: "b", Ifname: "eth0", Addr: "10.20.0.2/24"}}},
	})
	var dp *Datapath
	must(t, lab.NS("a").Do(func() error {
		var err error
		dp, err = New(DeviceConfig{LocalIP: netip.MustParseAddr("10.20.0.1"), OverlayIP: netip.MustParseAddr("10.244.1.0"), UnderlayLink: "eth0", CheckInterval: time.Second}, testLogger())
		return err
	}))
	t.Cleanup(func() { _ = dp.Close() })
	return lab, dp
}

func TestPrivilegedAdoptMisconfiguredDevice(t *testing.T) {
	testutil.RequireRoot(t)
	lab, dp := adoptLab(t)
	// Someone left a device with our name: wrong VNI, port, learning on,
	// full MTU, another MAC, down.
	must(t, lab.NS("a").Do(func() error {
		return netlink.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: DefaultName, MTU: 1500}, VxlanId: 7, Port: 8472, Learning: true, SrcAddr: net.ParseIP("10.20.0.1")})
	}))
	peers := []Peer{{Name: "b", UnderlayIP: netip.MustParseAddr("10.20.0.2"), OverlayIP: netip.MustParseAddr("10.244.2.0"), Prefixes: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}}}
	must(t, dp.Reconcile(context.Background(), peers))
	check := func() {
		t.Helper()
		must(t, lab.NS("a").Do(func() error {
			l, err := netlink.LinkByName(DefaultName)
			if err != nil {
				return err
			}
			vx := l.(*netlink.Vxlan)
			if vx.VxlanId != 1 || vx.Port != DefaultPort || vx.Learning || vx.MTU != 1450 || vx.Flags&net.FlagUp == 0 || vx.HardwareAddr.String() != dp.Config().MAC.String() {
				return errors.New("device not fixed: " + vx.Attrs().Name)
			}
			addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
			if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.244.1.0/32" {
				return errors.New("overlay address missing or extra addresses")
			}
			return nil
		}))
	}
	check()
	if st := dp.Status(); st.Recreations != 1 {
		t.Fatalf("recreations %d, want 1 (the wrong VNI/port/learning need a new device)", st.Recreations)
	}
	// MAC and MTU changed by hand are fixed in place, without recreation.
	must(t, lab.NS("a").Do(func() error {
		l, err := netlink.LinkByName(DefaultName)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMTU(l, 1400); err != nil {
			return err
		}
		return netlink.LinkSetHardwareAddr(l, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x42})
	}))
	must(t, dp.Resync(context.Background()))
	check()
	if st := dp.Status(); st.Recreations != 1 {
		t.Fatalf("an MTU/MAC fix recreated the device (recreations %d)", st.Recreations)
	}

	// The datapath is a Prometheus collector on the caller's registry.
	reg := prometheus.NewRegistry()
	must(t, reg.Register(dp))
	mfs, err := reg.Gather()
	must(t, err)
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"strata_vxlan_syncs_total", "strata_vxlan_changes_total", "strata_vxlan_sync_seconds", "strata_vxlan_device_creations_total"} {
		if !names[want] {
			t.Errorf("metric %s missing from %v", want, names)
		}
	}

	// Close stops a running Run and removes the device.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- dp.Run(ctx) }()
	eventually(t, "Run subscribed", func() error {
		if !dp.Status().Verified {
			must(t, dp.Resync(context.Background()))
			return errors.New("not verified yet")
		}
		return nil
	})
	must(t, dp.Close())
	select {
	case <-runDone:
	case <-time.After(30 * time.Second):
		t.Fatal("Run still running after Close")
	}
	must(t, lab.NS("a").Do(func() error {
		if _, err := netlink.LinkByName(DefaultName); err == nil {
			return errors.New("device still there after Close")
		}
		return nil
	}))
}

func TestPrivilegedRefusesForeignState(t *testing.T) {
	testutil.RequireRoot(t)
	lab, dp := adoptLab(t)
	// A link of another type with our name is not ours.
	must(t, lab.NS("a").Do(func() error {
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: DefaultName}})
	}))
	err := dp.Reconcile(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "not a VXLAN device") {
		t.Fatalf("err %v, want a refusal naming the foreign link", err)
	}
	must(t, lab.NS("a").Do(func() error {
		l, err := netlink.LinkByName(DefaultName)
		if err != nil || l.Type() != "bridge" {
			return errors.New("the foreign bridge was touched")
		}
		return netlink.LinkDel(l)
	}))
	// A foreign nexthop object holding a peer's id is reported, not taken.
	gw := netip.MustParseAddr("10.244.2.0")
	testutil.Run(t, lab.NS("a").Exec("ip", "nexthop", "add", "id", strconv.FormatUint(uint64(nhID(gw)), 10), "via", "10.20.0.2", "dev", "eth0")...)
	peers := []Peer{{Name: "b", UnderlayIP: netip.MustParseAddr("10.20.0.2"), OverlayIP: gw, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}}}
	if err := dp.Reconcile(context.Background(), peers); !errors.Is(err, errNexthopTaken) {
		t.Fatalf("err %v, want errNexthopTaken", err)
	}
}

// A refused message in the middle of a batch is reported for that message
// only; the rest are applied.
func TestPrivilegedBatchReportsEachFailure(t *testing.T) {
	testutil.RequireRoot(t)
	lab, dp := adoptLab(t)
	must(t, dp.Reconcile(context.Background(), nil))
	idx := dp.Status().Ifindex
	var reqs []*nl.NetlinkRequest
	for i := 0; i < 3*batchChunk; i++ {
		oif := idx
		if i == batchChunk+5 {
			oif = 999999 // no such device
		}
		reqs = append(reqs, nexthopReq(uint32(100000+i), netip.AddrFrom4([4]byte{10, 99, byte(i / 256), byte(i % 256)}), oif))
	}
	var failed []int
	must(t, dp.rt.batch(reqs, func(i int, err error) { failed = append(failed, i) }))
	if len(failed) != 1 || failed[0] != batchChunk+5 {
		t.Fatalf("failed %v, want exactly [%d]", failed, batchChunk+5)
	}
	nhs, err := dp.rt.dumpNexthops()
	must(t, err)
	got := 0
	for _, nh := range nhs {
		if nh.id >= 100000 && nh.id < 100000+uint32(3*batchChunk) {
			got++
		}
	}
	if got != 3*batchChunk-1 {
		t.Fatalf("%d nexthops installed, want %d", got, 3*batchChunk-1)
	}
	_ = lab
}
