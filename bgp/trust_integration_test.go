//go:build integration

package bgp_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/bgp"
	"github.com/strata-net/strata/bgp/peersync"
	"github.com/strata-net/strata/internal/rtproto"
	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/harness/netlab"
	"github.com/strata-net/strata/tests/harness/routerd"
)

// What each router announces to the node besides its good routes: the
// node's own link (its LAN), a more-specific of the node's pod CIDR and a
// default route, and a block of filler prefixes for the prefix limit.
const (
	birdLAN   = "10.0.1.0/30" // the node's link to BIRD, and its underlay subnet
	frrLAN    = "10.0.2.0/30" // the node's link to FRR: connected, not underlay
	podMore   = "10.244.1.128/25"
	defRoute  = "0.0.0.0/0"
	fillerN   = 60
	limitLow  = 50
	birdGood  = "10.99.1.0/24"
	frrGood   = "10.98.1.0/24"
	birdBlock = 10 // filler 10.<block>.i.0/24
	frrBlock  = 11
)

func filler(block int) []string {
	out := make([]string, fillerN)
	for i := range out {
		out[i] = fmt.Sprintf("10.%d.%d.0/24", block, i)
	}
	return out
}

type trustLab struct {
	lab          *netlab.Lab
	bird         *routerd.BIRD
	frr          *routerd.FRR
	birdP, frrP  bgp.PeerConfig
	nodeUnderlay netip.Addr
}

func newTrustLab(t *testing.T) *trustLab {
	testutil.RequireRoot(t)
	lab := netlab.New(t, netlab.Spec{
		Hosts: []netlab.Host{{Name: "tnode"}, {Name: "tbird"}, {Name: "tfrr"}},
		Links: []netlab.Link{
			{A: netlab.Port{Host: "tnode", Ifname: "to-bird", Addr: "10.0.1.2/30"}, B: netlab.Port{Host: "tbird", Ifname: "to-node", Addr: "10.0.1.1/30"}},
			{A: netlab.Port{Host: "tnode", Ifname: "to-frr", Addr: "10.0.2.2/30"}, B: netlab.Port{Host: "tfrr", Ifname: "to-node", Addr: "10.0.2.1/30"}},
		},
	})
	if err := lab.NS("tnode").Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(podAddr + "/32")
		return netlink.AddrAdd(lo, a)
	}); err != nil {
		t.Fatal(err)
	}
	l := &trustLab{lab: lab, nodeUnderlay: netip.MustParseAddr("10.0.1.2")}
	bad := []string{podMore, defRoute}
	l.bird = routerd.StartBIRD(t, lab.NS("tbird"), routerd.BIRDConfig{
		RouterID: "10.0.1.1", ASN: birdASN,
		Announce: append(append([]string{birdGood, birdLAN}, bad...), filler(birdBlock)...),
		Neighbors: []routerd.Neighbor{{Name: "node", Address: "10.0.1.2", Port: bgpPort, ASN: nodeASN,
			HoldTime: 6, GracefulRestart: true, RestartTime: 120}},
	})
	l.frr = routerd.StartFRR(t, lab.NS("tfrr"), routerd.FRRConfig{
		RouterID: "10.0.2.1", ASN: frrASN,
		Announce:  append(append([]string{frrGood, frrLAN}, bad...), filler(frrBlock)...),
		Neighbors: []routerd.Neighbor{{Address: "10.0.2.2", Port: bgpPort, ASN: nodeASN, HoldTime: 6, GracefulRestart: true}},
	})
	l.birdP = bgp.PeerConfig{Address: netip.MustParseAddr("10.0.1.1"), ASN: birdASN, Passive: true, HoldTime: 6 * time.Second}
	l.frrP = bgp.PeerConfig{Address: netip.MustParseAddr("10.0.2.1"), ASN: frrASN, Passive: true, HoldTime: 6 * time.Second}
	return l
}

// start runs a speaker and installer in the node namespace with the given
// peers; the returned stop ends the installer (routes kept) and then the
// speaker gracefully.
func (l *trustLab) start(t *testing.T, ctx context.Context, peers ...bgp.PeerConfig) (*bgp.Speaker, func()) {
	t.Helper()
	sp, _, stop := l.startWith(t, ctx, "", bgp.InstallOptions{Keep: true}, peers...)
	return sp, stop
}

// startWith is start that first seeds peers from a cache file (when set),
// as the edge role does, and runs the installer with opts.
func (l *trustLab) startWith(t *testing.T, ctx context.Context, cache string, opts bgp.InstallOptions, peers ...bgp.PeerConfig) (*bgp.Speaker, *bgp.Installer, func()) {
	t.Helper()
	ns := l.lab.NS("tnode")
	sp, err := bgp.New(bgp.Config{RouterID: l.nodeUnderlay, ASN: nodeASN, ListenPort: bgpPort, NetNS: ns.Path,
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix(podCIDR)}, UnderlayIPs: []netip.Addr{l.nodeUnderlay}},
		slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if cache != "" {
		if n := peersync.Seed(ctx, sp, cache, nil); n == 0 {
			t.Fatalf("no peers seeded from %s", cache)
		}
	}
	for _, p := range peers {
		if err := sp.AddPeer(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	in, err := bgp.NewInstaller(ns.Path, 0)
	if err != nil {
		t.Fatal(err)
	}
	ictx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = bgp.RunInstaller(ictx, sp, in, opts)
		in.Close()
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		_ = sp.Stop(ctx, bgp.StopGraceful)
	}
	t.Cleanup(stop)
	return sp, in, stop
}

func (l *trustLab) route(prefix string) (*netlink.Route, error) {
	return routerd.KernelRoute(l.lab.NS("tnode"), netip.MustParsePrefix(prefix))
}

// bgpRoute fails unless prefix is in the node's kernel as a BGP route via gw.
func (l *trustLab) bgpRoute(prefix, gw string) func() error {
	return func() error {
		r, err := l.route(prefix)
		switch {
		case err != nil:
			return err
		case r == nil:
			return fmt.Errorf("%s not in the node's kernel", prefix)
		case r.Protocol != rtproto.BGP || r.Gw.String() != gw:
			return fmt.Errorf("%s is proto %d via %s, want proto %d via %s", prefix, r.Protocol, r.Gw, rtproto.BGP, gw)
		}
		return nil
	}
}

// noBGPRoute fails if prefix is in the node's kernel as a BGP route.
func (l *trustLab) noBGPRoute(prefix string) error {
	rs, err := routerd.KernelRoutes(l.lab.NS("tnode"), rtproto.BGP)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.Dst != nil && r.Dst.String() == prefix {
			return fmt.Errorf("%s installed via %s (proto %d)", prefix, r.Gw, r.Protocol)
		}
	}
	return nil
}

// connectedSurvives fails unless the node's link subnet is still the
// kernel's own connected route.
func (l *trustLab) connectedSurvives(prefix string) error {
	r, err := l.route(prefix)
	if err != nil {
		return err
	}
	if r == nil || r.Protocol != netlink.RouteProtocol(2) /* kernel */ || r.Gw != nil {
		return fmt.Errorf("connected route %s replaced: %+v", prefix, r)
	}
	return nil
}

// TestIntegrationImportPolicyBIRDAndFRR: BIRD and FRR each announce the
// node's own link subnet, a more-specific of its pod CIDR and a default
// route beside good routes. None of the bad routes reaches the kernel, the
// good ones do, the connected routes survive (so next hops stay reachable),
// and status counts the rejections per peer and reason.
func TestIntegrationImportPolicyBIRDAndFRR(t *testing.T) {
	l := newTrustLab(t)
	ctx := context.Background()
	sp, _ := l.start(t, ctx, l.birdP, l.frrP)
	l.bird.WaitEstablished(t, "node", waitLong)
	l.frr.WaitEstablished(t, "10.0.2.2", waitLong)

	routerd.Eventually(t, waitLong, "BIRD's good route installed", l.bgpRoute(birdGood, "10.0.1.1"))
	routerd.Eventually(t, waitLong, "FRR's good route installed", l.bgpRoute(frrGood, "10.0.2.1"))
	routerd.Eventually(t, waitLong, "all filler installed", func() error {
		for _, b := range []int{birdBlock, frrBlock} {
			for _, p := range filler(b) {
				if r, err := l.route(p); err != nil || r == nil {
					return fmt.Errorf("%s missing (%v)", p, err)
				}
			}
		}
		return nil
	})
	want := map[netip.Addr]map[bgp.RejectReason]uint64{
		l.birdP.Address: {bgp.RejectUnderlay: 1, bgp.RejectPodCIDR: 1, bgp.RejectDefaultRoute: 1},
		l.frrP.Address:  {bgp.RejectConnected: 1, bgp.RejectPodCIDR: 1, bgp.RejectDefaultRoute: 1},
	}
	routerd.Eventually(t, waitLong, "status counts the rejections per peer and reason", func() error {
		ps, err := sp.Peers(ctx)
		if err != nil {
			return err
		}
		for _, p := range ps {
			w := want[p.Address]
			if len(p.Rejected) != len(w) {
				return fmt.Errorf("peer %s rejected %v, want %v", p.Address, p.Rejected, w)
			}
			for r, n := range w {
				if p.Rejected[r] != n {
					return fmt.Errorf("peer %s rejected %v, want %v", p.Address, p.Rejected, w)
				}
			}
			if p.Received != fillerN+1 {
				return fmt.Errorf("peer %s: %d accepted, want %d", p.Address, p.Received, fillerN+1)
			}
		}
		return nil
	})
	for _, p := range []string{birdLAN, frrLAN, podMore, defRoute} {
		if err := l.noBGPRoute(p); err != nil {
			t.Errorf("bad route installed: %v", err)
		}
	}
	for _, p := range []string{birdLAN, frrLAN} {
		if err := l.connectedSurvives(p); err != nil {
			t.Error(err)
		}
	}
	// The next hops are still reachable: a good route's gateway resolves
	// through the connected route, not through a learned one.
	if err := l.lab.NS("tnode").Do(func() error {
		rs, err := netlink.RouteGet(netip.MustParseAddr("10.0.1.1").AsSlice())
		if err != nil {
			return err
		}
		if len(rs) == 0 || rs[0].Gw != nil {
			return fmt.Errorf("next hop 10.0.1.1 resolves via %+v, want the connected link", rs)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// An allowlist opens the default route for BIRD only, without a session
	// reset.
	open := l.birdP
	open.Import.Allow = []netip.Prefix{netip.MustParsePrefix(defRoute)}
	flaps := peerFlaps(t, ctx, sp, open.Address)
	if err := sp.UpdatePeer(ctx, open); err != nil {
		t.Fatal(err)
	}
	routerd.Eventually(t, waitLong, "allowed default route installed", l.bgpRoute(defRoute, "10.0.1.1"))
	if err := l.noBGPRoute(birdLAN); err != nil {
		t.Errorf("allowing the default opened the LAN: %v", err)
	}
	if f := peerFlaps(t, ctx, sp, open.Address); f != flaps {
		t.Errorf("changing the import policy reset the session (%d flaps, was %d)", f, flaps)
	}

	// Each router sends 64 prefixes; a limit of 50 closes its session and
	// holds it down, its routes leave the kernel, the other peer's stay.
	for _, c := range []struct {
		name       string
		over, keep bgp.PeerConfig
		overGood   string
		keepGood   string
		keepGW     string
		overFiller int
	}{
		{"BIRD", open, l.frrP, birdGood, frrGood, "10.0.2.1", birdBlock},
		{"FRR", l.frrP, open, frrGood, birdGood, "10.0.1.1", frrBlock},
	} {
		limited := c.over
		limited.MaxPrefixes = limitLow
		if err := sp.UpdatePeer(ctx, limited); err != nil {
			t.Fatal(err)
		}
		routerd.Eventually(t, waitLong, c.name+" over the limit shows in status", func() error {
			p, err := peerState(ctx, sp, limited.Address)
			if err != nil {
				return err
			}
			if !p.OverLimit || p.State == bgp.StateEstablished || p.MaxPrefixes != limitLow || !strings.Contains(p.Reason, "maxPrefixes 50") {
				return fmt.Errorf("%+v", p)
			}
			return nil
		})
		routerd.Eventually(t, waitLong, c.name+"'s routes leave the kernel", func() error {
			if err := l.noBGPRoute(c.overGood); err != nil {
				return err
			}
			for _, p := range filler(c.overFiller) {
				if err := l.noBGPRoute(p); err != nil {
					return err
				}
			}
			return nil
		})
		// Held down: still over the limit a few seconds later (gobgp would
		// have reconnected after its 5 s idle hold otherwise).
		time.Sleep(7 * time.Second)
		if p, _ := peerState(ctx, sp, limited.Address); !p.OverLimit || p.State == bgp.StateEstablished {
			t.Errorf("%s session came back over the limit: %+v", c.name, p)
		}
		if err := l.bgpRoute(c.keepGood, c.keepGW)(); err != nil {
			t.Errorf("the other peer's route went with the over-limit one: %v", err)
		}
		for _, p := range []string{birdLAN, frrLAN} {
			if err := l.connectedSurvives(p); err != nil {
				t.Error(err)
			}
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(bgp.NewCollector(sp))
		if v, err := gauge(reg, "strata_bgp_peer_over_max_prefixes", limited.Address.String()); err != nil || v != 1 {
			t.Errorf("over-limit metric of %s: %v, %v", limited.Address, v, err)
		}
		// Raising the limit re-creates the peer and lifts the hold.
		if err := sp.UpdatePeer(ctx, c.over); err != nil {
			t.Fatal(err)
		}
		routerd.Eventually(t, waitLong, c.name+" back under the default limit", l.bgpRoute(c.overGood, limited.Address.String()))
	}
}

func peerFlaps(t *testing.T, ctx context.Context, sp *bgp.Speaker, a netip.Addr) uint32 {
	t.Helper()
	p, err := peerState(ctx, sp, a)
	if err != nil {
		t.Fatal(err)
	}
	return p.Flaps
}

// gauge reads one peer's value of a metric family.
func gauge(reg *prometheus.Registry, name, peer string) (float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "peer" && lp.GetValue() == peer {
					return m.GetGauge().GetValue(), nil
				}
			}
		}
	}
	return 0, fmt.Errorf("no %s for peer %s", name, peer)
}

// TestIntegrationRestartFromCacheWithoutAPIServer: the node learns routes
// from BIRD and FRR and caches its peers; its agent stops (graceful) and,
// while FRR is gone too, comes back with no API server: the speaker starts
// from the cache, BIRD's session returns and sends End-of-RIB, and FRR's
// learned route stays in the kernel until the graceful-restart time, then
// goes. Nothing is deleted at a fixed 10 s.
func TestIntegrationRestartFromCacheWithoutAPIServer(t *testing.T) {
	l := newTrustLab(t)
	ctx := context.Background()
	const restart = 14 * time.Second
	birdP, frrP := l.birdP, l.frrP
	birdP.GracefulRestart, birdP.RestartTime = true, restart
	frrP.RestartTime = restart
	sp, _, stop := l.startWith(t, ctx, "", bgp.InstallOptions{Keep: true, SweepStale: true}, birdP, frrP)
	l.bird.WaitEstablished(t, "node", waitLong)
	l.frr.WaitEstablished(t, "10.0.2.2", waitLong)
	routerd.Eventually(t, waitLong, "BIRD's route installed", l.bgpRoute(birdGood, "10.0.1.1"))
	routerd.Eventually(t, waitLong, "FRR's route installed", l.bgpRoute(frrGood, "10.0.2.1"))
	cache := filepath.Join(t.TempDir(), peersync.CacheFile)
	if err := peersync.SaveCache(cache, sp.PeerConfigs()); err != nil {
		t.Fatal(err)
	}

	stop()
	l.frr.Stop()
	for _, c := range []struct{ p, gw string }{{birdGood, "10.0.1.1"}, {frrGood, "10.0.2.1"}} {
		if err := l.bgpRoute(c.p, c.gw)(); err != nil {
			t.Fatalf("learned route gone while the agent is stopped: %v", err)
		}
	}

	// No API server: the peers come from the cache alone.
	restarted := time.Now()
	sp2, in2, _ := l.startWith(t, ctx, cache, bgp.InstallOptions{Keep: true, SweepStale: true})
	if got := sp2.PeerConfigs(); !slices.EqualFunc(got, []bgp.PeerConfig{birdP, frrP}, bgp.PeerConfig.Equal) {
		t.Fatalf("peers from the cache %+v, want %+v", got, []bgp.PeerConfig{birdP, frrP})
	}
	l.bird.WaitEstablished(t, "node", waitLong)
	routerd.Eventually(t, waitLong, "BIRD's End-of-RIB counted, FRR awaited", func() error {
		st := sp2.GracefulRestartState()
		if !slices.Equal(st.Waiting, []netip.Addr{frrP.Address}) || st.RestartTime != restart {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	if err := l.bgpRoute(frrGood, "10.0.2.1")(); err != nil {
		t.Fatalf("FRR's route went before End-of-RIB or the restart time (%s after the restart): %v", time.Since(restarted), err)
	}
	if rep := in2.Report(); !rep.StaleWaiting || !strings.Contains(rep.Stale, "10.0.2.1") {
		t.Fatalf("report while keeping stale routes: %+v", rep)
	}
	routerd.Eventually(t, waitLong, "FRR's stale route goes after the restart time", func() error {
		if err := l.noBGPRoute(frrGood); err != nil {
			return err
		}
		return nil
	})
	if took := time.Since(restarted); took < restart {
		t.Fatalf("stale route swept %s after the restart, before the restart time %s", took, restart)
	} else {
		t.Logf("stale route swept %s after the restart (restart time %s)", took.Round(100*time.Millisecond), restart)
	}
	if err := l.bgpRoute(birdGood, "10.0.1.1")(); err != nil {
		t.Fatalf("BIRD's re-announced route was swept: %v", err)
	}
	for _, p := range []string{birdLAN, frrLAN} {
		if err := l.connectedSurvives(p); err != nil {
			t.Error(err)
		}
	}
	if rep := in2.Report(); rep.StaleWaiting || !strings.Contains(rep.Stale, "graceful-restart time") {
		t.Fatalf("report after the sweep: %+v", rep)
	}
}

// TestIntegrationRestartEndOfRIBSweepsStale: while the node's agent is
// down, FRR stops announcing one prefix. The restarted speaker (peers from
// the cache, no API server) keeps the old kernel route until BIRD and FRR
// have both sent End-of-RIB, then removes just that one, long before the
// restart time.
func TestIntegrationRestartEndOfRIBSweepsStale(t *testing.T) {
	l := newTrustLab(t)
	ctx := context.Background()
	const restart = 90 * time.Second
	birdP, frrP := l.birdP, l.frrP
	birdP.GracefulRestart, birdP.RestartTime = true, restart
	frrP.RestartTime = restart
	sp, _, stop := l.startWith(t, ctx, "", bgp.InstallOptions{Keep: true, SweepStale: true}, birdP, frrP)
	l.bird.WaitEstablished(t, "node", waitLong)
	l.frr.WaitEstablished(t, "10.0.2.2", waitLong)
	gone := filler(frrBlock)[0]
	routerd.Eventually(t, waitLong, "FRR's filler installed", l.bgpRoute(gone, "10.0.2.1"))
	cache := filepath.Join(t.TempDir(), peersync.CacheFile)
	if err := peersync.SaveCache(cache, sp.PeerConfigs()); err != nil {
		t.Fatal(err)
	}
	stop()
	if out, err := exec.Command("vtysh", "--vty_socket", l.frr.Dir, "-c", "configure terminal", "-c", fmt.Sprintf("router bgp %d", frrASN),
		"-c", "address-family ipv4 unicast", "-c", "no network "+gone).CombinedOutput(); err != nil {
		t.Fatalf("withdraw %s on FRR: %v: %s", gone, err, out)
	}
	restarted := time.Now()
	sp2, in2, _ := l.startWith(t, ctx, cache, bgp.InstallOptions{Keep: true, SweepStale: true})
	if err := l.bgpRoute(gone, "10.0.2.1")(); err != nil {
		t.Fatalf("the route was removed before any End-of-RIB: %v", err)
	}
	routerd.Eventually(t, waitLong, "End-of-RIB from both peers", func() error {
		if st := sp2.GracefulRestartState(); len(st.Waiting) != 0 {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	routerd.Eventually(t, waitLong, "the prefix FRR no longer announces goes", func() error { return l.noBGPRoute(gone) })
	took := time.Since(restarted)
	if took >= restart {
		t.Fatalf("swept after %s: the restart time, not End-of-RIB", took)
	}
	t.Logf("stale route swept %s after the restart, on End-of-RIB (restart time %s)", took.Round(100*time.Millisecond), restart)
	for _, c := range []struct{ p, gw string }{{birdGood, "10.0.1.1"}, {frrGood, "10.0.2.1"}, {filler(frrBlock)[1], "10.0.2.1"}} {
		if err := l.bgpRoute(c.p, c.gw)(); err != nil {
			t.Errorf("a route still announced was swept: %v", err)
		}
	}
	if rep := in2.Report(); rep.StaleWaiting || !strings.Contains(rep.Stale, "End-of-RIB") || !strings.Contains(rep.Stale, "removed 1 stale routes") {
		t.Fatalf("report after the sweep: %+v", rep)
	}
}
