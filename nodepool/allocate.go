package nodepool

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/strata-net/strata/internal/apis/strata/v1alpha1"
)

// DefaultNodeMaskSize is the block size when a pool leaves nodeMaskSize
// unset (the CRD defaults it too).
const DefaultNodeMaskSize = 24

// Allocator hands out pod CIDR blocks of NodePools. The API server is the
// arbiter: a block is held by exactly one PodCIDRClaim, whose name is
// derived from the pool and the block, so two nodes creating the same
// claim cannot both succeed. There is no node-local state: a node that
// restarts finds its claim (or its Node.spec.podCIDR) again.
type Allocator struct {
	Kube kubernetes.Interface
	Dyn  dynamic.Interface
	// EventNamespace is where Events about Nodes go (default "default",
	// where kubectl describe node finds them).
	EventNamespace string
	Logger         *slog.Logger
}

// ErrExhausted is wrapped by the error of a pool with no free block.
var ErrExhausted = errors.New("pool has no free pod CIDR block")

func (a *Allocator) log() *slog.Logger {
	if a.Logger == nil {
		return slog.Default()
	}
	return a.Logger
}

// Ensure returns node's pod CIDR, taking a block of pool when the Node has
// none: the block in Node.spec.podCIDR when set (by kube-controller-manager,
// an operator, or this allocator earlier), else the block the node's claim
// holds, else a newly claimed free block. The block is written into the
// Node's spec.podCIDR and spec.podCIDRs, so everything downstream
// (kube-proxy, the agents' ownership checks) sees one allocation. An
// exhausted pool is an error wrapping ErrExhausted, reported as a condition
// on the NodePool and an Event on the Node; the caller retries.
func (a *Allocator) Ensure(ctx context.Context, node *corev1.Node, pool *v1alpha1.NodePool) (netip.Prefix, error) {
	if node.Spec.PodCIDR != "" {
		p, err := netip.ParsePrefix(node.Spec.PodCIDR)
		if err != nil || p != p.Masked() {
			return netip.Prefix{}, fmt.Errorf("Node %s spec.podCIDR %q is not a canonical CIDR: fix it (it can only be set once: re-register the Node)", node.Name, node.Spec.PodCIDR)
		}
		return p, nil
	}
	bits := pool.Spec.NodeMaskSize
	if bits == 0 {
		bits = DefaultNodeMaskSize
	}
	blocks, err := NewBlocks(pool.Spec.PodCIDRs, bits)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("NodePool %s: %w", pool.Name, err)
	}
	claims, nodes, err := a.snapshot(ctx)
	if err != nil {
		return netip.Prefix{}, err
	}
	// A node that restarts (or crashed between claiming and writing its
	// spec) finds its claim and keeps the block.
	for _, c := range claims {
		if c.Spec.Pool == pool.Name && c.Spec.NodeName == node.Name && c.Spec.NodeUID == string(node.UID) {
			block, err := netip.ParsePrefix(c.Spec.CIDR)
			if err != nil {
				continue
			}
			return a.finish(ctx, node, pool, block, c.Name)
		}
	}
	if n := a.sweep(ctx, claims, nodes); n > 0 {
		claims, nodes, err = a.snapshot(ctx)
		if err != nil {
			return netip.Prefix{}, err
		}
	}
	occ, _ := occupancy(blocks, pool.Name, claims, nodes)
	total := blocks.Total()
	start := Start(node.Name, total)
	for k := range total {
		i := (start + k) % total
		if occ.has(i) {
			continue
		}
		block := blocks.Block(i)
		name, err := a.create(ctx, node, pool.Name, block)
		if apierrors.IsAlreadyExists(err) {
			occ.add(i, i+1) // another node won it
			continue
		}
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("claim pod CIDR block %s of NodePool %s: %w", block, pool.Name, err)
		}
		// Between the snapshot and the claim, another Node may have got
		// an overlapping spec.podCIDR, or another pool an overlapping block.
		if why, err := a.conflict(ctx, node, pool.Name, block, name); err != nil {
			return netip.Prefix{}, err
		} else if why != "" {
			a.log().Info("claimed block overlaps another allocation; trying the next", "block", block, "why", why)
			a.release(ctx, name)
			occ.add(i, i+1)
			continue
		}
		return a.finish(ctx, node, pool, block, name)
	}
	msg := fmt.Sprintf("node %s needs a /%d pod CIDR block and NodePool %s has none free (%d blocks in %v, all held by its nodes or overlapping other Nodes' spec.podCIDR or other pools): add a range to spec.podCIDRs, or delete Nodes that left",
		node.Name, bits, pool.Name, total, pool.Spec.PodCIDRs)
	a.refreshStatus(ctx, pool.Name, msg)
	a.Event(ctx, node, corev1.EventTypeWarning, v1alpha1.ConditionPodCIDRsExhausted, msg)
	return netip.Prefix{}, fmt.Errorf("%s: %w", msg, ErrExhausted)
}

// finish writes block into the Node's spec (when still empty) and the
// pool's status. If the spec was set meanwhile by someone else, that value
// wins and the claim goes.
func (a *Allocator) finish(ctx context.Context, node *corev1.Node, pool *v1alpha1.NodePool, block netip.Prefix, claim string) (netip.Prefix, error) {
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"podCIDR": block.String(), "podCIDRs": []string{block.String()}}})
	_, err := a.Kube.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "strata-agent"})
	if err != nil {
		cur, gerr := a.Kube.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if gerr != nil || cur.Spec.PodCIDR == "" {
			return netip.Prefix{}, fmt.Errorf("write pod CIDR %s into Node %s spec.podCIDR: %w (the claim %s keeps the block; the next start retries)", block, node.Name, err, claim)
		}
		if cur.Spec.PodCIDR != block.String() {
			a.log().Info("Node spec.podCIDR was set by someone else (kube-controller-manager?): using it and releasing the claim", "podCIDR", cur.Spec.PodCIDR, "claim", claim)
			a.release(ctx, claim)
			a.refreshStatus(ctx, pool.Name, "")
			return a.Ensure(ctx, cur, pool)
		}
	}
	a.log().Info("pod CIDR from NodePool", "pool", pool.Name, "cidr", block, "claim", claim)
	a.refreshStatus(ctx, pool.Name, "")
	return block, nil
}

// snapshot lists every claim, then every Node. The order matters: a Node
// exists before its agent claims anything, so a claim without a Node in the
// later list is stale, never merely new.
func (a *Allocator) snapshot(ctx context.Context) ([]v1alpha1.PodCIDRClaim, []corev1.Node, error) {
	claims, err := a.claims(ctx)
	if err != nil {
		return nil, nil, err
	}
	nl, err := a.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("list Nodes (to skip blocks other Nodes hold): %w", err)
	}
	return claims, nl.Items, nil
}

func (a *Allocator) claims(ctx context.Context) ([]v1alpha1.PodCIDRClaim, error) {
	l, err := a.Dyn.Resource(v1alpha1.PodCIDRClaimsGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list PodCIDRClaims (is deploy/manifests/crds-pool applied?): %w", err)
	}
	out := make([]v1alpha1.PodCIDRClaim, 0, len(l.Items))
	for i := range l.Items {
		var c v1alpha1.PodCIDRClaim
		if err := v1alpha1.Decode(&l.Items[i], &c); err != nil {
			a.log().Warn("unreadable PodCIDRClaim skipped", "err", err)
			continue
		}
		out = append(out, c)
	}
	return out, nil
}

// live says whether a claim's Node still exists with the same UID.
func live(c v1alpha1.PodCIDRClaim, uids map[string]types.UID) bool {
	uid, ok := uids[c.Spec.NodeName]
	return ok && string(uid) == c.Spec.NodeUID
}

func nodeUIDs(nodes []corev1.Node) map[string]types.UID {
	m := make(map[string]types.UID, len(nodes))
	for _, n := range nodes {
		m[n.Name] = n.UID
	}
	return m
}

// sweep deletes stale claims (their Node is gone, or was re-created under
// the same name); it returns how many went. The precondition on the claim's
// UID keeps a claim re-created meanwhile.
func (a *Allocator) sweep(ctx context.Context, claims []v1alpha1.PodCIDRClaim, nodes []corev1.Node) int {
	uids := nodeUIDs(nodes)
	n := 0
	for _, c := range claims {
		if live(c, uids) {
			continue
		}
		uid := c.UID
		err := a.Dyn.Resource(v1alpha1.PodCIDRClaimsGVR).Delete(ctx, c.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err == nil || apierrors.IsNotFound(err) {
			a.log().Info("stale PodCIDRClaim deleted: its Node is gone", "claim", c.Name, "node", c.Spec.NodeName, "cidr", c.Spec.CIDR)
			n++
		} else if !apierrors.IsConflict(err) {
			a.log().Warn("cannot delete stale PodCIDRClaim", "claim", c.Name, "err", err)
		}
	}
	return n
}

// occupancy is the set of pool's blocks that cannot be handed out: those
// its live claims hold, and those overlapping another Node's spec.podCIDRs
// or another pool's live claim. allocated counts the pool's live claims.
func occupancy(blocks *Blocks, pool string, claims []v1alpha1.PodCIDRClaim, nodes []corev1.Node) (occ *blockSet, allocated int) {
	occ = &blockSet{}
	uids := nodeUIDs(nodes)
	for _, n := range nodes {
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		for _, s := range cidrs {
			if p, err := netip.ParsePrefix(s); err == nil {
				for _, r := range blocks.Overlapping(p.Masked()) {
					occ.add(r[0], r[1])
				}
			}
		}
	}
	for _, c := range claims {
		p, err := netip.ParsePrefix(c.Spec.CIDR)
		if err != nil || !live(c, uids) {
			continue
		}
		if c.Spec.Pool == pool {
			allocated++
		}
		for _, r := range blocks.Overlapping(p.Masked()) {
			occ.add(r[0], r[1])
		}
	}
	return occ, allocated
}

func (a *Allocator) create(ctx context.Context, node *corev1.Node, pool string, block netip.Prefix) (string, error) {
	c := &v1alpha1.PodCIDRClaim{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.Group + "/" + v1alpha1.Version, Kind: "PodCIDRClaim"},
		ObjectMeta: metav1.ObjectMeta{Name: ClaimName(pool, block), Labels: map[string]string{v1alpha1.LabelClaimPool: pool},
			// The garbage collector (kube-controller-manager) deletes the
			// claim with its Node; without one, sweep does.
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}},
		Spec: v1alpha1.PodCIDRClaimSpec{Pool: pool, CIDR: block.String(), NodeName: node.Name, NodeUID: string(node.UID)},
	}
	u, err := v1alpha1.Encode(c)
	if err != nil {
		return "", err
	}
	_, err = a.Dyn.Resource(v1alpha1.PodCIDRClaimsGVR).Create(ctx, u, metav1.CreateOptions{FieldManager: "strata-agent"})
	return c.Name, err
}

// conflict re-reads the other allocations after a claim was created. A
// block overlapping another Node's spec.podCIDR always yields; between
// overlapping claims of two pools, the older claim keeps its block.
func (a *Allocator) conflict(ctx context.Context, node *corev1.Node, pool string, block netip.Prefix, name string) (string, error) {
	claims, nodes, err := a.snapshot(ctx)
	if err != nil {
		return "", err
	}
	for _, n := range nodes {
		if n.Name == node.Name {
			continue
		}
		for _, s := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
			if p, err := netip.ParsePrefix(s); err == nil && p.Overlaps(block) {
				return fmt.Sprintf("Node %s spec.podCIDR %s", n.Name, p), nil
			}
		}
	}
	var mine *v1alpha1.PodCIDRClaim
	for i := range claims {
		if claims[i].Name == name {
			mine = &claims[i]
		}
	}
	if mine == nil {
		return "claim vanished", nil
	}
	uids := nodeUIDs(nodes)
	for _, c := range claims {
		p, err := netip.ParsePrefix(c.Spec.CIDR)
		if err != nil || c.Name == name || !live(c, uids) || !p.Overlaps(block) {
			continue
		}
		if older(c, *mine) {
			return fmt.Sprintf("PodCIDRClaim %s (NodePool %s) %s", c.Name, c.Spec.Pool, p), nil
		}
	}
	return "", nil
}

func older(a, b v1alpha1.PodCIDRClaim) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return cmp.Less(a.Name, b.Name)
}

func (a *Allocator) release(ctx context.Context, claim string) {
	if err := a.Dyn.Resource(v1alpha1.PodCIDRClaimsGVR).Delete(ctx, claim, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		a.log().Warn("cannot release PodCIDRClaim; the next allocation from the pool sweeps it only once its Node is gone", "claim", claim, "err", err)
	}
}

// refreshStatus recomputes the pool's block accounting from a fresh list
// and writes it, conditional on the pool's resourceVersion: of agents
// writing at once, the last successful write saw every claim created
// before it. PodCIDRsExhausted is True while no block is free (with the
// message exhausted of the node refused, when there is one), False once
// one is. Best effort.
func (a *Allocator) refreshStatus(ctx context.Context, poolName, exhausted string) {
	var last error
	for try := range 10 {
		if try > 0 {
			time.Sleep(time.Duration(20+rand.IntN(80*try)) * time.Millisecond)
		}
		u, err := a.Dyn.Resource(v1alpha1.NodePoolsGVR).Get(ctx, poolName, metav1.GetOptions{})
		if err != nil {
			last = err
			continue
		}
		var pool v1alpha1.NodePool
		if err := v1alpha1.Decode(u, &pool); err != nil {
			last = err
			break
		}
		bits := cmp.Or(pool.Spec.NodeMaskSize, DefaultNodeMaskSize)
		blocks, err := NewBlocks(pool.Spec.PodCIDRs, bits)
		if err != nil {
			last = err
			break
		}
		claims, nodes, err := a.snapshot(ctx)
		if err != nil {
			last = err
			continue
		}
		occ, allocated := occupancy(blocks, poolName, claims, nodes)
		st := pool.Status
		st.TotalBlocks, st.AllocatedBlocks = int64(blocks.Total()), int64(allocated)
		st.FreeBlocks = int64(blocks.Total() - occ.size())
		if st.FreeBlocks == 0 {
			msg := cmp.Or(exhausted, fmt.Sprintf("all %d blocks of %v are held: the next node of the pool gets none; add a range to spec.podCIDRs, or delete Nodes that left", st.TotalBlocks, pool.Spec.PodCIDRs))
			meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionPodCIDRsExhausted, Status: metav1.ConditionTrue,
				Reason: v1alpha1.ReasonNoFreeBlock, Message: msg, ObservedGeneration: pool.Generation})
		} else {
			meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionPodCIDRsExhausted, Status: metav1.ConditionFalse,
				Reason: v1alpha1.ReasonBlocksFree, Message: fmt.Sprintf("%d of %d blocks free", st.FreeBlocks, st.TotalBlocks), ObservedGeneration: pool.Generation})
		}
		if err := unstructuredSetStatus(u, st); err != nil {
			last = err
			break
		}
		_, err = a.Dyn.Resource(v1alpha1.NodePoolsGVR).UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: "strata-agent"})
		if err == nil {
			return
		}
		last = err
		if !apierrors.IsConflict(err) {
			break
		}
	}
	a.log().Warn("cannot update NodePool status; the next allocation from the pool retries", "pool", poolName, "err", last)
}

func unstructuredSetStatus(u interface{ UnstructuredContent() map[string]any }, st v1alpha1.NodePoolStatus) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	u.UnstructuredContent()["status"] = m
	return nil
}

// Event records an Event about node (best effort: the log has it too).
func (a *Allocator) Event(ctx context.Context, node *corev1.Node, typ, reason, msg string) {
	ns := cmp.Or(a.EventNamespace, metav1.NamespaceDefault)
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", node.Name, time.Now().UnixNano()), Namespace: ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: node.Name, UID: node.UID, APIVersion: "v1"},
		Reason:         reason, Message: msg, Type: typ,
		Source:         corev1.EventSource{Component: "strata-agent", Host: node.Name},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if _, err := a.Kube.CoreV1().Events(ns).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		a.log().Warn("cannot record Event on the Node", "reason", reason, "err", err)
	}
}

// Sweep deletes stale claims (their Node is gone) and refreshes pool's
// status, so a deleted Node's block is free and counted free at once
// rather than at the next allocation.
func (a *Allocator) Sweep(ctx context.Context, pool string) error {
	claims, nodes, err := a.snapshot(ctx)
	if err != nil {
		return err
	}
	a.sweep(ctx, claims, nodes)
	a.refreshStatus(ctx, pool, "")
	return nil
}

// Pool reads a NodePool.
func (a *Allocator) Pool(ctx context.Context, name string) (*v1alpha1.NodePool, error) {
	u, err := a.Dyn.Resource(v1alpha1.NodePoolsGVR).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var p v1alpha1.NodePool
	if err := v1alpha1.Decode(u, &p); err != nil {
		return nil, err
	}
	return &p, nil
}
