//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-net/strata/tests/lab"
)

// wantPath is DESIGN.md §1: cloud↔cloud and cloud↔edge-a native, edge-a
// among themselves native, anything with edge-b over VXLAN, or over the WAN
// when the lab has a real internet (VXLAN's private outer addresses cannot
// cross it).
func wantPath(from, to string) string { return wantPathIn(labHasInternet)(from, to) }

// labHasInternet: lab.yaml has a router marked as the internet.
var labHasInternet = func() bool {
	s, err := lab.Load(filepath.Join(repoRoot(), "tests", "lab", "lab.yaml"))
	if err != nil {
		return false
	}
	for _, r := range s.Routers {
		if r.Internet {
			return true
		}
	}
	return false
}()

func wantPathIn(inet bool) func(from, to string) string {
	across := map[bool]string{false: "vxlan", true: "wan"}[inet]
	return func(from, to string) string {
		kind := func(pod string) string {
			node := strings.Split(pod, "/")[0]
			switch {
			case strings.HasPrefix(node, "cloud"), strings.HasPrefix(node, "edge-a"):
				return "native-domain"
			default:
				return "overlay"
			}
		}
		if strings.Split(from, "/")[0] == strings.Split(to, "/")[0] {
			return "local"
		}
		if kind(from) == "native-domain" && kind(to) == "native-domain" {
			return "native"
		}
		return across
	}
}

// cloudBalanced: on every cloud node, each address ECS gave the node is a
// pod's, the warm pool's, or the node's own (its overlay/probe address).
func cloudBalanced(acc []lab.Accounting) bool {
	for _, a := range acc {
		if a.Cloud && a.CloudIPs != a.Allocations+a.PoolIdle+1 {
			return false
		}
	}
	return true
}

func podOn(t *testing.T, pods []lab.PodInfo, node string) lab.PodInfo {
	t.Helper()
	p, ok := lab.PodOn(pods, node)
	if !ok {
		t.Fatalf("no pod on %s", node)
	}
	return p
}

// pathsSettle waits until every pair has the expected path and reaches.
func pathsSettle(t *testing.T, l *lab.Lab, want func(from, to string) string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		cells := matrixOK(t, l)
		var wrong []string
		for _, c := range cells {
			if w := want(c.From, c.To); c.Path != w {
				wrong = append(wrong, fmt.Sprintf("%s→%s %s (want %s: %s)", c.From, c.To, c.Path, w, c.Reason))
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("paths differ from DESIGN.md after 90s:\n%s", strings.Join(wrong, "\n"))
		}
		time.Sleep(2 * time.Second)
	}
}

// The mixed lab: paths as designed; the leased line cut moves cloud↔edge-a
// pairs to VXLAN within a second and healing brings them back without loss;
// agents crash and restart on each node kind with traffic flowing; pod churn
// leaks nothing; an API server outage changes nothing and failover still
// works without it.
func TestE2EMixedLab(t *testing.T) {
	l := upLab(t, "lab.yaml")
	ctx := context.Background()
	pathsSettle(t, l, wantPath)
	pods, err := l.Pods()
	if err != nil {
		t.Fatal(err)
	}
	cloud, edgeA := podOn(t, pods, "cloud-1"), podOn(t, pods, "edge-a1")

	t.Run("failover", func(t *testing.T) {
		// A continuous stream, 20 ms apart, from a cloud pod to an edge-a
		// pod; the leased line is cut one second in.
		const interval = 20 * time.Millisecond
		var st lab.PingStats
		var perr error
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); st, perr = l.PingStream(ctx, cloud, edgeA.IP, 300, interval) }()
		time.Sleep(time.Second)
		if err := l.Fail("leased-line"); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if perr != nil {
			t.Fatal(perr)
		}
		outage := time.Duration(st.Lost) * interval
		t.Logf("failover: %d of %d probes lost: outage window ≈ %s", st.Lost, st.Sent, outage)
		if st.Received == 0 {
			t.Fatalf("no probe crossed after the cut: failover did not happen")
		}
		pathsSettle(t, l, func(from, to string) string {
			w := wantPath(from, to)
			cross := (strings.HasPrefix(from, "cloud") && strings.HasPrefix(to, "edge-a")) || (strings.HasPrefix(from, "edge-a") && strings.HasPrefix(to, "cloud"))
			if cross && labHasInternet {
				return "wan"
			}
			if cross {
				return "vxlan"
			}
			return w
		})
	})

	t.Run("heal", func(t *testing.T) {
		// Healing: the stream spans the line's return, BGP's convergence and
		// the hold-down; not one probe may be lost.
		var st lab.PingStats
		var perr error
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); st, perr = l.PingStream(ctx, cloud, edgeA.IP, 700, 20*time.Millisecond) }()
		time.Sleep(500 * time.Millisecond)
		if err := l.Heal("leased-line"); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if perr != nil {
			t.Fatal(perr)
		}
		t.Logf("heal: %d of %d probes lost", st.Lost, st.Sent)
		if st.Lost != 0 {
			t.Errorf("%d probes lost while healing; want 0", st.Lost)
		}
		pathsSettle(t, l, wantPath)
	})

	t.Run("agent-restart", func(t *testing.T) {
		for _, node := range []string{"cloud-2", "edge-a2", "edge-b1"} {
			dst := podOn(t, pods, node)
			var st lab.PingStats
			var perr error
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); st, perr = l.PingStream(ctx, cloud, dst.IP, 150, 20*time.Millisecond) }()
			time.Sleep(300 * time.Millisecond)
			l.KillAgent(node)
			if err := l.StartAgent(ctx, node); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			if perr != nil || st.Lost != 0 {
				t.Errorf("%s agent kill -9 + restart: %d of %d lost (%v); forwarding must not depend on the agent", node, st.Lost, st.Sent, perr)
				t.Logf("%s agent log after the restart:\n%s", node, l.AgentLogTail(node, 60))
			}
		}
		after, err := l.Pods()
		if err != nil {
			t.Fatal(err)
		}
		for i := range after {
			if after[i].IP != pods[i].IP {
				t.Errorf("pod %s/%s changed address across restarts", after[i].Node, after[i].Name)
			}
		}
		pathsSettle(t, l, wantPath)
	})

	t.Run("churn", func(t *testing.T) {
		if err := l.Churn(ctx, 100); err != nil {
			t.Fatal(err)
		}
		// The pool's maintenance may assign or release a batch between
		// reading the agent and reading the cloud: read again until both
		// agree (a leak never does).
		var acc []lab.Accounting
		for range 20 {
			var err error
			if acc, err = l.Account(ctx); err != nil {
				t.Fatal(err)
			}
			if cloudBalanced(acc) {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		for _, a := range acc {
			if a.Allocations != a.Pods || a.HostRoutes != a.Pods {
				t.Errorf("%s after 100 pods of churn: %d pods, %d IPAM allocations, %d kernel host routes: leaked", a.Node, a.Pods, a.Allocations, a.HostRoutes)
			}
			if a.Cloud && !cloudBalanced([]lab.Accounting{a}) {
				t.Errorf("%s after 100 pods of churn: the cloud assigned %d addresses, the node accounts for %d (%d pods + %d idle in the pool + 1 node address): leaked or lost",
					a.Node, a.CloudIPs, a.Allocations+a.PoolIdle+1, a.Allocations, a.PoolIdle)
			}
			if a.Cloud {
				t.Logf("%s: cloud %d = %d pods + %d idle + 1 node address", a.Node, a.CloudIPs, a.Allocations, a.PoolIdle)
			}
		}
		matrixOK(t, l)
	})

	t.Run("hijack", func(t *testing.T) { hijackSubtest(t, l, nodesOf(pods)) })

	t.Run("hundred-pods", func(t *testing.T) { hundredPodsSubtest(t, l, pods) })

	t.Run("api-server-outage", func(t *testing.T) {
		if err := l.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		restarted := false
		defer func() {
			if !restarted {
				_ = l.StartAPIServer(ctx)
			}
		}()
		// Existing pods keep talking, and a link failure still fails over
		// (gossip and probes do not need the API server).
		if err := l.Fail("leased-line"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, err := l.PingStream(ctx, cloud, edgeA.IP, 20, 50*time.Millisecond)
			if err == nil && st.Lost == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("with the API server down, cloud → edge-a after the leased line cut: %+v %v", st, err)
			}
		}
		if err := l.Heal("leased-line"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		matrixOK(t, l)
		if err := l.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		restarted = true
		pathsSettle(t, l, wantPath)
	})
}
