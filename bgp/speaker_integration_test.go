//go:build integration

package bgp_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/bgp"
	"github.com/strata-net/strata/internal/rtproto"
	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/harness/netlab"
	"github.com/strata-net/strata/tests/harness/routerd"
)

const (
	nodeASN  = 65011
	birdASN  = 65010
	frrASN   = 65020
	bgpPort  = 1790
	podCIDR  = "10.244.1.0/24"
	podAddr  = "10.244.1.1"
	birdNet  = "10.99.1.0/24"
	frrNet   = "10.98.1.0/24"
	shareNet = "10.97.0.0/24" // offered by both: ECMP
	password = "s3cret-key"
	waitLong = 60 * time.Second
)

type interopLab struct {
	lab   *netlab.Lab
	bird  *routerd.BIRD
	frr   *routerd.FRR
	birdP bgp.PeerConfig
	frrP  bgp.PeerConfig
}

func newInteropLab(t *testing.T) *interopLab {
	testutil.RequireRoot(t)
	lab := netlab.New(t, netlab.Spec{
		Hosts: []netlab.Host{
			{Name: "node", Routes: []netlab.Route{{Dst: "10.0.3.0/30", Via: "10.0.1.1"}}},
			{Name: "bird", Forward: true},
			{Name: "frr"},
			{Name: "client", Routes: []netlab.Route{{Dst: "default", Via: "10.0.3.1"}}},
		},
		Links: []netlab.Link{
			{A: netlab.Port{Host: "node", Ifname: "to-bird", Addr: "10.0.1.2/30"}, B: netlab.Port{Host: "bird", Ifname: "to-node", Addr: "10.0.1.1/30"}},
			{A: netlab.Port{Host: "node", Ifname: "to-frr", Addr: "10.0.2.2/30"}, B: netlab.Port{Host: "frr", Ifname: "to-node", Addr: "10.0.2.1/30"}},
			{A: netlab.Port{Host: "client", Ifname: "eth0", Addr: "10.0.3.2/30"}, B: netlab.Port{Host: "bird", Ifname: "to-client", Addr: "10.0.3.1/30"}},
		},
	})
	// The pod gateway address stands in for a pod behind the node.
	if err := lab.NS("node").Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(podAddr + "/32")
		return netlink.AddrAdd(lo, a)
	}); err != nil {
		t.Fatal(err)
	}
	l := &interopLab{lab: lab}
	l.bird = routerd.StartBIRD(t, lab.NS("bird"), routerd.BIRDConfig{
		RouterID: "10.0.1.1", ASN: birdASN, Kernel: true,
		Announce: []string{birdNet, shareNet},
		Neighbors: []routerd.Neighbor{{Name: "node", Address: "10.0.1.2", Port: bgpPort, ASN: nodeASN,
			HoldTime: 6, GracefulRestart: true, RestartTime: 120}},
	})
	l.frr = routerd.StartFRR(t, lab.NS("frr"), routerd.FRRConfig{
		RouterID: "10.0.2.1", ASN: frrASN,
		Announce:  []string{frrNet, shareNet},
		Neighbors: []routerd.Neighbor{{Address: "10.0.2.2", Port: bgpPort, ASN: nodeASN, Password: password, HoldTime: 6}},
	})
	// The speaker is passive: it runs in this process, and only its
	// listener can be placed in the node namespace (see docs/bgp.md).
	l.birdP = bgp.PeerConfig{Address: netip.MustParseAddr("10.0.1.1"), ASN: birdASN, Passive: true,
		HoldTime: 6 * time.Second, GracefulRestart: true, RestartTime: 120 * time.Second}
	l.frrP = bgp.PeerConfig{Address: netip.MustParseAddr("10.0.2.1"), ASN: frrASN, Passive: true,
		HoldTime: 6 * time.Second, Password: password}
	return l
}

// startNode starts a speaker in the node namespace, advertises the pod CIDR,
// adds both peers and installs learned routes. Stop is the caller's.
func (l *interopLab) startNode(t *testing.T, ctx context.Context) (*bgp.Speaker, context.CancelFunc) {
	t.Helper()
	nodeNS := l.lab.NS("node")
	sp, err := bgp.New(bgp.Config{RouterID: netip.MustParseAddr("10.0.1.2"), ASN: nodeASN, ListenPort: bgpPort, NetNS: nodeNS.Path},
		slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Advertise before the peers come up, so the first UPDATE before
	// End-of-RIB already carries the CIDR (graceful restart needs that).
	if err := sp.Advertise(ctx, bgp.Advertisement{Prefix: netip.MustParsePrefix(podCIDR)}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []bgp.PeerConfig{l.birdP, l.frrP} {
		if err := sp.AddPeer(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	inst, err := bgp.NewInstaller(nodeNS.Path, 0)
	if err != nil {
		t.Fatal(err)
	}
	ictx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = bgp.RunInstaller(ictx, sp, inst, bgp.InstallOptions{Keep: true})
		inst.Close()
	}()
	return sp, func() { cancel(); <-done }
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func nodeRoute(t *testing.T, l *interopLab, prefix string) (*netlink.Route, error) {
	t.Helper()
	return routerd.KernelRoute(l.lab.NS("node"), netip.MustParsePrefix(prefix))
}

func gateways(r *netlink.Route) []string {
	var gws []string
	if r.Gw != nil {
		gws = append(gws, r.Gw.String())
	}
	for _, nh := range r.MultiPath {
		gws = append(gws, nh.Gw.String())
	}
	slices.Sort(gws)
	return gws
}

func wantNodeRoute(prefix string, gws ...string) func(*testing.T, *interopLab) func() error {
	return func(t *testing.T, l *interopLab) func() error {
		return func() error {
			r, err := nodeRoute(t, l, prefix)
			if err != nil {
				return err
			}
			if r == nil {
				return fmt.Errorf("%s not in the node's kernel table", prefix)
			}
			if r.Protocol != rtproto.BGP {
				return fmt.Errorf("%s has protocol %d, want %d", prefix, r.Protocol, rtproto.BGP)
			}
			if got := gateways(r); !slices.Equal(got, gws) {
				return fmt.Errorf("%s via %v, want %v", prefix, got, gws)
			}
			return nil
		}
	}
}

func birdHas(l *interopLab, prefix string, want bool) func() error {
	return func() error {
		ok, out, err := l.bird.HasRoute(prefix)
		if err != nil {
			return err
		}
		if ok != want {
			return fmt.Errorf("BIRD has %s = %v, want %v:\n%s", prefix, ok, want, out)
		}
		r, err := routerd.KernelRoute(l.bird.NS, netip.MustParsePrefix(prefix))
		if err != nil {
			return err
		}
		if (r != nil && r.Protocol == routerd.BIRDKernelProto) != want {
			return fmt.Errorf("BIRD's kernel has %s = %v, want %v", prefix, r != nil, want)
		}
		return nil
	}
}

func frrHas(l *interopLab, prefix string, want bool) func() error {
	return func() error {
		ok, out, err := l.frr.HasRoute(prefix)
		if err != nil {
			return err
		}
		if ok != want {
			return fmt.Errorf("FRR has %s = %v, want %v:\n%s", prefix, ok, want, out)
		}
		r, err := routerd.KernelRoute(l.frr.NS, netip.MustParsePrefix(prefix))
		if err != nil {
			return err
		}
		if (r != nil && r.Protocol == routerd.FRRKernelProto) != want {
			return fmt.Errorf("FRR's kernel has %s = %v, want %v", prefix, r != nil, want)
		}
		return nil
	}
}

func peerState(ctx context.Context, sp *bgp.Speaker, addr netip.Addr) (bgp.PeerStatus, error) {
	ps, err := sp.Peers(ctx)
	if err != nil {
		return bgp.PeerStatus{}, err
	}
	for _, p := range ps {
		if p.Address == addr {
			return p, nil
		}
	}
	return bgp.PeerStatus{}, fmt.Errorf("peer %s not listed: %+v", addr, ps)
}

// TestIntegrationSpeakerWithBIRDAndFRR is the foundation interop test: the
// embedded speaker peers over eBGP with BIRD 2 and FRR in their own
// namespaces; announcements flow both ways into RIBs and kernel tables; then
// withdraw, MD5, graceful restart and peer loss are exercised on the same lab.
func TestIntegrationSpeakerWithBIRDAndFRR(t *testing.T) {
	l := newInteropLab(t)
	outer := t
	ctx := context.Background()
	sp, stopInstall := l.startNode(t, ctx)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stopInstall()
			_ = sp.Stop(ctx, bgp.StopCease)
		}
	})

	l.bird.WaitEstablished(t, "node", waitLong)
	l.frr.WaitEstablished(t, "10.0.2.2", waitLong)

	t.Run("pod CIDR reaches BIRD and FRR RIB and kernel", func(t *testing.T) {
		routerd.Eventually(t, waitLong, "BIRD learns the pod CIDR", birdHas(l, podCIDR, true))
		routerd.Eventually(t, waitLong, "FRR learns the pod CIDR", frrHas(l, podCIDR, true))
		// No transit: the node never passes BIRD's routes to FRR.
		if err := frrHas(l, birdNet, false)(); err != nil {
			t.Errorf("node leaked a BIRD route to FRR: %v", err)
		}
	})
	t.Run("peer routes reach the node kernel with ECMP", func(t *testing.T) {
		routerd.Eventually(t, waitLong, "BIRD route installed", wantNodeRoute(birdNet, "10.0.1.1")(t, l))
		routerd.Eventually(t, waitLong, "FRR route installed", wantNodeRoute(frrNet, "10.0.2.1")(t, l))
		routerd.Eventually(t, waitLong, "shared route is ECMP", wantNodeRoute(shareNet, "10.0.1.1", "10.0.2.1")(t, l))
		ps, err := sp.Peers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if p.State != bgp.StateEstablished || p.Received != 2 || p.Sent != 1 {
				t.Errorf("peer %s: %+v, want Established, 2 received, 1 sent", p.Address, p)
			}
		}
	})
	t.Run("withdraw on CIDR release", func(t *testing.T) {
		if err := sp.Withdraw(ctx, netip.MustParsePrefix(podCIDR)); err != nil {
			t.Fatal(err)
		}
		routerd.Eventually(t, waitLong, "BIRD drops the pod CIDR", birdHas(l, podCIDR, false))
		routerd.Eventually(t, waitLong, "FRR drops the pod CIDR", frrHas(l, podCIDR, false))
		if err := sp.Advertise(ctx, bgp.Advertisement{Prefix: netip.MustParsePrefix(podCIDR)}); err != nil {
			t.Fatal(err)
		}
		routerd.Eventually(t, waitLong, "BIRD relearns the pod CIDR", birdHas(l, podCIDR, true))
		routerd.Eventually(t, waitLong, "FRR relearns the pod CIDR", frrHas(l, podCIDR, true))
	})
	t.Run("MD5 mismatch keeps the session down and says why", func(t *testing.T) {
		wrong := l.frrP
		wrong.Password = "not-the-key"
		if err := sp.UpdatePeer(ctx, wrong); err != nil {
			t.Fatal(err)
		}
		routerd.Eventually(t, waitLong, "status names the MD5 mismatch", func() error {
			p, err := peerState(ctx, sp, l.frrP.Address)
			if err != nil {
				return err
			}
			if p.State == bgp.StateEstablished {
				return fmt.Errorf("session up with a wrong password: %+v", p)
			}
			if !strings.Contains(p.Reason, "MD5") {
				return fmt.Errorf("reason %q does not mention MD5", p.Reason)
			}
			return nil
		})
		routerd.Eventually(t, waitLong, "FRR's route leaves the node", func() error {
			r, err := nodeRoute(t, l, frrNet)
			if err != nil || r != nil {
				return fmt.Errorf("still there: %v %v", r, err)
			}
			return nil
		})
		if p, _ := peerState(ctx, sp, l.frrP.Address); p.State == bgp.StateEstablished {
			t.Fatalf("session established with a wrong MD5 password")
		}
		if err := sp.UpdatePeer(ctx, l.frrP); err != nil {
			t.Fatal(err)
		}
		l.frr.WaitEstablished(t, "10.0.2.2", waitLong)
		routerd.Eventually(t, waitLong, "FRR route back", wantNodeRoute(frrNet, "10.0.2.1")(t, l))
	})
	t.Run("bulk advertise and withdraw", func(t *testing.T) {
		base, err := l.bird.RouteCount()
		if err != nil {
			t.Fatal(err)
		}
		var ads []bgp.Advertisement
		var prefixes []netip.Prefix
		for i := 0; i < 2000; i++ {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i >> 6), byte(i&63) << 2}), 30)
			ads = append(ads, bgp.Advertisement{Prefix: p})
			prefixes = append(prefixes, p)
		}
		if err := sp.Advertise(ctx, ads...); err != nil {
			t.Fatal(err)
		}
		routerd.Eventually(t, waitLong, "BIRD counts the bulk load", func() error {
			n, err := l.bird.RouteCount()
			if err != nil || n != base+2000 {
				return fmt.Errorf("BIRD has %d routes, want %d (%v)", n, base+2000, err)
			}
			return nil
		})
		// Holding exports back during the load must not have touched the
		// pod CIDR advertised before.
		if err := birdHas(l, podCIDR, true)(); err != nil {
			t.Fatal(err)
		}
		if err := sp.Withdraw(ctx, prefixes...); err != nil {
			t.Fatal(err)
		}
		routerd.Eventually(t, waitLong, "BIRD drops the bulk load", func() error {
			n, err := l.bird.RouteCount()
			if err != nil || n != base {
				return fmt.Errorf("BIRD has %d routes, want %d (%v)", n, base, err)
			}
			return nil
		})
	})
	t.Run("graceful restart keeps BIRD forwarding", func(t *testing.T) {
		testutil.RequireCommand(t, "ping", "apt-get install iputils-ping")
		var out bytes.Buffer
		ping := exec.Command("ip", "netns", "exec", l.lab.NS("client").Name, "ping", "-n", "-i", "0.2", "-W", "5", podAddr)
		ping.Stdout, ping.Stderr = &out, &out
		if err := ping.Start(); err != nil {
			t.Fatal(err)
		}
		pingDone := false
		t.Cleanup(func() {
			if !pingDone {
				_ = ping.Process.Kill()
				_ = ping.Wait()
			}
		})
		waitReplies(t, &out, 3)

		stopInstall()
		if err := sp.Stop(ctx, bgp.StopGraceful); err != nil {
			t.Fatalf("graceful stop: %v", err)
		}
		stopped = true
		// While the agent is away, BIRD is in helper mode and keeps the route.
		routerd.Eventually(t, waitLong, "BIRD notices the restart", func() error {
			st, out, err := l.bird.ProtocolState("node")
			if err != nil {
				return err
			}
			if st == "Established" {
				return fmt.Errorf("still established:\n%s", out)
			}
			return nil
		})
		if err := birdHas(l, podCIDR, true)(); err != nil {
			t.Fatalf("BIRD dropped the pod CIDR during a graceful restart: %v", err)
		}
		before := replies(&out)
		waitReplies(t, &out, before+3) // forwarding continues while down

		sp2, stop2 := l.startNode(outer, ctx)
		outer.Cleanup(func() { stop2(); _ = sp2.Stop(ctx, bgp.StopCease) })
		l.bird.WaitEstablished(t, "node", waitLong)
		routerd.Eventually(t, waitLong, "BIRD route reinstalled on the node", wantNodeRoute(birdNet, "10.0.1.1")(t, l))
		after := replies(&out)
		waitReplies(t, &out, after+3)
		// End-of-RIB has been processed: the route must still be there.
		if err := birdHas(l, podCIDR, true)(); err != nil {
			t.Fatalf("BIRD lost the pod CIDR after the restart: %v", err)
		}
		_ = ping.Process.Signal(syscall.SIGINT)
		_ = ping.Wait()
		pingDone = true
		sent, got := pingStats(t, out.String())
		t.Logf("ping through the restart: %d sent, %d received", sent, got)
		// The last probe may be cut by SIGINT before its reply.
		if got < sent-1 {
			t.Fatalf("forwarding broke during the graceful restart: %d of %d replies\n%s", got, sent, out.String())
		}
		sp = sp2
	})
	t.Run("peer down removes learned routes within hold time", func(t *testing.T) {
		// A paused BIRD sends no keepalives and no FIN: only the hold timer
		// can notice.
		if err := syscall.Kill(l.bird.PID(), syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer syscall.Kill(l.bird.PID(), syscall.SIGCONT)
		start := time.Now()
		routerd.Eventually(t, waitLong, "BIRD's route leaves the node", func() error {
			r, err := nodeRoute(t, l, birdNet)
			if err != nil || r != nil {
				ps, _ := sp.Peers(ctx)
				return fmt.Errorf("still there: %v %v; peers %+v; learned %v", r, err, ps, sp.Learned())
			}
			return nil
		})
		t.Logf("learned route removed %s after the peer went silent (hold time %s)", time.Since(start).Round(100*time.Millisecond), l.birdP.HoldTime)
		routerd.Eventually(t, waitLong, "ECMP route falls back to FRR", wantNodeRoute(shareNet, "10.0.2.1")(t, l))
	})
}

var replyRE = regexp.MustCompile(`bytes from`)

func replies(b *bytes.Buffer) int { return len(replyRE.FindAllIndex(b.Bytes(), -1)) }

func waitReplies(t *testing.T, b *bytes.Buffer, n int) {
	t.Helper()
	routerd.Eventually(t, waitLong, fmt.Sprintf("%d ping replies", n), func() error {
		if got := replies(b); got < n {
			return fmt.Errorf("%d replies so far:\n%s", got, b.String())
		}
		return nil
	})
}

func pingStats(t *testing.T, out string) (sent, got int) {
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no ping summary in:\n%s", out)
	}
	sent, _ = strconv.Atoi(m[1])
	got, _ = strconv.Atoi(m[2])
	return sent, got
}
