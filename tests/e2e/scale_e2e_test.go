//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/strata-net/strata/tests/lab"
)

// hundredPodsSubtest: a cloud node with 100 pods, on each pool kind
// (cloud-1 single secondary IPs, cloud-2 /28 prefixes), restarts its agent
// after kill -9: it starts (facts fit gossip: issue 15 §1), its pods keep
// their addresses' reachability from every other kind of node, and their
// DEL leaves the accounting exact.
func hundredPodsSubtest(t *testing.T, l *lab.Lab, pods []lab.PodInfo) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	for _, node := range []string{"cloud-1", "cloud-2"} {
		t.Run(node, func(t *testing.T) {
			have := 0
			for _, p := range pods {
				if p.Node == node {
					have++
				}
			}
			extra, err := l.AddPods(node, 100-have)
			t.Cleanup(func() {
				if err := l.DeletePods(extra); err != nil {
					t.Errorf("delete the extra pods: %v", err)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			l.KillAgent(node)
			if err := l.StartAgent(ctx, node); err != nil {
				t.Fatalf("agent of %s with 100 pods does not restart: %v", node, err)
			}
			last := extra[len(extra)-1]
			for _, from := range []string{"edge-a1", "edge-b1", otherCloud(node)} {
				src := podOn(t, pods, from)
				deadline := time.Now().Add(30 * time.Second)
				for {
					lost, err := l.Ping(ctx, src, last.IP, 3, 100*time.Millisecond)
					if err == nil && lost == 0 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s/%s → %s's 100th pod %s after its agent restarted: %d%% lost (%v)", src.Node, src.Name, node, last.IP, lost, err)
					}
					time.Sleep(time.Second)
				}
			}
		})
	}
}

func otherCloud(node string) string {
	if node == "cloud-1" {
		return "cloud-2"
	}
	return "cloud-1"
}
