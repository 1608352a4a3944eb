//go:build integration

package nodepool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/strata-net/strata/internal/apis/strata/v1alpha1"
	"github.com/strata-net/strata/tests/harness/apiserver"
)

type world struct {
	t    *testing.T
	env  *apiserver.Env
	kube kubernetes.Interface
	dyn  dynamic.Interface
}

func newWorld(t *testing.T) *world {
	env := apiserver.Start(t, apiserver.Options{CRDDirs: []string{"../deploy/manifests/crds-pool"}})
	return &world{t: t, env: env, kube: env.Clientset, dyn: dynamic.NewForConfigOrDie(env.Config)}
}

// agent is one node's allocator with its own clients at client-go's default
// rate limits, as each strata-agent has.
func (w *world) agent(name string) *Allocator {
	cfg := *w.env.Config
	cfg.UserAgent = "strata-agent/" + name
	return &Allocator{Kube: kubernetes.NewForConfigOrDie(&cfg), Dyn: dynamic.NewForConfigOrDie(&cfg),
		Logger: slog.Default().With("node", name)}
}

func (w *world) pool(ctx context.Context, name string, cidrs []string, bits int) *v1alpha1.NodePool {
	w.t.Helper()
	cs := make([]any, len(cidrs))
	for i, c := range cidrs {
		cs[i] = c
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "strata.io/v1alpha1", "kind": "NodePool",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"location": "idc", "interconnect": "internet", "podCIDRs": cs, "nodeMaskSize": int64(bits)}}}
	if _, err := w.dyn.Resource(v1alpha1.NodePoolsGVR).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		w.t.Fatalf("create NodePool %s: %v", name, err)
	}
	return w.getPool(ctx, name)
}

func (w *world) getPool(ctx context.Context, name string) *v1alpha1.NodePool {
	w.t.Helper()
	p, err := (&Allocator{Dyn: w.dyn}).Pool(ctx, name)
	if err != nil {
		w.t.Fatal(err)
	}
	return p
}

func (w *world) node(ctx context.Context, name, pool, podCIDR string) *corev1.Node {
	w.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"strata.io/pool": pool}}}
	if podCIDR != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = podCIDR, []string{podCIDR}
	}
	n, err := w.kube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		w.t.Fatalf("create Node %s: %v", name, err)
	}
	return n
}

func (w *world) getNode(ctx context.Context, name string) *corev1.Node {
	w.t.Helper()
	n, err := w.kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	return n
}

func exhausted(p *v1alpha1.NodePool) *metav1.Condition {
	return meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionPodCIDRsExhausted)
}

// TestIntegrationPoolAllocation runs the allocator against a real
// kube-apiserver and etcd.
func TestIntegrationPoolAllocation(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// 50 nodes join one pool of 64 blocks at once; a Node outside the pool
	// already holds one of its blocks. Every node gets a distinct block, none
	// the held one, and each block is in the Node's spec.
	t.Run("50 nodes join concurrently", func(t *testing.T) {
		pool := w.pool(ctx, "edge", []string{"10.244.0.0/18"}, 24)
		w.node(ctx, "legacy", "", "10.244.5.0/24")
		nodes := make([]*corev1.Node, 50)
		for i := range nodes {
			nodes[i] = w.node(ctx, fmt.Sprintf("edge-%02d", i), "edge", "")
		}
		got := make([]netip.Prefix, len(nodes))
		errs := make([]error, len(nodes))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, n := range nodes {
			wg.Go(func() {
				<-start
				got[i], errs[i] = w.agent(n.Name).Ensure(ctx, n, pool)
			})
		}
		t0 := time.Now()
		close(start)
		wg.Wait()
		t.Logf("50 concurrent allocations took %s", time.Since(t0).Round(time.Millisecond))
		seen := map[netip.Prefix]string{}
		for i, n := range nodes {
			if errs[i] != nil {
				t.Fatalf("%s: %v", n.Name, errs[i])
			}
			if other, dup := seen[got[i]]; dup {
				t.Errorf("%s and %s both got %s", other, n.Name, got[i])
			}
			seen[got[i]] = n.Name
			if got[i] == netip.MustParsePrefix("10.244.5.0/24") {
				t.Errorf("%s got 10.244.5.0/24, which Node legacy's spec.podCIDR holds", n.Name)
			}
			if !netip.MustParsePrefix("10.244.0.0/18").Contains(got[i].Addr()) || got[i].Bits() != 24 {
				t.Errorf("%s got %s, not a /24 of the pool", n.Name, got[i])
			}
			if spec := w.getNode(ctx, n.Name).Spec; spec.PodCIDR != got[i].String() || len(spec.PodCIDRs) != 1 || spec.PodCIDRs[0] != got[i].String() {
				t.Errorf("%s: spec.podCIDR %q podCIDRs %v, want %s", n.Name, spec.PodCIDR, spec.PodCIDRs, got[i])
			}
		}
		claims, err := w.agent("check").claims(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(claims) != 50 {
			t.Errorf("%d claims, want 50", len(claims))
		}
		for _, c := range claims {
			if seen[netip.MustParsePrefix(c.Spec.CIDR)] != c.Spec.NodeName {
				t.Errorf("claim %s says %s holds %s; the node got something else", c.Name, c.Spec.NodeName, c.Spec.CIDR)
			}
		}
		p := w.getPool(ctx, "edge")
		if st := p.Status; st.TotalBlocks != 64 || st.AllocatedBlocks != 50 || st.FreeBlocks != 13 {
			t.Errorf("status total %d allocated %d free %d, want 64, 50, 13 (one block is legacy's)", st.TotalBlocks, st.AllocatedBlocks, st.FreeBlocks)
		}
		if c := exhausted(p); c == nil || c.Status != metav1.ConditionFalse {
			t.Errorf("pool with free blocks: condition %+v, want PodCIDRsExhausted=False", c)
		}

		// A restart (a fresh read of the Node) keeps the block.
		again, err := w.agent("edge-07").Ensure(ctx, w.getNode(ctx, "edge-07"), pool)
		if err != nil || again != got[7] {
			t.Errorf("edge-07 after a restart: %v, %v; want %s", again, err, got[7])
		}
	})

	// A node that crashed after claiming, before writing its spec, gets the
	// same block at its next start, and the spec is written then.
	t.Run("crash between claim and spec keeps the block", func(t *testing.T) {
		pool := w.pool(ctx, "crash", []string{"10.247.0.0/16"}, 24)
		n := w.node(ctx, "crash-1", "crash", "")
		a := w.agent(n.Name)
		want := netip.MustParsePrefix("10.247.200.0/24")
		if _, err := a.create(ctx, n, "crash", want); err != nil {
			t.Fatal(err)
		}
		got, err := a.Ensure(ctx, w.getNode(ctx, n.Name), pool)
		if err != nil || got != want {
			t.Fatalf("restart after a crash: %v, %v; want its claim's %s", got, err, want)
		}
		if w.getNode(ctx, n.Name).Spec.PodCIDR != want.String() {
			t.Error("spec.podCIDR not written after the restart")
		}
	})

	// A pool of two blocks: the first is held by another Node's
	// spec.podCIDR, so the first node gets the second and the next node
	// finds the pool exhausted (condition + Event). Deleting the Node that
	// holds a block frees it for the waiting node.
	t.Run("skip held block, exhaustion, deletion frees", func(t *testing.T) {
		pool := w.pool(ctx, "tiny", []string{"10.250.0.0/24"}, 25)
		w.node(ctx, "tiny-legacy", "", "10.250.0.0/25")
		a := w.node(ctx, "tiny-a", "tiny", "")
		got, err := w.agent("tiny-a").Ensure(ctx, a, pool)
		if err != nil || got != netip.MustParsePrefix("10.250.0.128/25") {
			t.Fatalf("tiny-a: %v, %v; want the block nobody holds, 10.250.0.128/25", got, err)
		}
		b := w.node(ctx, "tiny-b", "tiny", "")
		_, err = w.agent("tiny-b").Ensure(ctx, b, pool)
		if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "spec.podCIDRs") {
			t.Fatalf("tiny-b on a full pool: %v, want ErrExhausted with the fix", err)
		}
		p := w.getPool(ctx, "tiny")
		if c := exhausted(p); c == nil || c.Status != metav1.ConditionTrue || c.Reason != v1alpha1.ReasonNoFreeBlock || !strings.Contains(c.Message, "tiny-b") {
			t.Errorf("exhausted pool condition: %+v", c)
		}
		if st := p.Status; st.TotalBlocks != 2 || st.AllocatedBlocks != 1 || st.FreeBlocks != 0 {
			t.Errorf("full pool status %+v", st)
		}
		evs, err := w.kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=tiny-b"})
		if err != nil || len(evs.Items) == 0 || evs.Items[0].Reason != v1alpha1.ConditionPodCIDRsExhausted || evs.Items[0].Type != corev1.EventTypeWarning {
			t.Errorf("no PodCIDRsExhausted Warning on Node tiny-b: %v %+v", err, evs)
		}

		if err := w.kube.CoreV1().Nodes().Delete(ctx, "tiny-a", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// The agent of a remaining node sweeps when it sees the deletion:
		// the block is free in the status at once.
		if err := w.agent("tiny-legacy").Sweep(ctx, "tiny"); err != nil {
			t.Fatal(err)
		}
		if st := w.getPool(ctx, "tiny").Status; st.AllocatedBlocks != 0 || st.FreeBlocks != 1 || exhausted(w.getPool(ctx, "tiny")).Status != metav1.ConditionFalse {
			t.Errorf("status after tiny-a's deletion and a sweep: %+v", st)
		}
		got, err = w.agent("tiny-b").Ensure(ctx, w.getNode(ctx, "tiny-b"), pool)
		if err != nil || got != netip.MustParsePrefix("10.250.0.128/25") {
			t.Fatalf("tiny-b after tiny-a left: %v, %v; want tiny-a's freed block", got, err)
		}
		if _, err := w.dyn.Resource(v1alpha1.PodCIDRClaimsGVR).Get(ctx, ClaimName("tiny", got), metav1.GetOptions{}); err != nil {
			t.Errorf("tiny-b's claim: %v", err)
		}
		p = w.getPool(ctx, "tiny")
		if c := exhausted(p); c == nil || c.Status != metav1.ConditionTrue || strings.Contains(c.Message, "tiny-b") {
			// Full again (tiny-b took the last block): still exhausted, but
			// no longer for tiny-b.
			t.Errorf("condition after the refill: %+v", c)
		}
		if st := p.Status; st.AllocatedBlocks != 1 || st.FreeBlocks != 0 {
			t.Errorf("status after the refill %+v", st)
		}
	})

	// Two pools whose ranges overlap: a block another pool's node holds is
	// never handed out.
	t.Run("block held by another pool is skipped", func(t *testing.T) {
		small := w.pool(ctx, "ov-b", []string{"10.252.0.0/25"}, 25)
		big := w.pool(ctx, "ov-a", []string{"10.252.0.0/24"}, 25)
		b := w.node(ctx, "ov-b-1", "ov-b", "")
		if got, err := w.agent("ov-b-1").Ensure(ctx, b, small); err != nil || got != netip.MustParsePrefix("10.252.0.0/25") {
			t.Fatalf("ov-b-1: %v, %v", got, err)
		}
		for i, want := range []string{"10.252.0.128/25", ""} {
			n := w.node(ctx, fmt.Sprintf("ov-a-%d", i), "ov-a", "")
			got, err := w.agent(n.Name).Ensure(ctx, n, big)
			if want == "" {
				if !errors.Is(err, ErrExhausted) {
					t.Errorf("%s: %v, %v; want exhausted (the other block is ov-b's)", n.Name, got, err)
				}
			} else if err != nil || got.String() != want {
				t.Errorf("%s: %v, %v; want %s", n.Name, got, err, want)
			}
		}
		if st := w.getPool(ctx, "ov-a").Status; st.TotalBlocks != 2 || st.AllocatedBlocks != 1 || st.FreeBlocks != 0 {
			t.Errorf("ov-a status %+v, want 2 blocks, 1 its own, none free", st)
		}
	})

	// A Node re-created under the same name is another node: the old claim
	// is stale (other UID) and does not pass to it by name alone.
	t.Run("re-created node does not inherit by name", func(t *testing.T) {
		pool := w.pool(ctx, "reuse", []string{"10.251.0.0/24"}, 24)
		n := w.node(ctx, "reuse-1", "reuse", "")
		if _, err := w.agent("reuse-1").Ensure(ctx, n, pool); err != nil {
			t.Fatal(err)
		}
		if err := w.kube.CoreV1().Nodes().Delete(ctx, "reuse-1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		n2 := w.node(ctx, "reuse-1", "reuse", "")
		got, err := w.agent("reuse-1").Ensure(ctx, n2, pool)
		if err != nil || got != netip.MustParsePrefix("10.251.0.0/24") {
			t.Fatalf("re-created node: %v, %v", got, err)
		}
		c, err := w.dyn.Resource(v1alpha1.PodCIDRClaimsGVR).Get(ctx, ClaimName("reuse", got), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var claim v1alpha1.PodCIDRClaim
		_ = v1alpha1.Decode(c, &claim)
		if claim.Spec.NodeUID != string(n2.UID) {
			t.Errorf("claim holds UID %s, want the new Node's %s", claim.Spec.NodeUID, n2.UID)
		}
	})

	// The schema refuses a claim whose name does not follow its block, so
	// one block cannot be claimed twice under two names.
	t.Run("claim name must follow the block", func(t *testing.T) {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "strata.io/v1alpha1", "kind": "PodCIDRClaim",
			"metadata": map[string]any{"name": "edge-other-name"},
			"spec":     map[string]any{"pool": "edge", "cidr": "10.244.9.0/24", "nodeName": "x", "nodeUID": "u"}}}
		_, err := w.dyn.Resource(v1alpha1.PodCIDRClaimsGVR).Create(ctx, u, metav1.CreateOptions{})
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "metadata.name must be spec.pool") {
			t.Errorf("misnamed claim: %v, want Invalid", err)
		}
	})
}
