//go:build privileged

package bpf

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/harness/netlab"
)

const (
	tcActOK       = 0
	tcActRedirect = 7
)

// skbCtx is the head of struct __sk_buff up to ifindex: BPF_PROG_TEST_RUN
// takes the ingress device from it (the rest must be zero).
type skbCtx struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority, IngressIfindex, Ifindex uint32
}

var (
	podAMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0xa, 1}
	podBMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0xb, 1}
	hostAMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xa, 2}
	hostBMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xb, 2}
	upMAC    = net.HardwareAddr{0x02, 0, 0, 0, 0xc, 1}
	podA4    = netip.MustParseAddr("10.244.1.10")
	podB4    = netip.MustParseAddr("10.244.1.11")
	podA6    = netip.MustParseAddr("fd00:244:1::10")
	podB6    = netip.MustParseAddr("fd00:244:1::11")
	remote4  = netip.MustParseAddr("10.244.2.10")
	remote6  = netip.MustParseAddr("fd00:244:2::10")
	nowhere4 = netip.MustParseAddr("203.0.113.7")
)

// runLab is one namespace with two pod veths (their pod ends left in the same
// namespace: test runs never deliver) and an uplink with routes to a remote
// pod CIDR, enough for the programs' map and FIB lookups.
type runLab struct {
	ns         nsutil.NS
	fp         *Fastpath
	ifA, ifB   int
	uplinkIdx  int
	fromPod    *ebpf.Program
	fromNetdev *ebpf.Program
}

func newRunLab(t *testing.T) *runLab {
	t.Helper()
	testutil.RequireRoot(t)
	lab := netlab.New(t, netlab.Spec{
		Hosts: []netlab.Host{
			{Name: "node", Forward: true, Routes: []netlab.Route{
				{Dst: "10.244.2.0/24", Via: "192.168.0.2"},
			}},
			{Name: "peer"},
		},
		Links: []netlab.Link{
			{A: netlab.Port{Host: "node", Ifname: "hA", MAC: hostAMAC.String()}, B: netlab.Port{Host: "node", Ifname: "pA", MAC: podAMAC.String()}},
			{A: netlab.Port{Host: "node", Ifname: "hB", MAC: hostBMAC.String()}, B: netlab.Port{Host: "node", Ifname: "pB", MAC: podBMAC.String()}},
			{A: netlab.Port{Host: "node", Ifname: "up0", Addr: "192.168.0.1/24", MAC: upMAC.String()}, B: netlab.Port{Host: "peer", Ifname: "up0", Addr: "192.168.0.2/24"}},
		},
	})
	ns := lab.NS("node")
	if err := ns.Do(func() error {
		if err := addAddr("up0", "fd00:192::1/64"); err != nil {
			return err
		}
		return netlab.AddRoute(netlab.Route{Dst: "fd00:244:2::/64", Via: "fd00:192::2"})
	}); err != nil {
		t.Fatal(err)
	}
	if err := lab.NS("peer").Do(func() error { return addAddr("up0", "fd00:192::2/64") }); err != nil {
		t.Fatal(err)
	}
	fp, err := Load(Options{NS: &ns})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = fp.Close() })
	// 203.0.113.0/24 counts as pods here so "no route" is reachable.
	if err := fp.SetPodPrefixes([]netip.Prefix{
		netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/32"), netip.MustParsePrefix("203.0.113.0/24"),
	}); err != nil {
		t.Fatal(err)
	}
	r := &runLab{ns: ns, fp: fp, fromPod: fp.objs.FromPod, fromNetdev: fp.objs.FromNetdev}
	if err := ns.Do(func() error {
		r.ifA = ifindex(t, "hA")
		r.ifB = ifindex(t, "hB")
		r.uplinkIdx = ifindex(t, "up0")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []Pod{
		{HostIfname: "hA", PodMAC: podAMAC, IPs: []netip.Addr{podA4, podA6}},
		{HostIfname: "hB", PodMAC: podBMAC, IPs: []netip.Addr{podB4, podB6}},
	} {
		if err := fp.AddPod(p); err != nil {
			t.Fatalf("add pod %s: %v", p.HostIfname, err)
		}
	}
	return r
}

func ifindex(t *testing.T, name string) int {
	t.Helper()
	i, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatalf("interface %s: %v", name, err)
	}
	return i.Index
}

// run executes prog on pkt as if it arrived on ifindex, inside the node
// namespace (FIB lookups use the caller's namespace).
func (r *runLab) run(t *testing.T, prog *ebpf.Program, ifindex int, pkt []byte) (uint32, []byte) {
	t.Helper()
	var ret uint32
	out := make([]byte, len(pkt)+256)
	if err := r.ns.Do(func() error {
		opts := &ebpf.RunOptions{Data: pkt, DataOut: out, Context: skbCtx{Ifindex: uint32(ifindex)}}
		var err error
		ret, err = prog.Run(opts)
		out = opts.DataOut
		return err
	}); err != nil {
		t.Fatalf("test run: %v", err)
	}
	return ret, out
}

func (r *runLab) path(t *testing.T, name string) uint64 {
	t.Helper()
	c, err := r.fp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c.Paths[name].Packets
}

func TestPrivilegedProgramDecisions(t *testing.T) {
	r := newRunLab(t)
	cases := []struct {
		name     string
		prog     *ebpf.Program
		ifindex  func() int
		pkt      []byte
		wantRet  uint32
		wantPath string
	}{
		{"ipv4 local pod", r.fromPod, func() int { return r.ifA },
			frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA4, dst: podB4}.bytes(), tcActRedirect, "local"},
		{"ipv6 local pod", r.fromPod, func() int { return r.ifA },
			frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA6, dst: podB6}.bytes(), tcActRedirect, "local"},
		{"ipv4 remote pod via FIB", r.fromPod, func() int { return r.ifA },
			frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA4, dst: remote4}.bytes(), tcActRedirect, "remote"},
		{"ipv6 remote pod via FIB", r.fromPod, func() int { return r.ifA },
			frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA6, dst: remote6}.bytes(), tcActRedirect, "remote"},
		{"ipv4 no route goes to stack", r.fromPod, func() int { return r.ifA },
			frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA4, dst: nowhere4}.bytes(), tcActOK, "stack_no_route"},
		{"ipv4 above the uplink MTU goes to stack (ICMP from the kernel)", r.fromPod, func() int { return r.ifA },
			frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA4, dst: remote4, payload: 1600}.bytes(), tcActOK, "stack_no_route"},
		{"destination outside the pod prefixes goes to stack", r.fromPod, func() int { return r.ifA },
			frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA4, dst: netip.MustParseAddr("10.96.0.10")}.bytes(), tcActOK, "stack_not_pod"},
		{"ipv6 with a hop-by-hop header goes to stack", r.fromPod, func() int { return r.ifA },
			hopByHop(frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA6, dst: podB6}.bytes()), tcActOK, "stack_ipv6_ext"},
		{"arp goes to stack", r.fromPod, func() int { return r.ifA },
			arpFrame(podAMAC, podA4, netip.MustParseAddr("169.254.1.1")), tcActOK, "stack_not_ip"},
		{"ipv4 fragment goes to stack", r.fromPod, func() int { return r.ifA },
			frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA4, dst: podB4, fragment: true}.bytes(), tcActOK, "stack_fragment"},
		{"ipv6 fragment goes to stack", r.fromPod, func() int { return r.ifA },
			frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA6, dst: podB6, fragment: true}.bytes(), tcActOK, "stack_fragment"},
		{"ttl 1 goes to stack", r.fromPod, func() int { return r.ifA },
			frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA4, dst: podB4, ttl: 1}.bytes(), tcActOK, "stack_ttl"},
		{"spoofed source goes to stack", r.fromPod, func() int { return r.ifB },
			frame{dstMAC: hostBMAC, srcMAC: podBMAC, src: podA4, dst: podB4}.bytes(), tcActOK, "stack_unknown_source"},
		{"ipv6 link-local goes to stack", r.fromPod, func() int { return r.ifA },
			frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA6, dst: netip.MustParseAddr("fe80::1")}.bytes(), tcActOK, "stack_link_local"},
		{"ipv4 header length below 20 goes to stack", r.fromPod, func() int { return r.ifA },
			badIHL(frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA4, dst: podB4}.bytes()), tcActOK, "stack_malformed"},
		{"uplink to local pod", r.fromNetdev, func() int { return r.uplinkIdx },
			frame{dstMAC: upMAC, srcMAC: podAMAC, src: remote4, dst: podB4}.bytes(), tcActRedirect, "local"},
		{"uplink transit goes to stack", r.fromNetdev, func() int { return r.uplinkIdx },
			frame{dstMAC: upMAC, srcMAC: podAMAC, src: remote4, dst: nowhere4}.bytes(), tcActOK, "stack_not_local"},
		{"uplink frame for another MAC goes to stack", r.fromNetdev, func() int { return r.uplinkIdx },
			frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: remote4, dst: podB4}.bytes(), tcActOK, "stack_other_host"},
		{"pod frame for another MAC goes to stack", r.fromPod, func() int { return r.ifA },
			frame{dstMAC: podBMAC, srcMAC: podAMAC, src: podA4, dst: podB4}.bytes(), tcActOK, "stack_other_host"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := r.path(t, tc.wantPath)
			ret, _ := r.run(t, tc.prog, tc.ifindex(), tc.pkt)
			if ret != tc.wantRet {
				t.Fatalf("verdict %d, want %d", ret, tc.wantRet)
			}
			if got := r.path(t, tc.wantPath); got != before+1 {
				t.Fatalf("path %s counted %d packets, want %d", tc.wantPath, got-before, 1)
			}
		})
	}
}

// hopByHop relabels the IPv6 next header as hop-by-hop options (0): the
// program cannot find ports behind it and must leave the packet alone.
func hopByHop(b []byte) []byte {
	b[14+6] = 0
	return b
}

// badIHL sets an IPv4 header length of 16 bytes. (A frame cut short inside
// the IP header is refused by BPF_PROG_TEST_RUN itself.)
func badIHL(b []byte) []byte {
	b[14] = 0x44
	return b
}

func TestPrivilegedProgramRewritesLocalFrame(t *testing.T) {
	r := newRunLab(t)
	in := frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA4, dst: podB4, ttl: 64, payload: 32}.bytes()
	ret, out := r.run(t, r.fromPod, r.ifA, in)
	if ret != tcActRedirect {
		t.Fatalf("verdict %d, want redirect", ret)
	}
	if !bytes.Equal(out[0:6], podBMAC) || !bytes.Equal(out[6:12], hostBMAC) {
		t.Fatalf("MACs dst %x src %x, want dst %s src %s", out[0:6], out[6:12], podBMAC, hostBMAC)
	}
	ip := out[14:34]
	if ip[8] != 63 {
		t.Fatalf("TTL %d, want 63 (decremented as a router would)", ip[8])
	}
	if got, want := binary.BigEndian.Uint16(ip[10:]), ipChecksum(ip); got != want {
		t.Fatalf("IPv4 checksum %#x after rewrite, want %#x", got, want)
	}
	c, err := r.fp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if pc := c.Pods[podA4]; pc.Local.Packets != 1 || pc.Local.Bytes != uint64(len(in)) {
		t.Fatalf("pod %s local counter %+v, want 1 packet of %d bytes", podA4, pc.Local, len(in))
	}

	// IPv6: hop limit decremented, MACs rewritten.
	in6 := frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA6, dst: podB6, ttl: 64}.bytes()
	ret, out = r.run(t, r.fromPod, r.ifA, in6)
	if ret != tcActRedirect || out[14+7] != 63 || !bytes.Equal(out[0:6], podBMAC) {
		t.Fatalf("ipv6: verdict %d hop limit %d dst MAC %x", ret, out[14+7], out[0:6])
	}
}

func TestPrivilegedProgramSwitchOff(t *testing.T) {
	r := newRunLab(t)
	if err := r.fp.SetEnabled(false); err != nil {
		t.Fatal(err)
	}
	in := frame{dstMAC: hostAMAC, srcMAC: podAMAC, src: podA4, dst: podB4}.bytes()
	ret, out := r.run(t, r.fromPod, r.ifA, in)
	if ret != tcActOK || !bytes.Equal(out, in) {
		t.Fatalf("switched off: verdict %d (want %d) and frame changed=%v", ret, tcActOK, !bytes.Equal(out, in))
	}
	if r.path(t, "disabled") != 1 {
		t.Fatal("disabled path not counted")
	}
	if err := r.fp.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	if ret, _ := r.run(t, r.fromPod, r.ifA, in); ret != tcActRedirect {
		t.Fatalf("switched back on: verdict %d, want redirect", ret)
	}
}

func TestPrivilegedPodPrefixes(t *testing.T) {
	r := newRunLab(t)
	want := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/32")}
	if err := r.fp.SetPodPrefixes(append(want, netip.MustParsePrefix("10.244.7.7/16"))); err != nil {
		t.Fatal(err)
	}
	got, err := r.fp.PodPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("PodPrefixes = %v, want %v (203.0.113.0/24 removed, 10.244.7.7/16 masked)", got, want)
	}
	if err := r.fp.SetPodPrefixes([]netip.Prefix{{}}); err == nil {
		t.Fatal("invalid prefix accepted")
	}
}

func TestPrivilegedKernelSupportsFastPath(t *testing.T) {
	testutil.RequireRoot(t)
	// NOTES.md: this machine's kernel (6.18) has TCX, redirect_peer/neigh and
	// fib_lookup; CI runs on the same image.
	if err := Supported(); err != nil {
		t.Fatalf("Supported() = %v on a kernel that has every needed helper", err)
	}
	d, err := Decide(SettingAuto, Supported())
	if err != nil || !d.Active {
		t.Fatalf("Decide(auto) = %+v, %v", d, err)
	}
}
