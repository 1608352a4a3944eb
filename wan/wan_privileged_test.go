//go:build privileged

package wan

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/testutil"
)

func mkNS(t *testing.T, name string) nsutil.NS {
	t.Helper()
	n, err := nsutil.Create(nsutil.OwnedName(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(n.Name) })
	return n
}

func sh(t *testing.T, n nsutil.NS, args ...string) { t.Helper(); testutil.Run(t, n.Exec(args...)...) }

// TestPrivilegedWANDirectEncrypted: two nodes on either side of an "inet"
// namespace that routes only documentation addresses; userspace WireGuard
// (the kernel here has none: auto must pick it) carries pod-prefix traffic,
// and a marker sent across never appears in a capture on inet.
func TestPrivilegedWANDirectEncrypted(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "tcpdump", "apt-get install tcpdump")
	inet, a, b := mkNS(t, "wi"), mkNS(t, "wa"), mkNS(t, "wb")
	testutil.Run(t, "ip", "link", "add", "wva", "netns", a.Name, "type", "veth", "peer", "name", "wia", "netns", inet.Name)
	testutil.Run(t, "ip", "link", "add", "wvb", "netns", b.Name, "type", "veth", "peer", "name", "wib", "netns", inet.Name)
	sh(t, inet, "ip", "addr", "add", "198.51.100.1/24", "dev", "wia")
	sh(t, inet, "ip", "addr", "add", "203.0.113.1/24", "dev", "wib")
	sh(t, inet, "ip", "link", "set", "wia", "up")
	sh(t, inet, "ip", "link", "set", "wib", "up")
	sh(t, inet, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	for _, x := range []struct {
		n           nsutil.NS
		dev, ip, gw string
		pod         string
	}{{a, "wva", "198.51.100.11/24", "198.51.100.1", "10.244.1.1/32"}, {b, "wvb", "203.0.113.11/24", "203.0.113.1", "10.244.2.1/32"}} {
		sh(t, x.n, "ip", "addr", "add", x.ip, "dev", x.dev)
		sh(t, x.n, "ip", "link", "set", x.dev, "up")
		sh(t, x.n, "ip", "route", "add", "default", "via", x.gw)
		sh(t, x.n, "ip", "addr", "add", x.pod, "dev", "lo")
	}
	open := func(n nsutil.NS, dir string) *Transport {
		var tr *Transport
		if err := n.Do(func() (err error) {
			tr, err = New(Config{StateDir: dir})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.Close() })
		return tr
	}
	ta, tb := open(a, t.TempDir()), open(b, t.TempDir())
	if ta.Impl() != string(ImplUserspace) {
		t.Fatalf("impl %s (%s), want userspace on a kernel without WireGuard", ta.Impl(), ta.ImplReason())
	}
	pfx := netip.MustParsePrefix
	// b has a public endpoint; a is reached once it initiates.
	if err := ta.Reconcile([]Peer{{Name: "b", PublicKey: tb.PublicKey(), Endpoint: netip.MustParseAddrPort("203.0.113.11:51871"),
		AllowedIPs: []netip.Prefix{pfx("10.244.2.1/32")}}}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Reconcile([]Peer{{Name: "a", PublicKey: ta.PublicKey(), AllowedIPs: []netip.Prefix{pfx("10.244.1.1/32")}},
		{Name: "broken", PublicKey: "nope"}}); err == nil {
		t.Fatal("a bad peer was not reported")
	}
	// Idempotent: the same peers again write nothing and fail nothing.
	if err := ta.Reconcile([]Peer{{Name: "b", PublicKey: tb.PublicKey(), Endpoint: netip.MustParseAddrPort("203.0.113.11:51871"),
		AllowedIPs: []netip.Prefix{pfx("10.244.2.1/32")}}}); err != nil {
		t.Fatal(err)
	}

	pcap := filepath.Join(t.TempDir(), "inet.pcap")
	cap := exec.Command("ip", "netns", "exec", inet.Name, "tcpdump", "-i", "any", "-U", "-w", pcap, "udp")
	if err := cap.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cap.Process.Kill(); _ = cap.Wait() })
	time.Sleep(time.Second)

	marker := []byte("STRATA-WAN-MARKER-7f3a")
	var conn *net.UDPConn
	if err := b.Do(func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.244.2.1"), Port: 9000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 1500)
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := conn.ReadFromUDP(buf)
		if err == nil {
			got <- buf[:n]
		}
		close(got)
	}()
	deadline := time.Now().Add(8 * time.Second)
	var recv []byte
	for recv == nil && time.Now().Before(deadline) {
		if err := a.Do(func() error {
			c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.244.1.1")}, &net.UDPAddr{IP: net.ParseIP("10.244.2.1"), Port: 9000})
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(marker)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		select {
		case recv = <-got:
		case <-time.After(300 * time.Millisecond):
		}
	}
	if !bytes.Equal(recv, marker) {
		t.Fatalf("pod-prefix datagram did not cross the tunnel (got %q)", recv)
	}
	time.Sleep(500 * time.Millisecond)
	_ = cap.Process.Signal(os.Interrupt)
	_ = cap.Wait()
	raw, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) < 200 {
		t.Fatalf("capture on inet holds %d bytes: it saw no tunnel traffic, so it proves nothing", len(raw))
	}
	if bytes.Contains(raw, marker) {
		t.Fatal("the marker crossed inet in clear text")
	}
	st, err := tb.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Peers) != 1 || st.Peers[0].Name != "a" || st.Peers[0].Endpoint.Addr() != netip.MustParseAddr("198.51.100.11") || st.Peers[0].LastHandshake.IsZero() {
		t.Fatalf("b's view of a: %+v (want a learned endpoint 198.51.100.11 and a handshake)", st.Peers)
	}
	if st.Rejected["broken"] == "" {
		t.Fatalf("rejected peer not in status: %+v", st)
	}
}
