package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/strata-net/strata/internal/apis/strata/v1alpha1"
	"github.com/strata-net/strata/nodepool"
	"github.com/strata-net/strata/topology"
)

// poolRetry is how often a node of an exhausted pool asks again.
const poolRetry = 30 * time.Second

// applyPool applies the node's NodePool (named by its strata.io/pool label)
// before anything reads the node's facts: location and interconnect where
// the labels omit them (a contradiction refuses the node), the VXLAN VNI
// and port by the precedence annotation > flag > pool > default, and a pod
// CIDR block when the pool has podCIDRs and Node.spec.podCIDR is empty.
// Offline, the pool cached at the last online start is used.
func (a *Agent) applyPool(ctx context.Context, node *nodeInfo) error {
	name := node.Labels[topology.LabelPool]
	var alloc *nodepool.Allocator
	var pool *v1alpha1.NodePool
	var dyn dynamic.Interface
	if !node.cached && a.rest != nil {
		var err error
		if dyn, err = dynamic.NewForConfig(a.rest); err != nil {
			return err
		}
		a.loadPools(ctx, dyn)
	}
	if dyn != nil && name != "" {
		var err error
		alloc = &nodepool.Allocator{Kube: a.kube, Dyn: dyn, Logger: a.log.With("component", "nodepool")}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		pool, err = alloc.Pool(rctx, name)
		cancel()
		switch {
		case apierrors.IsNotFound(err):
			a.log.Info("no NodePool named by the node's strata.io/pool label: labels and flags only", "pool", name)
			pool = nil
		case err != nil:
			a.log.Warn("cannot read the node's NodePool; using the one cached at the last start", "pool", name, "err", err)
			pool = nil
			if node.Pool != nil {
				pool = &v1alpha1.NodePool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: *node.Pool}
			}
			alloc = nil
		}
	} else if node.Pool != nil && name != "" {
		pool = &v1alpha1.NodePool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: *node.Pool}
	}
	var spec *v1alpha1.NodePoolSpec
	if pool != nil {
		spec = &pool.Spec
	}
	labels, err := nodepool.EffectiveLabels(a.cfg.NodeName, node.Labels, name, spec)
	if err != nil {
		if alloc != nil && node.obj != nil {
			alloc.Event(ctx, node.obj, corev1.EventTypeWarning, "NodePoolMismatch", err.Error())
		}
		return err
	}
	profile, err := nodepool.ProfileOf(node.Annotations, spec)
	if err != nil {
		return fmt.Errorf("node %s: %w", a.cfg.NodeName, err)
	}
	eff := profile.Resolve(nodepool.Settings{VNI: a.cfg.VNI, Port: a.cfg.VXLANPort})
	a.cfg.VNI, a.cfg.VXLANPort, a.profile = eff.VNI, eff.Port, profile
	if spec != nil && spec.VXLAN != nil {
		a.overlayMTU = spec.VXLAN.MTU
	}
	node.Labels, node.Pool = labels, spec

	if pool != nil && len(pool.Spec.PodCIDRs) > 0 && alloc != nil {
		a.poolAlloc, a.poolName = alloc, name
	}
	if node.PodCIDR == "" && pool != nil && len(pool.Spec.PodCIDRs) > 0 && alloc != nil && node.obj != nil {
		cidr, err := a.poolCIDR(ctx, alloc, node.obj, pool)
		if err != nil {
			return err
		}
		node.PodCIDR, node.PodCIDRs = cidr, []string{cidr}
		node.obj.Spec.PodCIDR, node.obj.Spec.PodCIDRs = cidr, []string{cidr}
	}
	if !node.cached {
		if b, err := json.Marshal(node); err == nil {
			_ = os.WriteFile(a.cachePath(), b, 0o600)
		}
	}
	return nil
}

// poolCIDR gets the node's block, waiting while the pool is exhausted
// (the NodePool's condition, an Event on the Node and
// strata_nodepool_exhausted say so) and retrying other failures.
func (a *Agent) poolCIDR(ctx context.Context, alloc *nodepool.Allocator, node *corev1.Node, pool *v1alpha1.NodePool) (string, error) {
	waiting := prometheus.NewGauge(prometheus.GaugeOpts{Name: "strata_nodepool_exhausted",
		Help: "1 while this node waits for a pod CIDR block of its exhausted NodePool."})
	_ = a.reg.Register(waiting)
	for fails := 0; ; fails++ {
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		cidr, err := alloc.Ensure(rctx, node, pool)
		cancel()
		if err == nil {
			waiting.Set(0)
			return cidr.String(), nil
		}
		if errors.Is(err, nodepool.ErrExhausted) {
			waiting.Set(1)
		} else if fails >= 4 {
			return "", fmt.Errorf("pod CIDR from NodePool %s: %w", pool.Name, err)
		}
		a.log.Error("no pod CIDR from the NodePool yet; retrying", "pool", pool.Name, "err", err, "retry", poolRetry)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(poolRetry):
		}
		if p, err := alloc.Pool(ctx, pool.Name); err == nil {
			pool = p // a range may have been added
		}
	}
}

// poolSpecs are every NodePool's spec, read at start: peers whose labels
// omit location or interconnect take them from their pool, as they do.
type poolSpecs struct {
	mu sync.Mutex
	m  map[string]v1alpha1.NodePoolSpec
}

func (a *Agent) loadPools(ctx context.Context, dyn dynamic.Interface) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l, err := dyn.Resource(v1alpha1.NodePoolsGVR).List(rctx, metav1.ListOptions{})
	if err != nil {
		a.log.Warn("cannot list NodePools: peers' labels are taken as they are", "err", err)
		return
	}
	m := map[string]v1alpha1.NodePoolSpec{}
	for i := range l.Items {
		var p v1alpha1.NodePool
		if v1alpha1.Decode(&l.Items[i], &p) == nil {
			m[p.Name] = p.Spec
		}
	}
	a.pools.mu.Lock()
	a.pools.m = m
	a.pools.mu.Unlock()
}

// peerLabels fills a peer's location and interconnect from its NodePool;
// a peer whose labels contradict its pool keeps its labels (its own agent
// refuses to start and says why).
func (a *Agent) peerLabels(n *corev1.Node) map[string]string {
	name := n.Labels[topology.LabelPool]
	a.pools.mu.Lock()
	spec, ok := a.pools.m[name]
	a.pools.mu.Unlock()
	if !ok {
		return n.Labels
	}
	labels, err := nodepool.EffectiveLabels(n.Name, n.Labels, name, &spec)
	if err != nil {
		return n.Labels
	}
	return labels
}

// poolPodMTU caps the pod MTU at the NodePool's overlay MTU (vxlan.mtu):
// pods must fit through the overlay after a failover.
func (a *Agent) poolPodMTU(mtu int) int {
	if a.overlayMTU > 0 {
		return min(mtu, a.overlayMTU)
	}
	return mtu
}

// poolNodeGone runs when a Node is deleted. If it was in this node's pool,
// the pool's live node with the smallest name sweeps its claim and
// refreshes the pool's status: one writer, chosen without a lease, since
// every agent of the pool picks the same node from its Node list.
func (a *Agent) poolNodeGone(ctx context.Context, gone *corev1.Node, live []any) {
	if a.poolAlloc == nil || !sweeper(a.cfg.NodeName, a.poolName, gone, live) {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := a.poolAlloc.Sweep(rctx, a.poolName); err != nil {
		a.log.Warn("cannot sweep the claim of a deleted Node; the next allocation from the pool does", "node", gone.Name, "err", err)
	}
}

// sweeper says whether self is the node that sweeps after gone: gone was
// in pool, and self is the pool's remaining node with the smallest name.
func sweeper(self, pool string, gone *corev1.Node, live []any) bool {
	if gone.Labels[topology.LabelPool] != pool {
		return false
	}
	for _, o := range live {
		if n, ok := o.(*corev1.Node); ok && n.Name != gone.Name && n.Name < self && n.Labels[topology.LabelPool] == pool {
			return false
		}
	}
	return true
}
