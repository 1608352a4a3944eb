//go:build privileged

package bpf

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/harness/netlab"
)

// The lab: three nodes on one L2 underlay (192.168.0.0/24).
//
//	node1: pods p1, p2 (10.244.1.0/24, fd00:244:1::/64); the fast path runs here
//	node2: pod p3 (10.244.2.0/24), reached natively via 192.168.0.2
//	node3: pod p4 (10.244.3.0/24), reached over a hand-built VXLAN (VNI 42)
//
// Pods use a link-local gateway (169.254.1.1, fe80::1) answered by a
// permanent neighbour entry pointing at the host-side veth, as routed veth
// CNIs do; the node routes each pod's /32 and /128 to its veth.
type dpPod struct {
	name, node, hostIf string
	ip4, ip6           netip.Addr
	mac                net.HardwareAddr
}

var dpPods = []dpPod{
	{"p1", "node1", "vp1", netip.MustParseAddr("10.244.1.10"), netip.MustParseAddr("fd00:244:1::10"), net.HardwareAddr{2, 0, 0, 1, 0, 0x10}},
	{"p2", "node1", "vp2", netip.MustParseAddr("10.244.1.11"), netip.MustParseAddr("fd00:244:1::11"), net.HardwareAddr{2, 0, 0, 1, 0, 0x11}},
	{"p3", "node2", "vp3", netip.MustParseAddr("10.244.2.10"), netip.MustParseAddr("fd00:244:2::10"), net.HardwareAddr{2, 0, 0, 2, 0, 0x10}},
	{"p4", "node3", "vp4", netip.MustParseAddr("10.244.3.10"), netip.MustParseAddr("fd00:244:3::10"), net.HardwareAddr{2, 0, 0, 3, 0, 0x10}},
}

func hostMAC(p dpPod) net.HardwareAddr {
	m := append(net.HardwareAddr(nil), p.mac...)
	m[0] = 0x0a
	return m
}

type dpLab struct {
	lab *netlab.Lab
	fp  *Fastpath
}

func (l *dpLab) ns(name string) nsutil.NS { return l.lab.NS(name) }

func newDPLab(t *testing.T, mode AttachMode) *dpLab {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "ping", "apt-get install iputils-ping")
	spec := netlab.Spec{
		Hosts: []netlab.Host{
			{Name: "node1", Forward: true, Routes: []netlab.Route{{Dst: "10.244.2.0/24", Via: "192.168.0.2"}}},
			{Name: "node2", Forward: true, Routes: []netlab.Route{{Dst: "10.244.1.0/24", Via: "192.168.0.1"}}},
			{Name: "node3", Forward: true},
		},
		Switches: []netlab.Switch{{Name: "ul", Ports: []netlab.Port{
			{Host: "node1", Ifname: "eth0", Addr: "192.168.0.1/24"},
			{Host: "node2", Ifname: "eth0", Addr: "192.168.0.2/24"},
			{Host: "node3", Ifname: "eth0", Addr: "192.168.0.3/24"},
		}}},
	}
	for _, p := range dpPods {
		spec.Hosts = append(spec.Hosts, netlab.Host{Name: p.name})
		spec.Links = append(spec.Links, netlab.Link{
			A: netlab.Port{Host: p.node, Ifname: p.hostIf, MAC: hostMAC(p).String()},
			B: netlab.Port{Host: p.name, Ifname: "eth0", MAC: p.mac.String(), Addr: p.ip4.String() + "/32"},
		})
	}
	l := &dpLab{lab: netlab.New(t, spec)}
	for _, p := range dpPods {
		l.wirePod(t, p)
	}
	// IPv6 between node1 and node2 natively, too.
	l.run(t, "node1", "ip", "-6", "addr", "add", "fd00:192::1/64", "dev", "eth0", "nodad")
	l.run(t, "node2", "ip", "-6", "addr", "add", "fd00:192::2/64", "dev", "eth0", "nodad")
	l.run(t, "node1", "ip", "-6", "route", "add", "fd00:244:2::/64", "via", "fd00:192::2")
	l.run(t, "node2", "ip", "-6", "route", "add", "fd00:244:1::/64", "via", "fd00:192::1")
	// VXLAN node1 <-> node3, flannel style: onlink route to the peer's
	// overlay address, a permanent neighbour and an FDB entry.
	vx := map[string]struct{ ip, mac, under string }{
		"node1": {"10.244.1.0", "02:00:00:00:01:42", "192.168.0.1"},
		"node3": {"10.244.3.0", "02:00:00:00:03:42", "192.168.0.3"},
	}
	for self, peer := range map[string]string{"node1": "node3", "node3": "node1"} {
		me, them := vx[self], vx[peer]
		l.run(t, self, "ip", "link", "add", "vx0", "address", me.mac, "type", "vxlan", "id", "42", "local", me.under, "dev", "eth0", "dstport", "4789", "nolearning")
		l.run(t, self, "ip", "addr", "add", me.ip+"/32", "dev", "vx0")
		l.run(t, self, "ip", "link", "set", "vx0", "up")
		l.run(t, self, "ip", "neigh", "replace", them.ip, "lladdr", them.mac, "dev", "vx0", "nud", "permanent")
		l.run(t, self, "bridge", "fdb", "append", them.mac, "dev", "vx0", "dst", them.under)
		l.run(t, self, "ip", "route", "add", them.ip+"/24", "via", them.ip, "dev", "vx0", "onlink")
	}

	n1 := l.ns("node1")
	fp, err := Load(Options{NS: &n1, Attach: mode})
	if err != nil {
		t.Fatalf("load fast path: %v", err)
	}
	t.Cleanup(func() { _ = fp.Close() })
	l.fp = fp
	if err := fp.SetPodPrefixes([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/32")}); err != nil {
		t.Fatal(err)
	}
	for _, p := range dpPods[:2] {
		if err := fp.AddPod(Pod{HostIfname: p.hostIf, PodMAC: p.mac, IPs: []netip.Addr{p.ip4, p.ip6}}); err != nil {
			t.Fatalf("add pod %s: %v", p.name, err)
		}
	}
	for _, up := range []string{"eth0", "vx0"} {
		if err := fp.AttachUplink(up); err != nil {
			t.Fatalf("attach uplink %s: %v", up, err)
		}
	}
	if mode != AttachAuto && fp.Mode() != mode {
		t.Fatalf("attach mode %s, want %s", fp.Mode(), mode)
	}
	return l
}

func (l *dpLab) wirePod(t *testing.T, p dpPod) {
	t.Helper()
	hm := hostMAC(p).String()
	l.run(t, p.name, "ip", "-6", "addr", "add", p.ip6.String()+"/128", "dev", "eth0", "nodad")
	l.run(t, p.name, "ip", "neigh", "replace", "169.254.1.1", "lladdr", hm, "dev", "eth0", "nud", "permanent")
	l.run(t, p.name, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink")
	l.run(t, p.name, "ip", "-6", "neigh", "replace", "fe80::1", "lladdr", hm, "dev", "eth0", "nud", "permanent")
	l.run(t, p.name, "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
	l.run(t, p.node, "ip", "route", "add", p.ip4.String()+"/32", "dev", p.hostIf, "scope", "link")
	l.run(t, p.node, "ip", "-6", "route", "add", p.ip6.String()+"/128", "dev", p.hostIf)
	l.run(t, p.node, "ip", "neigh", "replace", p.ip4.String(), "lladdr", p.mac.String(), "dev", p.hostIf, "nud", "permanent")
	l.run(t, p.node, "ip", "-6", "neigh", "replace", p.ip6.String(), "lladdr", p.mac.String(), "dev", p.hostIf, "nud", "permanent")
}

func (l *dpLab) run(t *testing.T, host string, argv ...string) string {
	t.Helper()
	out, err := sh(l.ns(host), argv...)
	if err != nil {
		t.Fatalf("%s: %v", host, err)
	}
	return out
}

var lossRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// ping sends count echo requests from a pod and returns how many were lost.
// It is safe to call from any goroutine.
func (l *dpLab) ping(from string, to netip.Addr, count int, interval string) (int, error) {
	argv := l.ns(from).Exec("ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", interval, "-W", "10", to.String())
	out, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	m := lossRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ping %s -> %s: unexpected output:\n%s", from, to, out)
	}
	sent, _ := strconv.Atoi(string(m[1]))
	got, _ := strconv.Atoi(string(m[2]))
	return sent - got, nil
}

func (l *dpLab) mustPing(t *testing.T, from string, to netip.Addr, count int) {
	t.Helper()
	lost, err := l.ping(from, to, count, "0.05")
	if err != nil {
		t.Fatal(err)
	}
	if lost != 0 {
		t.Fatalf("ping %s -> %s lost %d of %d", from, to, lost, count)
	}
}

// tcpEcho sends n random bytes from a socket in pod from to an echo server
// in pod to and checks they come back intact (large segments exercise GSO
// and checksum offload through the redirects).
func (l *dpLab) tcpEcho(t *testing.T, from, to string, addr netip.Addr, n int) {
	t.Helper()
	var ln net.Listener
	if err := l.ns(to).Do(func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(addr.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
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
	if err := l.ns(from).Do(func() error {
		d := net.Dialer{Timeout: 30 * time.Second}
		var err error
		conn, err = d.DialContext(context.Background(), "tcp", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatalf("dial %s -> %s: %v", from, ln.Addr(), err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, n)
	_, _ = rand.Read(data)
	errc := make(chan error, 1)
	go func() { _, err := conn.Write(data); errc <- err }()
	back := make([]byte, n)
	if _, err := io.ReadFull(conn, back); err != nil {
		t.Fatalf("tcp %s -> %s: read back: %v", from, addr, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("tcp %s -> %s: write: %v", from, addr, err)
	}
	if !bytes.Equal(back, data) {
		t.Fatalf("tcp %s -> %s: echoed data differs", from, addr)
	}
}

func (l *dpLab) counters(t *testing.T) Counters {
	t.Helper()
	c, err := l.fp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (l *dpLab) txPackets(t *testing.T, host, ifname string) uint64 {
	t.Helper()
	var n uint64
	if err := l.ns(host).Do(func() error {
		lk, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		n = lk.Attrs().Statistics.TxPackets
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// forwarded reads Ip ForwDatagrams in host's namespace: packets the kernel
// routed. The fast path's packets never reach IP forwarding.
func (l *dpLab) forwarded(t *testing.T, host string) uint64 {
	t.Helper()
	out := l.run(t, host, "cat", "/proc/net/snmp")
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "Ip: ") || !strings.HasPrefix(lines[i+1], "Ip: ") {
			continue
		}
		names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for j, n := range names {
			if n == "ForwDatagrams" && j < len(vals) {
				v, err := strconv.ParseUint(vals[j], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatalf("no Ip ForwDatagrams in /proc/net/snmp of %s", host)
	return 0
}

func pod(name string) dpPod {
	for _, p := range dpPods {
		if p.name == name {
			return p
		}
	}
	panic("no pod " + name)
}

func TestPrivilegedFastpathDatapaths(t *testing.T) {
	for _, mode := range []AttachMode{AttachTCX, AttachLegacyTC} {
		t.Run(string(mode), func(t *testing.T) {
			l := newDPLab(t, mode)
			p1, p2, p3, p4 := pod("p1"), pod("p2"), pod("p3"), pod("p4")

			t.Run("local pod to pod is redirected and counted", func(t *testing.T) {
				before := l.counters(t)
				fwd := l.forwarded(t, "node1")
				l.mustPing(t, "p1", p2.ip4, 5)
				l.mustPing(t, "p1", p2.ip6, 5)
				l.tcpEcho(t, "p1", "p2", p2.ip4, 4<<20)
				after := l.counters(t)
				if d := l.forwarded(t, "node1") - fwd; d != 0 {
					t.Errorf("node1's IPv4 stack forwarded %d packets between local pods; the fast path should carry them all", d)
				}
				if d := after.Paths["local"].Packets - before.Paths["local"].Packets; d < 20 {
					t.Fatalf("local path counted %d packets, want at least 20 (pings both ways, v4 and v6)", d)
				}
				pc := after.Pods[p1.ip4]
				if pc.Local.Packets < 5 || pc.Local.Bytes == 0 {
					t.Fatalf("pod %s local counter %+v, want >= 5 packets", p1.ip4, pc.Local)
				}
				if after.Pods[p1.ip6].Local.Packets < 5 {
					t.Fatalf("pod %s (IPv6) local counter %+v, want >= 5 packets", p1.ip6, after.Pods[p1.ip6].Local)
				}
				// The same counters through Prometheus and the status text.
				reg := prometheus.NewPedanticRegistry()
				reg.MustRegister(NewCollector(l.fp))
				key := `strata_bpf_pod_packets_total{path="local",pod_ip="` + p1.ip4.String() + `"}`
				if v := gather(t, reg)[key]; v < 5 {
					t.Fatalf("%s = %v, want >= 5", key, v)
				}
				st, err := l.fp.Status()
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := st.Counters.Pods[p1.ip4]; !st.Active || st.Endpoints != 4 || !ok {
					t.Fatalf("status: active %v, %d endpoints, pod counters %v (want %s's)", st.Active, st.Endpoints, st.Counters.Pods, p1.ip4)
				}
			})

			t.Run("remote pod natively", func(t *testing.T) {
				before := l.counters(t)
				fwd := l.forwarded(t, "node1")
				l.mustPing(t, "p1", p3.ip4, 5)
				l.mustPing(t, "p1", p3.ip6, 5)
				l.tcpEcho(t, "p1", "p3", p3.ip4, 4<<20)
				after := l.counters(t)
				if d := l.forwarded(t, "node1") - fwd; d != 0 {
					t.Errorf("node1's IPv4 stack forwarded %d packets to or from the remote pod; the fast path should carry them both ways", d)
				}
				if d := after.Pods[p1.ip4].Remote.Packets - before.Pods[p1.ip4].Remote.Packets; d < 5 {
					t.Fatalf("pod %s remote counter grew by %d, want >= 5", p1.ip4, d)
				}
				if d := after.Pods[p1.ip6].Remote.Packets - before.Pods[p1.ip6].Remote.Packets; d < 5 {
					t.Fatalf("pod %s (IPv6) remote counter grew by %d, want >= 5", p1.ip6, d)
				}
			})

			t.Run("remote pod over VXLAN", func(t *testing.T) {
				before := l.counters(t)
				vxBefore := l.txPackets(t, "node1", "vx0")
				l.mustPing(t, "p1", p4.ip4, 5)
				l.tcpEcho(t, "p1", "p4", p4.ip4, 4<<20)
				after := l.counters(t)
				if d := after.Pods[p1.ip4].Remote.Packets - before.Pods[p1.ip4].Remote.Packets; d < 5 {
					t.Fatalf("pod %s remote counter grew by %d, want >= 5", p1.ip4, d)
				}
				if d := l.txPackets(t, "node1", "vx0") - vxBefore; d < 5 {
					t.Fatalf("vx0 on node1 sent %d packets, want >= 5: traffic did not take the overlay", d)
				}
			})
		})
	}
}

func TestPrivilegedFastpathSwitchOffKeepsConnectivity(t *testing.T) {
	l := newDPLab(t, AttachAuto)
	p2, p3, p4 := pod("p2"), pod("p3"), pod("p4")
	for _, dst := range []netip.Addr{p2.ip4, p3.ip4, p4.ip4} {
		l.mustPing(t, "p1", dst, 1) // resolve underlay neighbours first
	}
	type result struct {
		dst  netip.Addr
		lost int
		err  error
	}
	const count = 400
	results := make(chan result, 3)
	for _, dst := range []netip.Addr{p2.ip4, p3.ip4, p4.ip4} {
		go func() {
			lost, err := l.ping("p1", dst, count, "0.01")
			results <- result{dst, lost, err}
		}()
	}
	// Flip the switch and detach/reattach while the pings run. Every state
	// change is made while traffic flows; none may lose a packet.
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < 6 && time.Now().Before(deadline); i++ {
		time.Sleep(300 * time.Millisecond) // spacing between flips, not synchronisation
		if err := l.fp.SetEnabled(i%2 == 1); err != nil {
			t.Error(err)
		}
	}
	if err := l.fp.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	for _, ifn := range []string{"vp1", "eth0", "vx0"} {
		if err := l.fp.Detach(ifn); err != nil {
			t.Error(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if err := l.fp.AttachPod("vp1"); err != nil {
		t.Error(err)
	}
	for _, up := range []string{"eth0", "vx0"} {
		if err := l.fp.AttachUplink(up); err != nil {
			t.Error(err)
		}
	}
	for range 3 {
		r := <-results
		if r.err != nil {
			t.Error(r.err)
		} else if r.lost != 0 {
			t.Errorf("continuous ping p1 -> %s lost %d of %d while switching the fast path", r.dst, r.lost, count)
		}
	}
	c := l.counters(t)
	if c.Paths["disabled"].Packets == 0 || c.Paths["local"].Packets == 0 {
		t.Errorf("expected traffic both with the fast path off (%d) and on (%d)", c.Paths["disabled"].Packets, c.Paths["local"].Packets)
	}
}

func TestPrivilegedFastpathRemovePodRemovesEntries(t *testing.T) {
	l := newDPLab(t, AttachAuto)
	p1, p2 := pod("p1"), pod("p2")
	l.mustPing(t, "p2", p1.ip4, 3)
	if _, ok := l.counters(t).Pods[p2.ip4]; !ok {
		t.Fatal("pod p2 has no counters after sending traffic")
	}
	if err := l.fp.RemovePod(p2.hostIf, p2.ip4, p2.ip6); err != nil {
		t.Fatal(err)
	}
	eps, err := l.fp.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []netip.Addr{p2.ip4, p2.ip6} {
		if _, ok := eps[ip]; ok {
			t.Errorf("endpoint %s still in the map after RemovePod", ip)
		}
		if _, ok := l.counters(t).Pods[ip]; ok {
			t.Errorf("counters of %s still in the map after RemovePod", ip)
		}
	}
	if _, ok := eps[p1.ip4]; !ok {
		t.Error("RemovePod of p2 removed p1's endpoint too")
	}
	for _, a := range l.fp.Attached() {
		if a == p2.hostIf {
			t.Errorf("%s still attached after RemovePod", p2.hostIf)
		}
	}
	// Traffic to the removed pod's address is no longer a local redirect: it
	// follows the FIB (p2's veth and route are still there in this test).
	localBefore := l.counters(t).Pods[p1.ip4].Local.Packets
	l.mustPing(t, "p1", p2.ip4, 3)
	if got := l.counters(t).Pods[p1.ip4].Local.Packets; got != localBefore {
		t.Errorf("after RemovePod, p1 -> p2 was still redirected locally (%d new packets)", got-localBefore)
	}
	// Removing again is not an error.
	if err := l.fp.RemovePod(p2.hostIf, p2.ip4, p2.ip6); err != nil {
		t.Fatalf("second RemovePod: %v", err)
	}
}

// A kube-proxy style service: node1 DNATs a virtual IP to a local pod (p2)
// and to a remote one (p3). The forward packets leave the fast path because
// the virtual IP is not a pod prefix; the replies must leave it too because
// conntrack has NAT state for them, or the client would see the backend's
// address and reset the connection.
func TestPrivilegedFastpathKeepsServiceNAT(t *testing.T) {
	testutil.RequireCommand(t, "nft", "apt-get install nftables")
	l := newDPLab(t, AttachAuto)
	p2, p3 := pod("p2"), pod("p3")
	for _, tc := range []struct {
		backend    dpPod
		vip        string
		clientPort int // fixed, so the test knows the reply tuple
	}{{p2, "10.96.0.10", 40123}, {p3, "10.96.0.11", 40124}} {
		t.Run(tc.backend.name, func(t *testing.T) {
			ln, port := l.listen(t, tc.backend)
			defer ln.Close()
			rule := fmt.Sprintf("add rule ip svc pre ip daddr %s tcp dport 80 dnat to %s:%d", tc.vip, tc.backend.ip4, port)
			l.run(t, "node1", "nft", "add table ip svc")
			l.run(t, "node1", "nft", "add chain ip svc pre { type nat hook prerouting priority -100 ; }")
			l.run(t, "node1", "nft", rule)
			defer l.run(t, "node1", "nft", "delete table ip svc")
			// A stale "not NATed" verdict for the reply tuple, as a
			// finished direct connection on the same ports would leave in
			// nat_cache: the backend's SYN-ACK must replace it.
			reply := flowKey(tc.backend.ip4, dpPods[0].ip4, uint16(port), uint16(tc.clientPort))
			if err := l.fp.objs.NatCache.Put(reply, uint8(0)); err != nil {
				t.Fatal(err)
			}
			before := l.counters(t)
			l.echoVia(t, "p1", tc.clientPort, netip.MustParseAddr(tc.vip), 80, 1<<20)
			after := l.counters(t)
			var verdict uint8
			if err := l.fp.objs.NatCache.Lookup(reply, &verdict); err != nil || verdict != 1 {
				t.Errorf("nat_cache verdict for the reply tuple: %d (%v), want 1 (NATed)", verdict, err)
			}
			if after.Paths["stack_not_pod"].Packets == before.Paths["stack_not_pod"].Packets {
				t.Error("requests to the service IP were not handed to the stack")
			}
			if tc.backend.node == "node1" {
				if d := after.Pods[tc.backend.ip4].Stack.Packets - before.Pods[tc.backend.ip4].Stack.Packets; d == 0 {
					t.Error("the local backend's replies were not handed to the stack for un-NAT")
				}
			}
			if after.Paths["stack_nat"].Packets == before.Paths["stack_nat"].Packets {
				t.Error("no reply was recognised as NATed (stack_nat)")
			}
		})
	}
}

// listen starts a TCP echo server on any port of pod p.
func (l *dpLab) listen(t *testing.T, p dpPod) (net.Listener, int) {
	t.Helper()
	var ln net.Listener
	if err := l.ns(p.name).Do(func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(p.ip4.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln, ln.Addr().(*net.TCPAddr).Port
}

// echoVia connects from pod from to addr:port and checks n bytes echo back.
// A non-zero localPort fixes the client's source port.
func (l *dpLab) echoVia(t *testing.T, from string, localPort int, addr netip.Addr, port, n int) {
	t.Helper()
	var conn net.Conn
	if err := l.ns(from).Do(func() error {
		d := net.Dialer{Timeout: 30 * time.Second}
		if localPort != 0 {
			d.LocalAddr = &net.TCPAddr{Port: localPort}
		}
		var err error
		conn, err = d.DialContext(context.Background(), "tcp", net.JoinHostPort(addr.String(), strconv.Itoa(port)))
		return err
	}); err != nil {
		t.Fatalf("dial %s:%d from %s: %v", addr, port, from, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, n)
	_, _ = rand.Read(data)
	errc := make(chan error, 1)
	go func() { _, err := conn.Write(data); errc <- err }()
	back := make([]byte, n)
	if _, err := io.ReadFull(conn, back); err != nil {
		t.Fatalf("echo via %s:%d: %v", addr, port, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, data) {
		t.Fatalf("echo via %s:%d: data differs", addr, port)
	}
}

// A pod's veth recreated under the same name (a missed CNI DEL) gets the
// program attached again instead of keeping a dead attachment.
func TestPrivilegedAttachFollowsRecreatedVeth(t *testing.T) {
	testutil.RequireRoot(t)
	n, err := nsutil.Create(nsutil.OwnedName("bpfre"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(n.Name) })
	mk := func() {
		out, err := sh(n, "ip", "link", "add", "vre", "type", "veth", "peer", "name", "vre-p")
		if err != nil {
			t.Fatal(out, err)
		}
	}
	mk()
	fp, err := Load(Options{NS: &n})
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	if err := fp.AttachPod("vre"); err != nil {
		t.Fatal(err)
	}
	if out, err := sh(n, "ip", "link", "del", "vre"); err != nil {
		t.Fatal(out, err)
	}
	mk()
	if err := fp.AttachPod("vre"); err != nil {
		t.Fatal(err)
	}
	fp.mu.Lock()
	a := fp.attached["vre"]
	fp.mu.Unlock()
	var idx int
	if err := n.Do(func() error { idx = ifindex(t, "vre"); return nil }); err != nil {
		t.Fatal(err)
	}
	if a == nil || a.ifindex != idx {
		t.Fatalf("attachment %+v does not follow the recreated veth (ifindex %d)", a, idx)
	}
	if fp.Mode() == AttachTCX {
		var progs int
		if err := n.Do(func() error {
			res, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: ebpf.AttachTCXIngress})
			if err != nil {
				return err
			}
			progs = len(res.Programs)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if progs != 1 {
			t.Fatalf("recreated veth has %d TCX ingress programs, want 1", progs)
		}
	}
}

func TestPrivilegedSyncMatchesLivePods(t *testing.T) {
	l := newDPLab(t, AttachAuto)
	p1, p2 := pod("p1"), pod("p2")
	// A stale endpoint (a pod deleted while the agent was down) and p2 gone.
	ghost := netip.MustParseAddr("10.244.1.99")
	if err := l.fp.UpsertEndpoint(ghost, Endpoint{HostIfindex: 1, PodMAC: p1.mac, HostMAC: p1.mac}); err != nil {
		t.Fatal(err)
	}
	if err := l.fp.Sync([]Pod{{HostIfname: p1.hostIf, PodMAC: p1.mac, IPs: []netip.Addr{p1.ip4, p1.ip6}}}); err != nil {
		t.Fatal(err)
	}
	eps, err := l.fp.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 2 {
		t.Fatalf("after Sync: endpoints %v, want only p1's two addresses", eps)
	}
	if _, ok := eps[p1.ip4]; !ok {
		t.Fatal("Sync dropped a live pod")
	}
	got := strings.Join(l.fp.Attached(), ",")
	if strings.Contains(got, p2.hostIf) || !strings.Contains(got, p1.hostIf) || !strings.Contains(got, "eth0") {
		t.Fatalf("after Sync attached %s: want p1's veth and the uplinks, not p2's", got)
	}
	l.mustPing(t, "p1", p2.ip4, 3) // p2 now reached through the FIB, still fine
}

func TestPrivilegedAddPodRejectsBadInput(t *testing.T) {
	testutil.RequireRoot(t)
	n, err := nsutil.Create(nsutil.OwnedName("bpfbad"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(n.Name) })
	fp, err := Load(Options{NS: &n})
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	for _, tc := range []struct {
		pod  Pod
		want string
	}{
		{Pod{PodMAC: podAMAC, IPs: []netip.Addr{podA4}}, "HostIfname"},
		{Pod{HostIfname: "lo", PodMAC: net.HardwareAddr{1}, IPs: []netip.Addr{podA4}}, "PodMAC"},
		{Pod{HostIfname: "lo", PodMAC: podAMAC}, "IPs"},
		{Pod{HostIfname: "nosuch0", PodMAC: podAMAC, IPs: []netip.Addr{podA4}}, "nosuch0"},
	} {
		err := fp.AddPod(tc.pod)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("AddPod(%+v) = %v, want an error naming %s", tc.pod, err, tc.want)
		}
	}
	eps, err := fp.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 0 || len(fp.Attached()) != 0 {
		t.Fatalf("failed AddPod left state: %d endpoints, attached %v", len(eps), fp.Attached())
	}
}

// flowKey is nat_cache's key for a TCP flow, laid out as struct flow_key.
func flowKey(src, dst netip.Addr, sport, dport uint16) []byte {
	k := make([]byte, 40)
	s16, d16 := src.As16(), dst.As16() // IPv4-mapped, as the programs store them
	copy(k[0:16], s16[:])
	copy(k[16:32], d16[:])
	binary.BigEndian.PutUint16(k[32:], sport)
	binary.BigEndian.PutUint16(k[34:], dport)
	k[36] = 6 // IPPROTO_TCP
	return k
}
