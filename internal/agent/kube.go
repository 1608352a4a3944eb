package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/strata-net/strata/internal/apis/strata/v1alpha1"
	"github.com/strata-net/strata/topology"
)

// nodeInfo is what the agent needs of its Node; it is cached on disk so a
// restart while the API server is down still knows who it is.
type nodeInfo struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	PodCIDR     string            `json:"podCIDR,omitempty"`
	// Pool is the node's NodePool profile (nodepool.go), for offline starts.
	Pool *v1alpha1.NodePoolSpec `json:"pool,omitempty"`
	// PodCIDRs and Created are the node's own ownership authority
	// (spec.podCIDRs, creationTimestamp).
	PodCIDRs []string  `json:"podCIDRs,omitempty"`
	Created  time.Time `json:"created,omitzero"`
	obj      *corev1.Node
	cached   bool // read from the cache: the API server was unreachable
}

func (a *Agent) cachePath() string { return filepath.Join(a.cfg.StateDir, "node.json") }

// loadNode reads this node from the API server, within APITimeout, and
// refreshes the cache; past the timeout it falls back to the cache.
func (a *Agent) loadNode(ctx context.Context) (nodeInfo, error) {
	cs, err := a.client()
	if err != nil {
		return nodeInfo{}, err
	}
	a.kube = cs
	deadline := time.Now().Add(a.cfg.APITimeout)
	var last error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := cs.CoreV1().Nodes().Get(rctx, a.cfg.NodeName, metav1.GetOptions{})
		cancel()
		if err == nil {
			info := nodeInfo{Labels: n.Labels, Annotations: n.Annotations, PodCIDR: n.Spec.PodCIDR, obj: n, Created: n.CreationTimestamp.Time}
			for _, p := range nodeAllocation(n) {
				info.PodCIDRs = append(info.PodCIDRs, p.String())
			}
			if b, err := json.Marshal(info); err == nil {
				_ = os.WriteFile(a.cachePath(), b, 0o600)
			}
			return info, nil
		}
		last = err
		time.Sleep(time.Second)
	}
	b, err := os.ReadFile(a.cachePath())
	if err != nil {
		return nodeInfo{}, fmt.Errorf("read Node %s from the API server: %v; and no cached facts in %s: check --kubeconfig and that the Node exists", a.cfg.NodeName, last, a.cachePath())
	}
	var info nodeInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nodeInfo{}, fmt.Errorf("cached node facts %s are corrupt (delete the file to re-read them): %w", a.cachePath(), err)
	}
	a.log.Warn("API server unreachable: running from cached node facts", "err", last, "cache", a.cachePath())
	info.cached = true
	return info, nil
}

func (a *Agent) client() (*kubernetes.Clientset, error) {
	var cfg *rest.Config
	var err error
	if a.cfg.Kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", a.cfg.Kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config (set --kubeconfig, or run in a pod): %w", err)
	}
	cfg.UserAgent = "strata-agent/" + a.cfg.NodeName
	a.rest = cfg
	return kubernetes.NewForConfig(cfg)
}

// publish writes this node's facts as annotations (best effort: gossip
// carries them too while the API server is away).
func (a *Agent) publish(ctx context.Context, dp topology.Datapath) {
	if a.kube == nil {
		return
	}
	_, facts := topology.Format(a.self)
	ann := make(map[string]any, len(facts)+1)
	for k, v := range facts {
		ann[k] = v
	}
	if dp != "" {
		ann[topology.AnnotationDatapath] = string(dp)
	}
	if a.self.WANPublicKey == "" {
		ann[topology.AnnotationWANPublicKey] = nil // WAN off: withdraw an earlier run's key
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := a.kube.CoreV1().Nodes().Patch(rctx, a.cfg.NodeName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		a.log.Warn("publish node facts to the API server failed; gossip still carries them", "err", err)
	}
}

// watchNodes feeds every Node's labels and annotations to the decider, and
// returns once the first list is queued (or after APITimeout).
func (a *Agent) watchNodes(ctx context.Context) {
	f := informers.NewSharedInformerFactory(a.kube, 10*time.Minute)
	inf := f.Core().V1().Nodes().Informer()
	upsert := func(obj any) {
		n, ok := obj.(*corev1.Node)
		if !ok || n.Name == a.self.Name {
			return
		}
		a.apiNodes.Add(n.Name)
		ann := n.Annotations
		if n.Spec.PodCIDR != "" && ann[topology.AnnotationPodCIDR] == "" {
			ann = copyWith(ann, topology.AnnotationPodCIDR, n.Spec.PodCIDR)
		}
		alloc, joined := nodeAllocation(n), n.CreationTimestamp.Time
		a.post(func() {
			// The authority first: the claims in the annotations are
			// checked against it.
			a.decider.SetNodeAuthority(n.Name, alloc, joined)
			if _, err := a.decider.UpsertNodeMeta(n.Name, a.peerLabels(n), ann); err != nil {
				a.log.Warn("node facts rejected; its last good facts stay", "peer", n.Name, "err", err)
				a.m.badFacts.Inc()
			}
		})
	}
	handler, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    upsert,
		UpdateFunc: func(_, obj any) { upsert(obj) },
		DeleteFunc: func(obj any) {
			var node *corev1.Node
			switch n := obj.(type) {
			case *corev1.Node:
				node = n
			case cache.DeletedFinalStateUnknown: // the delete was missed while the watch was down
				node, _ = n.Obj.(*corev1.Node)
			}
			if node != nil && node.Name != a.self.Name {
				name := node.Name
				a.post(func() { a.forgetNode(name) })
				go a.poolNodeGone(ctx, node, inf.GetStore().List())
			}
		},
	})
	if err != nil {
		a.log.Error("node watch not started", "err", err)
		return
	}
	f.Start(ctx.Done())
	wctx, cancel := context.WithTimeout(ctx, a.cfg.APITimeout)
	defer cancel()
	// The handler's HasSynced, not the informer's: the informer is synced
	// once its store holds the list, before the handler has seen it, and a
	// first programming without those peers would remove their routes (a
	// restarted agent dropped packets).
	if !cache.WaitForCacheSync(wctx.Done(), handler.HasSynced) {
		a.log.Warn("node list not synced yet; starting from what is known")
	}
}

// watchNodesWhenReachable starts the node watch once the API server answers
// (the agent started from its cache).
func (a *Agent) watchNodesWhenReachable(ctx context.Context) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := a.kube.CoreV1().Nodes().Get(rctx, a.cfg.NodeName, metav1.GetOptions{})
		cancel()
		if err == nil {
			a.log.Info("API server reachable again")
			a.offline.Store(false)
			a.watchNodes(ctx)
			return
		}
		time.Sleep(5 * time.Second)
	}
}

func (a *Agent) peersPath() string { return filepath.Join(a.cfg.StateDir, "peers.json") }

// savePeers caches every node's facts, so a restart while the API server is
// away reprograms the same peers instead of tearing the overlay down.
func (a *Agent) savePeers(plan *topology.Plan) {
	var facts []topology.NodeFacts
	for _, n := range plan.Nodes() {
		if n.Name != a.self.Name {
			facts = append(facts, n.Facts)
		}
	}
	b, err := json.Marshal(facts)
	if err != nil {
		return
	}
	tmp := a.peersPath() + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		_ = os.Rename(tmp, a.peersPath())
	}
	if err := a.saveAuthority(); err != nil {
		a.log.Warn("ownership authority not cached; a restart without the API server refuses the peers it covered", "err", err)
	}
}

func (a *Agent) loadCachedPeers() {
	b, err := os.ReadFile(a.peersPath())
	if err != nil {
		return
	}
	var facts []topology.NodeFacts
	if json.Unmarshal(b, &facts) != nil {
		a.log.Warn("cached peers unreadable; waiting for the API server", "file", a.peersPath())
		return
	}
	auth, err := a.loadAuthority()
	if err != nil {
		a.log.Error("cached ownership authority unreadable: cached peers without it are refused until the API server answers", "err", err)
	}
	for _, f := range facts {
		a.cachedNodes.Add(f.Name)
		a.decider.SetNodeAuthority(f.Name, auth.Allocations[f.Name], auth.Joined[f.Name])
		if _, err := a.decider.UpsertNode(f); err != nil {
			a.log.Warn("cached peer facts rejected", "peer", f.Name, "err", err)
		}
	}
}

func copyWith(m map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for kk, vv := range m {
		out[kk] = vv
	}
	out[k] = v
	return out
}

func (a *Agent) capabilitiesPath() string { return filepath.Join(a.cfg.StateDir, "capabilities.json") }

func (a *Agent) saveCapabilities(c topology.Capabilities) {
	if b, err := json.Marshal(c); err == nil {
		_ = os.WriteFile(a.capabilitiesPath(), b, 0o600)
	}
}

func (a *Agent) loadCapabilities() topology.Capabilities {
	var c topology.Capabilities
	if b, err := os.ReadFile(a.capabilitiesPath()); err == nil {
		_ = json.Unmarshal(b, &c)
	}
	return c
}
