//go:build privileged

package bgp_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/strata-net/strata/bgp"
	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/harness/netlab"
	"github.com/strata-net/strata/tests/harness/routerd"
)

// feed is a route source the test drives: the installer and the kernel are
// real, the BGP side is the test's.
type feed struct {
	mu      sync.Mutex
	routes  map[netip.Prefix]bgp.Route
	subs    []func([]bgp.Route)
	restart bgp.RestartState
}

func newFeed() *feed { return &feed{routes: map[netip.Prefix]bgp.Route{}} }

func (f *feed) Watch(ctx context.Context, fn func([]bgp.Route)) {
	f.mu.Lock()
	f.subs = append(f.subs, fn)
	snap := f.learnedLocked()
	f.mu.Unlock()
	if len(snap) > 0 {
		fn(snap)
	}
}

func (f *feed) learnedLocked() []bgp.Route {
	out := make([]bgp.Route, 0, len(f.routes))
	for _, r := range f.routes {
		out = append(out, r)
	}
	return out
}

func (f *feed) Learned() []bgp.Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.learnedLocked()
}

func (f *feed) GracefulRestartState() bgp.RestartState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restart
}

func (f *feed) set(rs ...bgp.Route) {
	f.mu.Lock()
	for _, r := range rs {
		if len(r.NextHops) == 0 {
			delete(f.routes, r.Prefix)
		} else {
			f.routes[r.Prefix] = r
		}
	}
	subs := slices.Clone(f.subs)
	f.mu.Unlock()
	for _, fn := range subs {
		fn(rs)
	}
}

func (f *feed) setRestart(st bgp.RestartState) {
	f.mu.Lock()
	f.restart = st
	f.mu.Unlock()
}

func runInstaller(t *testing.T, src bgp.RouteSource, in *bgp.Installer, opts bgp.InstallOptions) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = bgp.RunInstaller(ctx, src, in, opts)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// TestPrivilegedInstallFailureRetried: a learned route the kernel refuses
// (its next hop is unreachable) shows in the report with the kernel's error
// and keeps being retried with backoff; once the next hop becomes
// reachable, the route holds without any new BGP update.
func TestPrivilegedInstallFailureRetried(t *testing.T) {
	testutil.RequireRoot(t)
	lab := netlab.New(t, netlab.Spec{
		Hosts: []netlab.Host{{Name: "rnode"}, {Name: "rgw"}},
		Links: []netlab.Link{{A: netlab.Port{Host: "rnode", Ifname: "gw", Addr: "10.0.1.2/30"}, B: netlab.Port{Host: "rgw", Ifname: "n", Addr: "10.0.1.1/30"}}},
	})
	ns := lab.NS("rnode")
	in, err := bgp.NewInstaller(ns.Path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	src := newFeed()
	runInstaller(t, src, in, bgp.InstallOptions{Backoff: wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Steps: 10, Cap: 400 * time.Millisecond}})

	good, bad := netip.MustParsePrefix("10.98.0.0/24"), netip.MustParsePrefix("10.99.0.0/24")
	far := netip.MustParseAddr("10.0.9.1")
	src.set(bgp.Route{Prefix: good, NextHops: []netip.Addr{netip.MustParseAddr("10.0.1.1")}}, bgp.Route{Prefix: bad, NextHops: []netip.Addr{far}})

	routerd.Eventually(t, 10*time.Second, "the refused route shows in the report and is retried", func() error {
		r := in.Report()
		if len(r.Failing) != 1 || r.Failing[0].Prefix != bad || !strings.Contains(r.Failing[0].Error, "network is unreachable") {
			return fmt.Errorf("report %+v", r)
		}
		if r.Failing[0].Attempts < 3 || r.ErrorsTotal < 3 {
			return fmt.Errorf("only %d attempts, %d errors", r.Failing[0].Attempts, r.ErrorsTotal)
		}
		return nil
	})
	if r, err := routerd.KernelRoute(ns, good); err != nil || r == nil {
		t.Fatalf("one refused route kept the good one out: %v %v", r, err)
	}
	// The next hop becomes reachable: the retry installs the route.
	if err := ns.Do(func() error {
		l, err := netlink.LinkByName("gw")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr("10.0.9.2/24")
		return netlink.AddrAdd(l, a)
	}); err != nil {
		t.Fatal(err)
	}
	routerd.Eventually(t, 10*time.Second, "the route holds after a retry", func() error {
		r, err := routerd.KernelRoute(ns, bad)
		if err != nil || r == nil {
			return fmt.Errorf("not installed: %v", err)
		}
		if rep := in.Report(); len(rep.Failing) != 0 {
			return fmt.Errorf("still failing: %+v", rep.Failing)
		}
		return nil
	})
	// A newer change supersedes a failing retry: withdrawing a refused
	// route leaves nothing failing.
	src.set(bgp.Route{Prefix: netip.MustParsePrefix("10.97.0.0/24"), NextHops: []netip.Addr{netip.MustParseAddr("10.0.8.1")}})
	routerd.Eventually(t, 10*time.Second, "refused", func() error {
		if len(in.Report().Failing) != 1 {
			return fmt.Errorf("%+v", in.Report())
		}
		return nil
	})
	src.set(bgp.Route{Prefix: netip.MustParsePrefix("10.97.0.0/24")})
	routerd.Eventually(t, 10*time.Second, "withdrawn route no longer retried", func() error {
		if n := len(in.Report().Failing); n != 0 {
			return fmt.Errorf("%d failing", n)
		}
		return nil
	})
}

// TestPrivilegedStaleRoutesKeptUntilEndOfRIB: routes of an earlier run stay
// while a peer has not sent End-of-RIB, and go once it has; with no
// End-of-RIB they go when the restart time passes, not after a fixed 10 s.
func TestPrivilegedStaleRoutesKeptUntilEndOfRIB(t *testing.T) {
	testutil.RequireRoot(t)
	lab := netlab.New(t, netlab.Spec{
		Hosts: []netlab.Host{{Name: "snode"}, {Name: "sgw"}},
		Links: []netlab.Link{{A: netlab.Port{Host: "snode", Ifname: "gw", Addr: "10.0.1.2/30"}, B: netlab.Port{Host: "sgw", Ifname: "n", Addr: "10.0.1.1/30"}}},
	})
	ns := lab.NS("snode")
	gw := []netip.Addr{netip.MustParseAddr("10.0.1.1")}
	stale, fresh := netip.MustParsePrefix("10.96.0.0/24"), netip.MustParsePrefix("10.95.0.0/24")
	peer := netip.MustParseAddr("10.0.1.1")
	for _, c := range []struct {
		name string
		eor  bool
	}{{"End-of-RIB", true}, {"restart time", false}} {
		t.Run(c.name, func(t *testing.T) {
			in, err := bgp.NewInstaller(ns.Path, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			// The earlier run's routes.
			if err := in.Apply([]bgp.Route{{Prefix: stale, NextHops: gw}, {Prefix: fresh, NextHops: gw}}); err != nil {
				t.Fatal(err)
			}
			src := newFeed()
			restart := 3 * time.Second
			if c.eor {
				restart = time.Hour
			}
			src.setRestart(bgp.RestartState{Peers: 1, Waiting: []netip.Addr{peer}, RestartTime: restart})
			start := time.Now()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = bgp.RunInstaller(ctx, src, in, bgp.InstallOptions{Keep: true, SweepStale: true})
			}()
			defer func() { cancel(); <-done }()
			src.set(bgp.Route{Prefix: fresh, NextHops: gw}) // the peer re-announces one of them
			time.Sleep(1500 * time.Millisecond)
			if r, _ := routerd.KernelRoute(ns, stale); r == nil {
				t.Fatal("a route of the earlier run went before End-of-RIB or the restart time")
			}
			if rep := in.Report(); !rep.StaleWaiting || !strings.Contains(rep.Stale, "10.0.1.1") {
				t.Fatalf("report while waiting: %+v", rep)
			}
			if c.eor {
				src.setRestart(bgp.RestartState{Peers: 1, RestartTime: restart})
			}
			routerd.Eventually(t, 10*time.Second, "the stale route goes", func() error {
				if r, _ := routerd.KernelRoute(ns, stale); r != nil {
					return fmt.Errorf("still there")
				}
				return nil
			})
			took := time.Since(start)
			if !c.eor && took < restart {
				t.Fatalf("swept after %s, before the restart time %s", took, restart)
			}
			if r, _ := routerd.KernelRoute(ns, fresh); r == nil {
				t.Fatal("the re-announced route was swept")
			}
			if rep := in.Report(); rep.StaleWaiting || !strings.Contains(rep.Stale, "removed 1 stale routes") {
				t.Fatalf("report after the sweep: %+v", rep)
			}
			_ = in.Flush()
		})
	}
}
