package deploy

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// Objects the calls below act on. The RBAC integration test creates them as
// the admin before calling as the agent.
const (
	fixtureNode      = "strata-test-node"
	fixtureOtherNode = "strata-other-node"
	fixtureAgentPod  = "strata-agent-test" // stands for the DaemonSet pod on fixtureNode
	fixturePodNS     = "default"
	fixturePod       = "strata-test-pod"
	fixtureSecret    = "strata-gossip"
	fixturePool      = "strata-test-pool"
	fixturePeer      = "strata-test-peer"
	fixtureEvent     = "strata-test-node.strata-core"
	fixtureNewEvent  = "strata-test-node.strata-new"
	eventNS          = "default" // events about cluster-scoped objects live here
)

var (
	gvrBGPPeers  = schema.GroupVersionResource{Group: "strata.io", Version: "v1alpha1", Resource: "bgppeers"}
	gvrNodePools = schema.GroupVersionResource{Group: "strata.io", Version: "v1alpha1", Resource: "nodepools"}
	gvrClaims    = schema.GroupVersionResource{Group: "strata.io", Version: "v1alpha1", Resource: "podcidrclaims"}
)

// fixtureClaim is the PodCIDRClaim of block 10.244.77.0/24 of fixturePool.
const fixtureClaim = fixturePool + "-10-244-77-0-24"

func claimFor(ctx context.Context, c callClients, node string) (*unstructured.Unstructured, error) {
	n, err := c.Kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	uid := "unknown"
	if err == nil {
		uid = string(n.UID)
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "strata.io/v1alpha1", "kind": "PodCIDRClaim",
		"metadata": map[string]any{"name": fixtureClaim, "labels": map[string]any{"strata.io/pool": fixturePool}},
		"spec":     map[string]any{"pool": fixturePool, "cidr": "10.244.77.0/24", "nodeName": node, "nodeUID": uid}}}, nil
}

// callClients are what the agent's client code uses.
type callClients struct {
	Kube kubernetes.Interface
	Dyn  dynamic.Interface
	// PeerNS is the namespace of BGPPeers ("" when cluster-scoped).
	PeerNS string
}

// agentCall is one API call strata-agent makes, in RBAC terms: why it makes
// it, and the call as the agent makes it. The calls themselves are derived
// from the agent's code (derive_test.go): TestAgentCallsTableIsDerived keeps
// this table equal to them, TestRBACIsExactlyAgentCalls the shipped RBAC,
// and TestIntegrationRBACAgentCalls runs each entry as the agent's
// ServiceAccount.
type agentCall struct {
	Group, Resource, Verb string
	// Namespace is where the grant applies: "" for cluster-wide
	// (ClusterRole), otherwise a Role in that namespace.
	Namespace string
	Why       string
	Do        func(ctx context.Context, c callClients) error
}

func watchOnce(ctx context.Context, w func(context.Context, metav1.ListOptions) (interface{ Stop() }, error)) error {
	to := int64(1)
	wi, err := w(ctx, metav1.ListOptions{TimeoutSeconds: &to, Limit: 1})
	if err != nil {
		return err
	}
	wi.Stop()
	return nil
}

var agentCalls = []agentCall{
	{Group: "", Resource: "nodes", Verb: "get", Why: "read its own Node: labels, podCIDR",
		Do: func(ctx context.Context, c callClients) error {
			_, err := c.Kube.CoreV1().Nodes().Get(ctx, fixtureNode, metav1.GetOptions{})
			return err
		}},
	{Group: "", Resource: "nodes", Verb: "list", Why: "peers' facts (annotations) at start",
		Do: func(ctx context.Context, c callClients) error {
			_, err := c.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err
		}},
	{Group: "", Resource: "nodes", Verb: "watch", Why: "peers' facts as they change (slow global channel beside gossip)",
		Do: func(ctx context.Context, c callClients) error {
			return watchOnce(ctx, func(ctx context.Context, o metav1.ListOptions) (interface{ Stop() }, error) {
				return c.Kube.CoreV1().Nodes().Watch(ctx, o)
			})
		}},
	{Group: "", Resource: "nodes", Verb: "patch", Why: "publish its facts as strata.io/ annotations",
		Do: func(ctx context.Context, c callClients) error {
			p := []byte(`{"metadata":{"annotations":{"strata.io/datapath":"bgp-underlay","strata.io/vtep-port":"4789"}}}`)
			_, err := c.Kube.CoreV1().Nodes().Patch(ctx, fixtureNode, types.MergePatchType, p, metav1.PatchOptions{FieldManager: "strata-agent"})
			return err
		}},
	{Group: "", Resource: "nodes", Verb: "patch", Why: "write its NodePool block into its own empty spec.podCIDR(s)",
		Do: func(ctx context.Context, c callClients) error {
			p := []byte(`{"spec":{"podCIDR":"10.244.77.0/24","podCIDRs":["10.244.77.0/24"]}}`)
			_, err := c.Kube.CoreV1().Nodes().Patch(ctx, fixtureNode, types.MergePatchType, p, metav1.PatchOptions{FieldManager: "strata-agent"})
			return err
		}},
	{Group: "", Resource: "pods", Verb: "get", Why: "CNI ADD: the pod's strata.io/metadata-access annotation (metadata service opt-out)",
		Do: func(ctx context.Context, c callClients) error {
			_, err := c.Kube.CoreV1().Pods(fixturePodNS).Get(ctx, fixturePod, metav1.GetOptions{})
			return err
		}},
	{Group: "", Resource: "secrets", Verb: "get", Namespace: namespace, Why: "BGP passwords, gossip key, cloud credentials",
		Do: func(ctx context.Context, c callClients) error {
			_, err := c.Kube.CoreV1().Secrets(namespace).Get(ctx, fixtureSecret, metav1.GetOptions{})
			return err
		}},
	{Group: "", Resource: "events", Verb: "create", Why: "invalid BGPPeers, pool allocations",
		Do: func(ctx context.Context, c callClients) error {
			_, err := c.Kube.CoreV1().Events(eventNS).Create(ctx, coreEvent(fixtureNewEvent), metav1.CreateOptions{})
			return err
		}},
	{Group: "strata.io", Resource: "bgppeers", Verb: "list", Why: "peers selecting this node",
		Do: func(ctx context.Context, c callClients) error {
			_, err := c.Dyn.Resource(gvrBGPPeers).List(ctx, metav1.ListOptions{})
			return err
		}},
	{Group: "strata.io", Resource: "bgppeers", Verb: "watch", Why: "reconcile peers without restarting the speaker",
		Do: func(ctx context.Context, c callClients) error {
			return watchOnce(ctx, func(ctx context.Context, o metav1.ListOptions) (interface{ Stop() }, error) {
				return c.Dyn.Resource(gvrBGPPeers).Watch(ctx, o)
			})
		}},
	{Group: "strata.io", Resource: "bgppeers/status", Verb: "update", Why: "conditions: established, invalid spec",
		Do: func(ctx context.Context, c callClients) error {
			// As peersync does: the object comes from the informer's list,
			// never from a get.
			l, err := c.Dyn.Resource(gvrBGPPeers).Namespace(c.PeerNS).List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + fixturePeer})
			if err != nil {
				return err
			}
			if len(l.Items) != 1 {
				return fmt.Errorf("list BGPPeer %s: %d items", fixturePeer, len(l.Items))
			}
			u := &l.Items[0]
			_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{
				"type": "Valid", "status": "True", "reason": "Accepted", "message": "",
				"lastTransitionTime": metav1.Now().UTC().Format(time.RFC3339)}}, "status", "conditions")
			_, err = c.Dyn.Resource(gvrBGPPeers).Namespace(c.PeerNS).UpdateStatus(ctx, u, metav1.UpdateOptions{})
			return err
		}},
	{Group: "strata.io", Resource: "nodepools", Verb: "get", Why: "its pool's profile",
		Do: func(ctx context.Context, c callClients) error {
			_, err := c.Dyn.Resource(gvrNodePools).Get(ctx, fixturePool, metav1.GetOptions{})
			return err
		}},
	{Group: "strata.io", Resource: "nodepools", Verb: "list", Why: "every pool's location and interconnect, for peers whose labels omit them",
		Do: func(ctx context.Context, c callClients) error {
			_, err := c.Dyn.Resource(gvrNodePools).List(ctx, metav1.ListOptions{})
			return err
		}},
	{Group: "strata.io", Resource: "nodepools/status", Verb: "update", Why: "block accounting and the PodCIDRsExhausted condition",
		Do: func(ctx context.Context, c callClients) error {
			u, err := c.Dyn.Resource(gvrNodePools).Get(ctx, fixturePool, metav1.GetOptions{})
			if err != nil {
				return err
			}
			_ = unstructured.SetNestedMap(u.Object, map[string]any{"totalBlocks": int64(256), "allocatedBlocks": int64(1), "freeBlocks": int64(255)}, "status")
			_, err = c.Dyn.Resource(gvrNodePools).UpdateStatus(ctx, u, metav1.UpdateOptions{})
			return err
		}},
	{Group: "strata.io", Resource: "podcidrclaims", Verb: "create", Why: "claim a pod CIDR block of its pool for its own Node",
		Do: func(ctx context.Context, c callClients) error {
			u, _ := claimFor(ctx, c, fixtureNode)
			_, err := c.Dyn.Resource(gvrClaims).Create(ctx, u, metav1.CreateOptions{})
			return err
		}},
	{Group: "strata.io", Resource: "podcidrclaims", Verb: "list", Why: "blocks held by every pool's nodes",
		Do: func(ctx context.Context, c callClients) error {
			_, err := c.Dyn.Resource(gvrClaims).List(ctx, metav1.ListOptions{})
			return err
		}},
	{Group: "strata.io", Resource: "podcidrclaims", Verb: "delete", Why: "sweep claims of deleted Nodes; release a claim that lost to another allocation",
		Do: func(ctx context.Context, c callClients) error {
			return c.Dyn.Resource(gvrClaims).Delete(ctx, fixtureClaim, metav1.DeleteOptions{})
		}},
}

// outOfScope are writes and reads the agent never makes; the API server must
// refuse each one (Forbidden) to the agent's ServiceAccount.
var outOfScope = []struct {
	Name string
	Do   func(ctx context.Context, c callClients) error
}{
	{"create a Secret in strata-system", func(ctx context.Context, c callClients) error {
		_, err := c.Kube.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "stolen"}}, metav1.CreateOptions{})
		return err
	}},
	{"list Secrets in strata-system", func(ctx context.Context, c callClients) error {
		_, err := c.Kube.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{})
		return err
	}},
	{"get a Secret outside strata-system", func(ctx context.Context, c callClients) error {
		_, err := c.Kube.CoreV1().Secrets("default").Get(ctx, "anything", metav1.GetOptions{})
		return err
	}},
	{"update (PUT) a Node", func(ctx context.Context, c callClients) error {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fixtureNode, Labels: map[string]string{"x": "y"}}}
		_, err := c.Kube.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	}},
	{"delete a Node", func(ctx context.Context, c callClients) error {
		return c.Kube.CoreV1().Nodes().Delete(ctx, fixtureNode, metav1.DeleteOptions{})
	}},
	{"create a Pod", func(ctx context.Context, c callClients) error {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "evil"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
		_, err := c.Kube.CoreV1().Pods(fixturePodNS).Create(ctx, p, metav1.CreateOptions{})
		return err
	}},
	{"delete a Pod", func(ctx context.Context, c callClients) error {
		return c.Kube.CoreV1().Pods(fixturePodNS).Delete(ctx, fixturePod, metav1.DeleteOptions{})
	}},
	{"patch its own ConfigMap", func(ctx context.Context, c callClients) error {
		_, err := c.Kube.CoreV1().ConfigMaps(namespace).Patch(ctx, "strata-config", types.MergePatchType, []byte(`{"data":{"x":"y"}}`), metav1.PatchOptions{})
		return err
	}},
	{"patch its own DaemonSet", func(ctx context.Context, c callClients) error {
		_, err := c.Kube.AppsV1().DaemonSets(namespace).Patch(ctx, agentSA, types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), metav1.PatchOptions{})
		return err
	}},
	{"create a NodePool", func(ctx context.Context, c callClients) error {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "strata.io/v1alpha1", "kind": "NodePool",
			"metadata": map[string]any{"name": "rogue"}, "spec": map[string]any{"location": "idc"}}}
		_, err := c.Dyn.Resource(gvrNodePools).Create(ctx, u, metav1.CreateOptions{})
		return err
	}},
	{"patch a NodePool spec", func(ctx context.Context, c callClients) error {
		_, err := c.Dyn.Resource(gvrNodePools).Patch(ctx, fixturePool, types.MergePatchType, []byte(`{"spec":{"vxlan":{"vni":9}}}`), metav1.PatchOptions{})
		return err
	}},
	{"delete a BGPPeer", func(ctx context.Context, c callClients) error {
		return c.Dyn.Resource(gvrBGPPeers).Namespace(c.PeerNS).Delete(ctx, fixturePeer, metav1.DeleteOptions{})
	}},
	{"patch a BGPPeer spec", func(ctx context.Context, c callClients) error {
		_, err := c.Dyn.Resource(gvrBGPPeers).Namespace(c.PeerNS).Patch(ctx, fixturePeer, types.MergePatchType, []byte(`{"spec":{}}`), metav1.PatchOptions{})
		return err
	}},
	{"create a Lease (no leader election)", func(ctx context.Context, c callClients) error {
		_, err := c.Dyn.Resource(schema.GroupVersionResource{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"}).Namespace(namespace).Create(ctx,
			&unstructured.Unstructured{Object: map[string]any{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": map[string]any{"name": "strata"}}}, metav1.CreateOptions{})
		return err
	}},
	{"patch another Node's strata.io annotations", func(ctx context.Context, c callClients) error {
		_, err := c.Kube.CoreV1().Nodes().Patch(ctx, fixtureOtherNode, types.MergePatchType, []byte(`{"metadata":{"annotations":{"strata.io/datapath":"forged"}}}`), metav1.PatchOptions{})
		return err
	}},
	{"patch its own Node's labels", func(ctx context.Context, c callClients) error {
		_, err := c.Kube.CoreV1().Nodes().Patch(ctx, fixtureNode, types.MergePatchType, []byte(`{"metadata":{"labels":{"strata.io/location":"cloud"}}}`), metav1.PatchOptions{})
		return err
	}},
	{"patch a non-strata annotation on its own Node", func(ctx context.Context, c callClients) error {
		_, err := c.Kube.CoreV1().Nodes().Patch(ctx, fixtureNode, types.MergePatchType, []byte(`{"metadata":{"annotations":{"example.com/x":"y"}}}`), metav1.PatchOptions{})
		return err
	}},
	{"patch its own Node's spec", func(ctx context.Context, c callClients) error {
		_, err := c.Kube.CoreV1().Nodes().Patch(ctx, fixtureNode, types.MergePatchType, []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{})
		return err
	}},
	{"claim a pod CIDR block for another Node", func(ctx context.Context, c callClients) error {
		u, _ := claimFor(ctx, c, fixtureOtherNode)
		_, err := c.Dyn.Resource(gvrClaims).Create(ctx, u, metav1.CreateOptions{})
		return err
	}},
	{"set another Node's spec.podCIDR", func(ctx context.Context, c callClients) error {
		_, err := c.Kube.CoreV1().Nodes().Patch(ctx, fixtureOtherNode, types.MergePatchType, []byte(`{"spec":{"podCIDR":"10.244.78.0/24","podCIDRs":["10.244.78.0/24"]}}`), metav1.PatchOptions{})
		return err
	}},
	// Once granted, pruned when the derived RBAC showed nothing calls them.
	{"list Pods on its node", func(ctx context.Context, c callClients) error {
		_, err := c.Kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + fixtureNode})
		return err
	}},
	{"patch an Event", func(ctx context.Context, c callClients) error {
		_, err := c.Kube.CoreV1().Events(eventNS).Patch(ctx, fixtureEvent, types.StrategicMergePatchType, []byte(`{"count":2}`), metav1.PatchOptions{})
		return err
	}},
	{"create an events.k8s.io Event", func(ctx context.Context, c callClients) error {
		_, err := c.Kube.EventsV1().Events(eventNS).Create(ctx, newEvent(fixtureNewEvent+"-v1"), metav1.CreateOptions{})
		return err
	}},
	{"delete an Event", func(ctx context.Context, c callClients) error {
		return c.Kube.CoreV1().Events(eventNS).Delete(ctx, fixtureEvent, metav1.DeleteOptions{})
	}},
}

func coreEvent(name string) *corev1.Event {
	return &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: name, Namespace: eventNS},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: fixtureNode, UID: types.UID(fixtureNode)},
		Reason:         "DatapathChanged", Message: "native -> vxlan", Type: corev1.EventTypeNormal,
		Source: corev1.EventSource{Component: "strata-agent", Host: fixtureNode}, Count: 1,
		FirstTimestamp: metav1.Now(), LastTimestamp: metav1.Now(),
	}
}

func newEvent(name string) *eventsv1.Event {
	return &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: eventNS},
		EventTime:  metav1.NowMicro(), ReportingController: "strata.io/agent", ReportingInstance: "strata-agent-" + fixtureNode,
		Action: "Switch", Reason: "DatapathChanged", Note: "native -> vxlan", Type: corev1.EventTypeNormal,
		Regarding: corev1.ObjectReference{Kind: "Node", Name: fixtureNode},
	}
}

// grant is one (namespace, group, resource, verb) an RBAC rule allows.
type grant struct{ Namespace, Group, Resource, Verb string }

func (g grant) String() string {
	ns := g.Namespace
	if ns == "" {
		ns = "<cluster>"
	}
	grp := g.Group
	if grp == "" {
		grp = "core"
	}
	return fmt.Sprintf("%s %s/%s %s", ns, grp, g.Resource, g.Verb)
}
