//go:build privileged

package vxlan

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/tests/harness/netlab"
)

// The member filter (issue 14 §5): VXLAN-encapsulated ICMP with a made-up
// inner source, sent to n2's VTEP from a host that is not a member, reaches
// n2's pod 0 of N times (counted in the pod with a raw socket), while the
// same forgery from a member (n1) arrives N of N. Without the filter the
// forgery arrives: the test checks that too, so it fails if the filter is
// removed.
func TestPrivilegedMemberFilter(t *testing.T) {
	spec := labSpec()
	// x: an outsider that can reach n2's VTEP (as any internet host can
	// reach a node with a public address).
	spec.Hosts = append(spec.Hosts, netlab.Host{Name: "x", Routes: []netlab.Route{{Dst: "default", Via: "192.168.50.1"}}})
	spec.Links = append(spec.Links, netlab.Link{A: netlab.Port{Host: "x", Ifname: "eth0", Addr: "192.168.50.66/24"}, B: netlab.Port{Host: "r2", Ifname: "to-x", Addr: "192.168.50.1/24"}})
	lab := netlab.New(t, spec)
	n1 := &node{name: "n1", pod: "p1", underlay: "192.168.10.11", overlay: "10.244.1.1", podIP: "10.244.1.2", prefix: "10.244.1.0/24"}
	n2 := &node{name: "n2", pod: "p2", underlay: "192.168.20.11", overlay: "10.244.2.1", podIP: "10.244.2.2", prefix: "10.244.2.0/24"}
	nodes := []*node{n1, n2}
	for _, n := range nodes {
		wirePod(t, lab, n)
		start(t, lab, n)
	}
	reconcileAll(t, nodes)
	eventually(t, "p1 → p2 over the overlay", func() error { return ping(lab, "p1", n2.podIP, 0) })
	if st := n2.dp.Status(); st.MemberFilter != "enforcing" || st.Members != 1 {
		t.Fatalf("n2 member filter %q with %d members; want enforcing with 1 (n1)", st.MemberFilter, st.Members)
	}

	const n = 20
	ctr := countForged(t, lab, "p2")
	forge := func(from, fromIP string) int {
		t.Helper()
		before := ctr.n.Load()
		must(t, sendForged(lab, from, fromIP, n2, n))
		time.Sleep(500 * time.Millisecond)
		return int(ctr.n.Load() - before)
	}
	if got := forge("x", "192.168.50.66"); got != 0 {
		t.Errorf("forged VXLAN from a non-member reached the pod %d of %d times; want 0", got, n)
	}
	if got := forge("n1", n1.underlay); got != n {
		t.Errorf("VXLAN from member n1 reached the pod %d of %d times; want all", got, n)
	}

	// The control: without the table the forgery is delivered, so the
	// zero above is the filter's doing. The periodic check then puts it back.
	nftIn(t, lab, "n2", "delete", "table", "ip", FilterTable)
	if got := forge("x", "192.168.50.66"); got == 0 {
		t.Fatalf("with the filter removed the forged packets still did not arrive (0 of %d): the test's forgery is broken", n)
	}
	must(t, n2.dp.Resync(context.Background()))
	if got := forge("x", "192.168.50.66"); got != 0 {
		t.Errorf("after the filter was deleted by hand and resynced, the forgery reached the pod %d of %d times; want 0", got, n)
	}
	if st := n2.dp.Status(); st.NonMemberDrops == 0 {
		must(t, n2.dp.Resync(context.Background()))
		if st = n2.dp.Status(); st.NonMemberDrops == 0 {
			t.Errorf("status reports %d non-member drops after two dropped forgeries", st.NonMemberDrops)
		}
	}

	// Extra members (the node's own pool) are accepted; taking them away
	// closes the door again.
	n2.dp.SetMembers([]netip.Addr{netip.MustParseAddr("192.168.50.66")})
	if got := forge("x", "192.168.50.66"); got != n {
		t.Errorf("VXLAN from an extra member reached the pod %d of %d times; want all", got, n)
	}
	n2.dp.SetMembers(nil)
	if got := forge("x", "192.168.50.66"); got != 0 {
		t.Errorf("VXLAN from a removed extra member reached the pod %d of %d times; want 0", got, n)
	}
	// A peer that is no longer programmed is no longer a member.
	must(t, n2.dp.Reconcile(context.Background(), nil))
	if got := forge("n1", n1.underlay); got != 0 {
		t.Errorf("VXLAN from n1 after it was unprogrammed reached the pod %d of %d times; want 0", got, n)
	}

	stopRun(n2)
	must(t, n2.dp.Close())
	if out, err := nftOut(lab, "n2", "list", "table", "ip", FilterTable); err == nil {
		t.Errorf("Close left the filter table behind:\n%s", out)
	}
}

func nftOut(lab *netlab.Lab, host string, args ...string) (string, error) {
	argv := lab.NS(host).Exec(append([]string{"nft"}, args...)...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func nftIn(t *testing.T, lab *netlab.Lab, host string, args ...string) {
	t.Helper()
	if out, err := nftOut(lab, host, args...); err != nil {
		t.Fatalf("nft %v in %s: %v: %s", args, host, err, out)
	}
}

// forgedSource is the made-up inner source of the forged packets.
var forgedSource = netip.MustParseAddr("10.99.0.1")

var forgedMarker = []byte("strata-forged-vxlan")

type counter struct{ n atomic.Int64 }

// countForged counts, in a pod, ICMP echo requests from forgedSource that
// carry the marker, with a raw socket opened in the pod's namespace.
func countForged(t *testing.T, lab *netlab.Lab, pod string) *counter {
	t.Helper()
	var fd int
	must(t, lab.NS(pod).Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		return err
	}))
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	must(t, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv))
	c := &counter{}
	done := make(chan struct{})
	var stop atomic.Bool
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for !stop.Load() {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || n < 28 {
				continue
			}
			ihl := int(buf[0]&0x0f) * 4
			src, _ := netip.AddrFromSlice(buf[12:16])
			if src == forgedSource && n > ihl && buf[ihl] == 8 && bytes.Contains(buf[ihl:n], forgedMarker) {
				c.n.Add(1)
			}
		}
	}()
	t.Cleanup(func() { stop.Store(true); <-done; _ = unix.Close(fd) })
	return c
}

// sendForged sends count VXLAN packets from host (underlay address fromIP)
// to n's VTEP: VNI 1, inner Ethernet to n's VTEP MAC, inner IPv4 ICMP echo
// from forgedSource to n's pod.
func sendForged(lab *netlab.Lab, host, fromIP string, n *node, count int) error {
	return lab.NS(host).Do(func() error {
		conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(fromIP)}, &net.UDPAddr{IP: net.ParseIP(n.underlay), Port: DefaultPort})
		if err != nil {
			return fmt.Errorf("dial %s's VTEP from %s: %w", n.name, host, err)
		}
		defer conn.Close()
		dstMAC := DefaultMAC(DefaultVNI, netip.MustParseAddr(n.overlay))
		for i := range count {
			if _, err := conn.Write(vxlanICMP(DefaultVNI, dstMAC, forgedSource, netip.MustParseAddr(n.podIP), uint16(i))); err != nil {
				return fmt.Errorf("send forged VXLAN from %s: %w", host, err)
			}
		}
		return nil
	})
}

func vxlanICMP(vni uint32, dstMAC net.HardwareAddr, src, dst netip.Addr, seq uint16) []byte {
	icmp := make([]byte, 8, 8+len(forgedMarker))
	icmp[0] = 8 // echo request
	binary.BigEndian.PutUint16(icmp[4:], 0x5354)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	icmp = append(icmp, forgedMarker...)
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp))
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_ICMP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	hdr := make([]byte, 8)
	hdr[0] = 0x08 // VNI present
	binary.BigEndian.PutUint32(hdr[4:], vni<<8)
	eth := append(append(append([]byte{}, dstMAC...), 0x02, 0x66, 0x66, 0x66, 0x66, 0x66), 0x08, 0x00)
	return append(append(append(hdr, eth...), ip...), icmp...)
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
