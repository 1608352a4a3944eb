//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/strata-net/strata/tests/lab"
	"github.com/strata-net/strata/topology"
)

// hijackers are Nodes that claim what is not theirs, as a compromised or
// misconfigured node's agent would publish it (docs/trust.md). Each must be
// isolated by every agent, alone, while every real pair keeps working.
var hijackers = []struct {
	name     string
	labels   map[string]string
	ann      map[string]string
	wantCode []string // any of these isolation codes
}{
	{ // a more-specific of edge-a1's 10.244.1.0/24, with no allocation behind it
		name:   "evil-more-specific",
		labels: map[string]string{topology.LabelLocation: "idc", topology.LabelPool: "idc-a", topology.LabelInterconnect: "leased-line"},
		ann: map[string]string{topology.AnnotationUnderlayIPs: "192.168.10.201", topology.AnnotationPodCIDR: "10.244.1.0/25",
			topology.AnnotationProbeIP: "10.244.1.1", topology.AnnotationVTEPMAC: "02:aa:00:00:00:01", topology.AnnotationVTEPPort: "4789"},
		wantCode: []string{string(topology.IsolationUnauthorized), string(topology.IsolationOverlap)},
	},
	{ // half the internet
		name:   "evil-half-internet",
		labels: map[string]string{topology.LabelLocation: "ens", topology.LabelPool: "site-b", topology.LabelInterconnect: "internet"},
		ann: map[string]string{topology.AnnotationUnderlayIPs: "192.168.30.202", topology.AnnotationPodCIDR: "0.0.0.0/1",
			topology.AnnotationProbeIP: "10.0.0.1", topology.AnnotationVTEPMAC: "02:aa:00:00:00:02", topology.AnnotationVTEPPort: "4789"},
		wantCode: []string{string(topology.IsolationTooBroad)},
	},
	{ // the IDC LAN, i.e. the underlay itself
		name:   "evil-underlay",
		labels: map[string]string{topology.LabelLocation: "idc", topology.LabelPool: "idc-a", topology.LabelInterconnect: "leased-line"},
		ann: map[string]string{topology.AnnotationUnderlayIPs: "192.168.10.203", topology.AnnotationPodCIDR: "192.168.10.0/24",
			topology.AnnotationProbeIP: "192.168.10.1", topology.AnnotationVTEPMAC: "02:aa:00:00:00:03", topology.AnnotationVTEPPort: "4789"},
		wantCode: []string{string(topology.IsolationUnderlay)},
	},
}

// hijackSubtest: Nodes that claim another node's pods, 0.0.0.0/1 or the
// underlay are isolated on every agent (status names them with the code),
// every real pair stays reachable, and deleting them clears the refusal.
func hijackSubtest(t *testing.T, l *lab.Lab, nodes []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kc, err := l.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hijackers {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: h.name, Labels: h.labels, Annotations: h.ann}}
		if _, err := kc.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create hijacker %s: %v", h.name, err)
		}
	}
	t.Cleanup(func() {
		for _, h := range hijackers {
			_ = kc.CoreV1().Nodes().Delete(context.Background(), h.name, metav1.DeleteOptions{})
		}
	})

	// Every agent refuses every hijacker with the expected code.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var missing []string
		for _, node := range nodes {
			refused, err := l.RefusedClaims(ctx, node)
			if err != nil {
				missing = append(missing, fmt.Sprintf("%s: %v", node, err))
				continue
			}
			for _, h := range hijackers {
				i := slices.IndexFunc(refused, func(r lab.Refused) bool { return r.Node == h.name })
				if i < 0 || !slices.Contains(h.wantCode, refused[i].Code) {
					got := "accepted"
					if i >= 0 {
						got = refused[i].Code + ": " + refused[i].Reason
					}
					missing = append(missing, fmt.Sprintf("%s sees %s as %s, want isolated (%s)", node, h.name, got, strings.Join(h.wantCode, " or ")))
				}
			}
			for _, r := range refused {
				if !strings.HasPrefix(r.Node, "evil-") {
					missing = append(missing, fmt.Sprintf("%s refuses the real node %s (%s: %s)", node, r.Node, r.Code, r.Reason))
				}
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hijackers not isolated after 60s:\n%s", strings.Join(missing, "\n"))
		}
		time.Sleep(time.Second)
	}
	// Nothing of theirs reached a kernel (Strata's routes: vxlan, native,
	// wan), and the real pairs still work.
	for _, node := range nodes {
		argv := l.NodeNS(node).Exec("ip", "-4", "route", "show", "table", "all")
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			ours := strings.Contains(line, "proto 201") || strings.Contains(line, "proto 205") || strings.Contains(line, "proto 206")
			if !ours {
				continue
			}
			for _, bad := range []string{"10.244.1.0/25 ", "0.0.0.0/1 ", "192.168.10.0/24 ", "192.168.10.201", "192.168.30.202", "192.168.10.203"} {
				if strings.HasPrefix(line, bad) || strings.Contains(line, "via "+bad) {
					t.Errorf("%s routes a hijacker's claim %q: %s", node, strings.TrimSpace(bad), line)
				}
			}
		}
	}
	matrixOK(t, l)

	// Deleted, they are forgotten.
	for _, h := range hijackers {
		if err := kc.CoreV1().Nodes().Delete(ctx, h.name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline = time.Now().Add(30 * time.Second)
	for _, node := range nodes {
		for {
			refused, err := l.RefusedClaims(ctx, node)
			if err == nil && len(refused) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still refuses %v after the hijackers were deleted (err %v)", node, refused, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
}

// nodesOf lists the nodes the pods run on, once each.
func nodesOf(pods []lab.PodInfo) []string {
	var out []string
	for _, p := range pods {
		if !slices.Contains(out, p.Node) {
			out = append(out, p.Node)
		}
	}
	return out
}
