package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/strata-net/strata/bgp"
	"github.com/strata-net/strata/internal/rtproto"
	"github.com/strata-net/strata/tests/harness/netlab"
	"github.com/strata-net/strata/tests/harness/routerd"
)

// The bgp area: announcing 10k and 100k prefixes from the embedded speaker
// until BIRD's RIB and kernel hold them all (batched stream vs one AddPath
// per prefix), and installing 100k learned routes into the kernel (batched
// netlink vs `ip -batch`).
func init() {
	Register(Area{Name: "bgp", Run: runBGP})
}

func runBGP(ctx context.Context, log io.Writer) ([]Result, error) {
	var out []Result
	var errs []error
	if r, err := bgpInstallBench(ctx, log); err != nil {
		errs = append(errs, fmt.Errorf("route install: %w", err))
	} else {
		out = append(out, r)
	}
	for _, c := range []struct {
		id     string
		n      int
		target string
	}{
		{"bgp.announce_10k_bird_s", 10000, "<= 0.5"},
		{"bgp.announce_100k_bird_s", 100000, "<= 3"},
	} {
		// Three interleaved rounds each; the machine is shared and noisy.
		var strataRuns, baseRuns []float64
		var runErr error
		for round := 0; round < 3 && runErr == nil; round++ {
			v, err := bgpAnnounce(ctx, log, c.n, false)
			if err != nil {
				runErr = err
				break
			}
			strataRuns = append(strataRuns, v)
			b, err := bgpAnnounce(ctx, log, c.n, true)
			if err != nil {
				runErr = fmt.Errorf("baseline: %w", err)
				break
			}
			baseRuns = append(baseRuns, b)
		}
		if runErr != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.id, runErr))
			continue
		}
		strata, base := bgpMedian(strataRuns), bgpMedian(baseRuns)
		out = append(out, New(c.id, round3(strata), "s", c.target,
			fmt.Sprintf("%d prefixes until BIRD's RIB and kernel count them, median of 3: stream %.3f s, one AddPath per prefix %.3f s; rounds stream %v, AddPath %v",
				c.n, strata, base, round3All(strataRuns), round3All(baseRuns))).
			WithBaseline("gobgp v3 one AddPath per prefix", round3(base)))
	}
	return out, errors.Join(errs...)
}

func round3All(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = round3(x)
	}
	return out
}

func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

func bgpMedian(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// bgpPrefixes returns n distinct /30s in 172.16.0.0/12.
func bgpPrefixes(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range out {
		v := uint32(172)<<24 | uint32(16)<<16 + uint32(i)*4
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 30)
	}
	return out
}

const installN = 100000

func bgpInstallBench(ctx context.Context, log io.Writer) (Result, error) {
	lab, err := netlab.Build(netlab.Spec{
		Hosts: []netlab.Host{{Name: "bgpi-node"}, {Name: "bgpi-peer"}},
		Links: []netlab.Link{{A: netlab.Port{Host: "bgpi-node", Ifname: "eth0", Addr: "10.0.1.2/30"}, B: netlab.Port{Host: "bgpi-peer", Ifname: "eth0", Addr: "10.0.1.1/30"}}},
	})
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = lab.Close() }()
	ns := lab.NS("bgpi-node")
	gw := netip.MustParseAddr("10.0.1.1")
	prefixes := bgpPrefixes(installN)
	routes := make([]bgp.Route, len(prefixes))
	for i, p := range prefixes {
		routes[i] = bgp.Route{Prefix: p, NextHops: []netip.Addr{gw}}
	}
	batch, err := os.CreateTemp("", "strata-bgp-batch-")
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = os.Remove(batch.Name()) }()
	var sb strings.Builder
	for _, p := range prefixes {
		fmt.Fprintf(&sb, "route replace %s via %s proto %d\n", p, gw, rtproto.BGP)
	}
	if _, err := batch.WriteString(sb.String()); err != nil {
		return Result{}, err
	}
	if err := batch.Close(); err != nil {
		return Result{}, err
	}

	inst, err := bgp.NewInstaller(ns.Path, 0)
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = inst.Close() }()
	count := func() (int, error) {
		rs, err := routerd.KernelRoutes(ns, rtproto.BGP)
		return len(rs), err
	}
	flush := func() error {
		out, err := exec.CommandContext(ctx, "ip", "-n", ns.Name, "route", "flush", "proto", fmt.Sprint(int(rtproto.BGP))).CombinedOutput()
		if err != nil {
			return fmt.Errorf("flush: %w: %s", err, out)
		}
		return nil
	}
	var strata, base []float64
	for round := 0; round < 3; round++ {
		start := time.Now()
		if err := inst.Apply(routes); err != nil {
			return Result{}, err
		}
		el := time.Since(start)
		if n, err := count(); err != nil || n != installN {
			return Result{}, fmt.Errorf("installer: %d routes in the kernel, want %d (%v)", n, installN, err)
		}
		strata = append(strata, float64(installN)/el.Seconds())
		if err := flush(); err != nil {
			return Result{}, err
		}

		start = time.Now()
		if out, err := exec.CommandContext(ctx, "ip", "-n", ns.Name, "-batch", batch.Name()).CombinedOutput(); err != nil {
			return Result{}, fmt.Errorf("ip -batch: %w: %s", err, out)
		}
		el = time.Since(start)
		if n, err := count(); err != nil || n != installN {
			return Result{}, fmt.Errorf("ip -batch: %d routes in the kernel, want %d (%v)", n, installN, err)
		}
		base = append(base, float64(installN)/el.Seconds())
		if err := flush(); err != nil {
			return Result{}, err
		}
		fmt.Fprintf(log, "    install round %d: strata %.0f routes/s, ip -batch %.0f routes/s\n", round, strata[round], base[round])
	}
	s, b := bgpMedian(strata), bgpMedian(base)
	return New("bgp.route_install_per_s", float64(int64(s)), "routes/s", ">= 100000",
		fmt.Sprintf("%d /30 routes, median of 3: batched netlink %.0f/s (%.2fx ip -batch), ip -batch %.0f/s; rounds strata %v, ip -batch %v",
			installN, s, s/b, b, roundInts(strata), roundInts(base))).
		WithBaseline("ip -batch of the same routes", float64(int64(b))), nil
}

func roundInts(xs []float64) []int64 {
	out := make([]int64, len(xs))
	for i, x := range xs {
		out[i] = int64(x)
	}
	return out
}

// bgpAnnounce builds a fresh node+BIRD pair, announces n prefixes and returns
// the seconds until BIRD's RIB and kernel table hold all of them.
func bgpAnnounce(ctx context.Context, log io.Writer, n int, oneByOne bool) (float64, error) {
	lab, err := netlab.Build(netlab.Spec{
		Hosts: []netlab.Host{{Name: "bgpa-node"}, {Name: "bgpa-bird"}},
		Links: []netlab.Link{{A: netlab.Port{Host: "bgpa-node", Ifname: "eth0", Addr: "10.0.1.2/30"}, B: netlab.Port{Host: "bgpa-bird", Ifname: "eth0", Addr: "10.0.1.1/30"}}},
	})
	if err != nil {
		return 0, err
	}
	defer func() { _ = lab.Close() }()
	bird, err := routerd.LaunchBIRD(lab.NS("bgpa-bird"), routerd.BIRDConfig{
		RouterID: "10.0.1.1", ASN: 65010, Kernel: true,
		Neighbors: []routerd.Neighbor{{Name: "node", Address: "10.0.1.2", Port: 1790, ASN: 65011}},
	})
	if bird != nil {
		defer bird.Close()
	}
	if err != nil {
		return 0, err
	}
	sp, err := bgp.New(bgp.Config{RouterID: netip.MustParseAddr("10.0.1.2"), ASN: 65011, ListenPort: 1790, NetNS: lab.NS("bgpa-node").Path},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return 0, err
	}
	if err := sp.Start(ctx); err != nil {
		return 0, err
	}
	defer func() { _ = sp.Stop(context.Background(), bgp.StopCease) }()
	if err := sp.AddPeer(ctx, bgp.PeerConfig{Address: netip.MustParseAddr("10.0.1.1"), ASN: 65010, Passive: true}); err != nil {
		return 0, err
	}
	if err := routerd.Wait(ctx, 60*time.Second, func() error {
		st, _, err := bird.ProtocolState("node")
		if err != nil {
			return err
		}
		if st != "Established" {
			return fmt.Errorf("bird session %s", st)
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("session never came up: %w\n%s", err, bird.Log())
	}
	// Count BIRD's kernel routes from the kernel's notifications, drained
	// without waiting on the socket: dumping the table while BIRD writes it,
	// or a listener woken by every route, would slow the load measured.
	counter, err := routerd.CountRoutes(bird.NS, routerd.BIRDKernelProto, 5*time.Millisecond)
	if err != nil {
		return 0, err
	}
	defer counter.Close()
	ads := make([]bgp.Advertisement, n)
	for i, p := range bgpPrefixes(n) {
		ads[i] = bgp.Advertisement{Prefix: p}
	}
	start := time.Now()
	if oneByOne {
		err = sp.AdvertiseEach(ctx, ads...)
	} else {
		err = sp.Advertise(ctx, ads...)
	}
	if err != nil {
		return 0, err
	}
	sent := time.Since(start)
	done, err := counter.Wait(ctx, n, 120*time.Second)
	if err != nil {
		return 0, err
	}
	total := done.Sub(start)
	// BIRD exports to the kernel only routes its RIB holds, and nothing is
	// withdrawn here, so the RIB held all n when the kernel did. Both counts
	// are checked once more, after the clock stopped.
	if c, err := bird.RouteCount(); err != nil || c < n {
		return 0, fmt.Errorf("BIRD RIB has %d of %d routes after its kernel table had them all (%v)", c, n, err)
	}
	if rs, err := routerd.KernelRoutes(bird.NS, routerd.BIRDKernelProto); err != nil || len(rs) != n {
		return 0, fmt.Errorf("BIRD's kernel table dump has %d of %d routes (%v)", len(rs), n, err)
	}
	mode := "stream"
	if oneByOne {
		mode = "AddPath each"
	}
	how := ""
	if lost := counter.Lost(); lost != nil {
		how = fmt.Sprintf(" (counted by dumps: %v)", lost)
	}
	fmt.Fprintf(log, "    announce %d (%s): sent %.3f s, in BIRD's RIB and kernel %.3f s%s\n", n, mode, sent.Seconds(), total.Seconds(), how)
	return total.Seconds(), nil
}
