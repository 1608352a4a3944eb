//go:build integration

package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/strata-net/strata/tests/harness/apiserver"
	"github.com/strata-net/strata/topology/probe"
)

const fieldManager = "strata-test"

// applier server-side-applies objects the way `kubectl apply
// --server-side` does: CRDs first (waiting until they are served), then
// Namespaces, then the rest.
type applier struct {
	t      *testing.T
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	kube   kubernetes.Interface
}

func newApplier(t *testing.T, cfg *rest.Config) *applier {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{
		t: t, dyn: dynamic.NewForConfigOrDie(cfg), kube: kubernetes.NewForConfigOrDie(cfg),
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
	}
}

func applyOrder(o *unstructured.Unstructured) int {
	switch o.GetKind() {
	case "CustomResourceDefinition":
		return 0
	case "Namespace":
		return 1
	case "ServiceAccount", "ClusterRole", "Role", "ConfigMap", "Secret":
		return 2
	default:
		return 3
	}
}

// apply server-side-applies objs; namespaced objects without a namespace go
// to defaultNS. Every object must be accepted.
func (a *applier) apply(ctx context.Context, objs []*unstructured.Unstructured, defaultNS string) {
	a.t.Helper()
	objs = slices.Clone(objs)
	slices.SortStableFunc(objs, func(x, y *unstructured.Unstructured) int { return applyOrder(x) - applyOrder(y) })
	crdsDone := false
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" && !crdsDone {
			a.waitCRDs(ctx, objs)
			crdsDone = true
		}
		if err := a.applyOne(ctx, o, defaultNS); err != nil {
			a.t.Errorf("the API server refused %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	if !crdsDone {
		a.waitCRDs(ctx, objs)
	}
}

func (a *applier) applyOne(ctx context.Context, o *unstructured.Unstructured, defaultNS string) error {
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("no API for %s: %w", gvk, err)
	}
	o = o.DeepCopy()
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if o.GetNamespace() == "" {
			o.SetNamespace(defaultNS)
		}
		ri = a.dyn.Resource(m.Resource).Namespace(o.GetNamespace())
	}
	data, err := json.Marshal(o.Object)
	if err != nil {
		return err
	}
	force := true
	_, err = ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: fieldManager, Force: &force})
	return err
}

// waitCRDs waits until every CRD among objs is Established, then forgets
// cached discovery so their kinds map.
func (a *applier) waitCRDs(ctx context.Context, objs []*unstructured.Unstructured) {
	a.t.Helper()
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			u, err := a.dyn.Resource(apiextv1.SchemeGroupVersion.WithResource("customresourcedefinitions")).Get(ctx, o.GetName(), metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			var crd apiextv1.CustomResourceDefinition
			if err := runtimeFromUnstructured(u, &crd); err != nil {
				return false, err
			}
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextv1.Established && c.Status == apiextv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			a.t.Fatalf("CRD %s not established within 60s: %v", o.GetName(), err)
		}
	}
	a.mapper.Reset()
}

func runtimeFromUnstructured(u *unstructured.Unstructured, out any) error {
	b, err := u.MarshalJSON()
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// helmBin is the helm `make tools` installs.
func helmBin(t *testing.T) string {
	t.Helper()
	p := filepath.Join(apiserver.AssetsDir(), "helm")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("helm not found at %s: run `make tools` (installs helm.sh/helm/v3 from the Go module proxy)", p)
	}
	return p
}

// helmTemplate renders the chart with the real helm, CRDs included.
func helmTemplate(t *testing.T, releaseNS string, values map[string]any) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"template", "strata", chartDir, "--namespace", releaseNS, "--include-crds"}
	if values != nil {
		b, err := yaml.Marshal(values)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", f)
	}
	cmd := exec.Command(helmBin(t), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	objs, err := splitDocs(out)
	if err != nil {
		t.Fatalf("helm output: %v", err)
	}
	return objs
}

// nonDefaultValues exercise every branch of the chart: pools, existing
// secrets, cloud credentials, chaining off, other ports and tunables.
func nonDefaultValues() map[string]any {
	v := map[string]any{
		"image":            map[string]any{"repository": "registry.example.com/strata/agent", "tag": "v9.9.9", "pullPolicy": "Always"},
		"imagePullSecrets": []any{map[string]any{"name": "regcred"}},
		"agent": map[string]any{
			"stateDir": "/var/lib/strata-alt", "cniSocket": "/run/strata-alt/cni.sock", "metricsPort": 19253,
			"extraArgs": []any{"--underlay-link=eth1"}, "priorityClassName": "",
			"nodeSelector":   map[string]any{"kubernetes.io/os": "linux", "strata.io/location": "idc"},
			"podAnnotations": map[string]any{"example.com/team": "net"},
		},
		"cni":              map[string]any{"confName": "05-strata.conflist", "cniVersion": "1.0.0", "timeoutSeconds": 60, "portmap": false, "bandwidth": true, "overwriteChainedPlugins": true, "binDir": "/usr/libexec/cni"},
		"gossip":           map[string]any{"existingSecret": "my-gossip"},
		"cloudCredentials": map[string]any{"create": true, "accessKeyID": "LTAI-test", "accessKeySecret": "secret"},
		"config": map[string]any{
			"vxlan-vni": 16777215, "vxlan-port": 8472, "gossip-port": 17946, "join": "10.0.1.11,10.0.1.12:17946",
			"probe-period": "250ms", "fail-threshold": 5, "hold-down": "1m", "log-level": "debug",
		},
		"pools": []any{
			map[string]any{"name": "cloud-vpc", "location": "cloud"},
			map[string]any{"name": "idc-a", "location": "idc", "interconnect": "leased-line", "podCIDRs": []any{"10.244.0.0/16", "10.250.0.0/20"}, "nodeMaskSize": 26,
				"vxlan": map[string]any{"vni": 100, "port": 4790, "mtu": 1450}, "bgp": map[string]any{"localASN": 4200000001}},
			map[string]any{"name": "site-b", "location": "idc", "interconnect": "internet", "podCIDRs": []any{"10.245.0.0/16"}},
		},
		"bgpPeers": []any{
			map[string]any{"name": "idc-a-vswitch", "peerAddress": "192.168.10.1", "peerASN": 65010, "localASN": 4200000001,
				"holdTimeSeconds": 9, "keepaliveTimeSeconds": 3, "gracefulRestart": map[string]any{"enabled": true, "restartTimeSeconds": 120},
				"passwordSecretRef": map[string]any{"name": "bgp-idc-a"}, "nodeSelector": map[string]any{"matchLabels": map[string]any{"strata.io/pool": "idc-a"}}},
			map[string]any{"name": "vbr", "peerAddress": "fd00::1", "peerASN": 45104, "ebgpMultihop": 2, "passive": true},
		},
	}
	return v
}

// TestIntegrationApplyManifestsAndChart: the plain manifests, the chart
// with default values and the chart with non-default values are all
// accepted by a real kube-apiserver through server-side apply.
func TestIntegrationApplyManifestsAndChart(t *testing.T) {
	env := apiserver.Start(t, apiserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a := newApplier(t, env.Config)
	bgpCRDs := bgpCRDFiles(t)

	t.Run("manifests", func(t *testing.T) {
		a.t = t
		objs := append(loadDir(t, manifestsDir), bgpCRDs...)
		a.apply(ctx, objs, namespace)
		// Read back: the DaemonSet is stored with the flags we shipped.
		ds, err := a.kube.AppsV1().DaemonSets(namespace).Get(ctx, "strata-agent", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := ds.Spec.Template.Spec.Containers[0].Args; !slices.Contains(got, "--gossip-key-file=/etc/strata/gossip/key") {
			t.Errorf("stored DaemonSet args %v", got)
		}
	})

	t.Run("chart defaults", func(t *testing.T) {
		a.t = t
		objs := helmTemplate(t, namespace, nil)
		checkDaemonSet(t, objs)
		checkAgentParsesArgs(t, objs)
		checkConflist(t, objs, []string{"portmap", "bandwidth"})
		checkGrantsExact(t, rbacGrants(t, objs, namespace), namespace)
		checkInitScript(t, objs)
		checkSameAsManifests(t, objs, loadDir(t, manifestsDir))
		// The generated gossip key is one the agent accepts.
		sec := typed[corev1.Secret](t, find(t, objs, "Secret", "strata-gossip"))
		if _, err := probe.ParseKeyring(sec.Data["key"]); err != nil {
			t.Errorf("chart-generated gossip key: %v", err)
		}
		a.apply(ctx, append(objs, bgpCRDs...), namespace)
	})

	t.Run("chart non-default values", func(t *testing.T) {
		a.t = t
		const ns = "strata-alt"
		if _, err := a.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		objs := helmTemplate(t, ns, nonDefaultValues())
		checkGrantsExact(t, rbacGrants(t, objs, ns), ns)
		checkConflist(t, objs, []string{"bandwidth"})
		checkTunablesWired(t, objs)
		checkAgentParsesArgs(t, objs)
		cm := typed[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "strata-config"))
		if got := cm.Data["vxlan-vni"]; got != "16777215" {
			t.Errorf("vxlan-vni rendered as %q: large numbers must not turn into exponent form", got)
		}
		ds := daemonSet(t, objs)
		agent := container(t, ds.Spec.Template.Spec.Containers, "agent")
		if !slices.Contains(agent.Args, "--underlay-link=eth1") || !slices.Contains(agent.Args, "--cni-socket=/run/strata-alt/cni.sock") {
			t.Errorf("agent args %v lack the non-default values", agent.Args)
		}
		if ds.Spec.Template.Spec.Volumes[len(ds.Spec.Template.Spec.Volumes)-1].Secret.SecretName != "my-gossip" {
			t.Error("gossip.existingSecret is not used")
		}
		for _, o := range objs {
			if o.GetKind() == "Secret" && o.GetName() == "strata-gossip" {
				t.Error("gossip.existingSecret set, yet the chart generates strata-gossip")
			}
		}
		a.apply(ctx, objs, ns)
		for _, p := range []string{"cloud-vpc", "idc-a", "site-b"} {
			if _, err := a.dyn.Resource(gvrNodePools).Get(ctx, p, metav1.GetOptions{}); err != nil {
				t.Errorf("NodePool %s from values: %v", p, err)
			}
		}
		for _, p := range []string{"idc-a-vswitch", "vbr"} {
			if _, err := a.dyn.Resource(gvrBGPPeers).Get(ctx, p, metav1.GetOptions{}); err != nil {
				t.Errorf("BGPPeer %s from values: %v", p, err)
			}
		}
	})

	t.Run("helm lint", func(t *testing.T) {
		out, err := exec.Command(helmBin(t), "lint", "--strict", chartDir).CombinedOutput()
		if err != nil {
			t.Errorf("helm lint --strict: %v\n%s", err, out)
		}
	})

	t.Run("chart refuses incomplete cloud credentials", func(t *testing.T) {
		cmd := exec.Command(helmBin(t), "template", "strata", chartDir, "--set", "cloudCredentials.create=true")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "cloudCredentials.accessKeyID") {
			t.Errorf("want a failure naming cloudCredentials.accessKeyID, got err=%v:\n%s", err, out)
		}
	})
}

// checkSameAsManifests: the chart with default values renders the same
// objects as the plain manifests (labels and ordering aside), so the two
// install paths cannot drift apart.
func checkSameAsManifests(t *testing.T, chart, plain []*unstructured.Unstructured) {
	t.Helper()
	for _, p := range plain {
		switch p.GetKind() {
		case "Namespace", "Secret", "NodePool", "BGPPeer": // examples, or generated
			continue
		}
		c := find(t, chart, p.GetKind(), p.GetName())
		if pn, cn := normalize(t, p), normalize(t, c); pn != cn {
			t.Errorf("%s %s differs between deploy/manifests and the chart's defaults:\nmanifest: %s\nchart:    %s", p.GetKind(), p.GetName(), pn, cn)
		}
	}
}

// normalize drops labels/annotations, sorts lists whose order carries no
// meaning, and canonicalises embedded JSON documents.
func normalize(t *testing.T, o *unstructured.Unstructured) string {
	t.Helper()
	o = o.DeepCopy()
	o.SetLabels(nil)
	o.SetAnnotations(nil)
	unstructured.RemoveNestedField(o.Object, "spec", "template", "metadata")
	if o.GetKind() == "ConfigMap" {
		data, _, _ := unstructured.NestedStringMap(o.Object, "data")
		for k, v := range data {
			var js any
			if json.Unmarshal([]byte(v), &js) == nil {
				b, _ := json.Marshal(js)
				data[k] = string(b)
			}
		}
		_ = unstructured.SetNestedStringMap(o.Object, data, "data")
	}
	if o.GetKind() == "DaemonSet" {
		cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range cs {
			cm := c.(map[string]any)
			if args, ok := cm["args"].([]any); ok {
				slices.SortFunc(args, func(a, b any) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
			}
			if env, ok := cm["env"].([]any); ok {
				slices.SortFunc(env, func(a, b any) int {
					return strings.Compare(fmt.Sprint(a.(map[string]any)["name"]), fmt.Sprint(b.(map[string]any)["name"]))
				})
			}
		}
		_ = unstructured.SetNestedSlice(o.Object, cs, "spec", "template", "spec", "containers")
	}
	b, err := json.Marshal(o.Object)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestIntegrationCRDRejectsInvalid: the NodePool schema (and BGPPeer's,
// once deploy/crds has it) refuses malformed objects at the API server.
func TestIntegrationCRDRejectsInvalid(t *testing.T) {
	env := apiserver.Start(t, apiserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a := newApplier(t, env.Config)
	a.apply(ctx, append(loadDir(t, poolCRDDir), bgpCRDFiles(t)...), namespace)

	pool := func(name string, spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "strata.io/v1alpha1", "kind": "NodePool",
			"metadata": map[string]any{"name": name}, "spec": spec}}
	}
	idc := func(extra map[string]any) map[string]any {
		s := map[string]any{"location": "idc", "interconnect": "leased-line", "podCIDRs": []any{"10.244.0.0/16"}}
		for k, v := range extra {
			s[k] = v
		}
		return s
	}
	valid := map[string]map[string]any{
		"ok-cloud":   {"location": "cloud"},
		"ok-idc":     idc(map[string]any{"nodeMaskSize": 24, "vxlan": map[string]any{"vni": 16777215, "port": 65535}, "bgp": map[string]any{"localASN": 4294967294}}),
		"ok-ipv6":    {"location": "ens", "interconnect": "internet", "podCIDRs": []any{"fd00:10::/56"}, "nodeMaskSize": 64},
		"ok-minimal": {"location": "idc"},
	}
	for name, spec := range valid {
		if _, err := a.dyn.Resource(gvrNodePools).Create(ctx, pool(name, spec), metav1.CreateOptions{}); err != nil {
			t.Errorf("valid NodePool %s refused: %v", name, err)
		}
	}
	got, err := a.dyn.Resource(gvrNodePools).Get(ctx, "ok-minimal", metav1.GetOptions{})
	if err == nil {
		if m, _, _ := unstructured.NestedInt64(got.Object, "spec", "nodeMaskSize"); m != 24 {
			t.Errorf("nodeMaskSize default: got %d, want 24", m)
		}
	}
	invalid := []struct {
		name, field string
		spec        map[string]any
	}{
		{"cidr-garbage", "spec.podCIDRs[0]", idc(map[string]any{"podCIDRs": []any{"not-a-cidr"}})},
		{"cidr-prefix-33", "spec.podCIDRs[0]", idc(map[string]any{"podCIDRs": []any{"10.244.0.0/33"}})},
		{"cidr-host-bits", "spec.podCIDRs[0]", idc(map[string]any{"podCIDRs": []any{"10.244.1.0/16"}})},
		{"cidr-bare-ip", "spec.podCIDRs[0]", idc(map[string]any{"podCIDRs": []any{"10.244.0.1"}})},
		{"mask-shorter-than-pool", "spec", idc(map[string]any{"nodeMaskSize": 12})},
		{"vni-zero", "spec.vxlan.vni", idc(map[string]any{"vxlan": map[string]any{"vni": 0}})},
		{"vni-too-big", "spec.vxlan.vni", idc(map[string]any{"vxlan": map[string]any{"vni": 16777216}})},
		{"port-zero", "spec.vxlan.port", idc(map[string]any{"vxlan": map[string]any{"port": 0}})},
		{"port-too-big", "spec.vxlan.port", idc(map[string]any{"vxlan": map[string]any{"port": 65536}})},
		{"asn-zero", "spec.bgp.localASN", idc(map[string]any{"bgp": map[string]any{"localASN": 0}})},
		{"asn-reserved", "spec.bgp.localASN", idc(map[string]any{"bgp": map[string]any{"localASN": 4294967295}})},
		{"asn-too-big", "spec.bgp.localASN", idc(map[string]any{"bgp": map[string]any{"localASN": 4294967296}})},
		{"location-unknown", "spec.location", map[string]any{"location": "moon"}},
		{"interconnect-unknown", "spec.interconnect", map[string]any{"location": "idc", "interconnect": "carrier-pigeon"}},
		{"mixed-families", "spec.podCIDRs", idc(map[string]any{"podCIDRs": []any{"10.244.0.0/16", "fd00::/48"}})},
		{"cloud-with-cidrs", "spec", map[string]any{"location": "cloud", "podCIDRs": []any{"10.0.64.0/20"}}},
		{"no-location", "spec.location", map[string]any{"interconnect": "internet"}},
	}
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.dyn.Resource(gvrNodePools).Create(ctx, pool(tc.name, tc.spec), metav1.CreateOptions{})
			if err == nil {
				t.Fatalf("the API server accepted an invalid NodePool (%s)", tc.name)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("want an Invalid error naming %s, got: %v", tc.field, err)
			}
		})
	}
	t.Run("bad pool name", func(t *testing.T) {
		_, err := a.dyn.Resource(gvrNodePools).Create(ctx, pool("Pool.With.Dots", map[string]any{"location": "idc"}), metav1.CreateOptions{})
		if err == nil {
			t.Fatal("a NodePool whose name is not a DNS label (so no valid strata.io/pool label value) was accepted")
		}
	})
	t.Run("BGPPeer", func(t *testing.T) { checkBGPPeerRejects(ctx, t, a) })
}

// checkBGPPeerRejects probes deploy/crds' BGPPeer schema (owned by bgp/,
// issue 5): an out-of-range ASN and a hold time under 3 s must each be
// refused with an error naming the field. Field names are read from the
// schema, so this follows the CRD as it evolves.
func checkBGPPeerRejects(ctx context.Context, t *testing.T, a *applier) {
	var crd *apiextv1.CustomResourceDefinition
	for _, o := range bgpCRDFiles(t) {
		if o.GetKind() == "CustomResourceDefinition" && o.GetName() == "bgppeers.strata.io" {
			crd = typed[apiextv1.CustomResourceDefinition](t, o)
		}
	}
	if crd == nil {
		t.Fatal("deploy/crds has no bgppeers.strata.io CRD: the BGPPeer schema checks cannot run")
	}
	var ver *apiextv1.CustomResourceDefinitionVersion
	for i := range crd.Spec.Versions {
		if crd.Spec.Versions[i].Storage {
			ver = &crd.Spec.Versions[i]
		}
	}
	spec := ver.Schema.OpenAPIV3Schema.Properties["spec"]
	type probeCase struct {
		path      []string
		bad, good any
		what      string
	}
	var cases []probeCase
	var walk func(prefix []string, s apiextv1.JSONSchemaProps)
	walk = func(prefix []string, s apiextv1.JSONSchemaProps) {
		for name, p := range s.Properties {
			path := append(slices.Clone(prefix), name)
			l := strings.ToLower(name)
			switch {
			case strings.Contains(l, "asn") && p.Type == "integer":
				cases = append(cases, probeCase{path, int64(4294967296), int64(65011), "ASN out of range"})
			case strings.Contains(l, "hold") && p.Type == "integer":
				cases = append(cases, probeCase{path, int64(2), int64(90), "hold time under 3 s"})
			case strings.Contains(l, "hold") && p.Type == "string":
				cases = append(cases, probeCase{path, "2s", "90s", "hold time under 3 s"})
			case p.Type == "object":
				walk(path, p)
			}
		}
	}
	walk(nil, spec)
	if !slices.ContainsFunc(cases, func(c probeCase) bool { return c.what == "ASN out of range" }) ||
		!slices.ContainsFunc(cases, func(c probeCase) bool { return c.what == "hold time under 3 s" }) {
		t.Fatalf("BGPPeer schema: found %d ASN/hold fields; want at least one of each", len(cases))
	}
	gvr := gvrBGPPeers.GroupResource().WithVersion(ver.Name)
	ns := ""
	if crd.Spec.Scope == apiextv1.NamespaceScoped {
		ns = namespace
	}
	for i, c := range cases {
		field := "spec." + strings.Join(c.path, ".")
		mk := func(v any) *unstructured.Unstructured {
			u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "strata.io/" + ver.Name, "kind": "BGPPeer", "spec": map[string]any{}}}
			u.SetName(fmt.Sprintf("probe-%d", i))
			_ = unstructured.SetNestedField(u.Object, v, append([]string{"spec"}, c.path...)...)
			return u
		}
		_, err := a.dyn.Resource(gvr).Namespace(ns).Create(ctx, mk(c.bad), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %s=%v: want an error naming %s, got %v", c.what, field, c.bad, field, err)
		}
		// Control: a good value is not what the server complains about.
		_, err = a.dyn.Resource(gvr).Namespace(ns).Create(ctx, mk(c.good), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil && strings.Contains(err.Error(), field+":") {
			t.Errorf("%s=%v (valid) was refused: %v", field, c.good, err)
		}
	}
}

// TestIntegrationRBACAgentCalls authenticates as the DaemonSet's
// ServiceAccount with a token from the TokenRequest API (envtest's
// kube-apiserver signs service-account tokens), after applying the shipped
// manifests. Every agentCalls entry must be allowed, and every outOfScope
// request refused.
func TestIntegrationRBACAgentCalls(t *testing.T) {
	env := apiserver.Start(t, apiserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a := newApplier(t, env.Config)
	bgpCRDs := bgpCRDFiles(t)
	a.apply(ctx, append(loadDir(t, manifestsDir), bgpCRDs...), namespace)
	admin := env.Clientset

	// What the agent acts on, created as the admin.
	mustCreate := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("create %s: %v", what, err)
		}
	}
	_, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fixtureNode, Labels: map[string]string{"strata.io/location": "idc", "strata.io/pool": fixturePool}}}, metav1.CreateOptions{})
	mustCreate("node", err)
	_, err = admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fixtureOtherNode}}, metav1.CreateOptions{})
	mustCreate("other node", err)
	agentPod, err := admin.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fixtureAgentPod},
		Spec: corev1.PodSpec{NodeName: fixtureNode, ServiceAccountName: agentSA, Containers: []corev1.Container{{Name: "agent", Image: "strata-agent"}}}}, metav1.CreateOptions{})
	mustCreate("agent pod", err)
	_, err = admin.CoreV1().Pods(fixturePodNS).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fixturePod},
		Spec: corev1.PodSpec{NodeName: fixtureNode, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
	mustCreate("pod", err)
	_, err = admin.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fixtureSecret}, Data: map[string][]byte{"key": []byte("x")}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) { // the template applied one
		t.Fatal(err)
	}
	_, err = a.dyn.Resource(gvrNodePools).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "strata.io/v1alpha1", "kind": "NodePool", "metadata": map[string]any{"name": fixturePool},
		"spec": map[string]any{"location": "idc", "interconnect": "leased-line", "podCIDRs": []any{"10.244.0.0/16"}}}}, metav1.CreateOptions{})
	mustCreate("nodepool", err)
	peer := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "strata.io/v1alpha1", "kind": "BGPPeer", "metadata": map[string]any{"name": fixturePeer},
		"spec": map[string]any{"peerAddress": "192.168.10.1", "peerASN": int64(65010),
			"nodeSelector": map[string]any{"matchLabels": map[string]any{"strata.io/pool": fixturePool}}}}}
	_, err = a.dyn.Resource(gvrBGPPeers).Namespace(c0PeerNS(bgpCRDs)).Create(ctx, peer, metav1.CreateOptions{})
	mustCreate("bgppeer (CRD from deploy/crds)", err)
	_, err = admin.CoreV1().Events(eventNS).Create(ctx, coreEvent(fixtureEvent), metav1.CreateOptions{})
	mustCreate("event", err)
	_, err = admin.EventsV1().Events(eventNS).Create(ctx, newEvent(fixtureEvent+"-v1"), metav1.CreateOptions{})
	mustCreate("events.k8s.io event", err)

	// The agent's identity: a service-account token bound to its pod, as
	// the kubelet requests for the DaemonSet's projected token (it carries
	// the pod's node name, which the node policy checks).
	exp := int64(3600)
	tr, err := admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, agentSA, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: agentPod.Name, UID: agentPod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", namespace, agentSA, err)
	}
	cfg := rest.AnonymousClientConfig(env.Config)
	cfg.BearerToken = tr.Status.Token
	c := callClients{Kube: kubernetes.NewForConfigOrDie(cfg), Dyn: dynamic.NewForConfigOrDie(cfg), PeerNS: c0PeerNS(bgpCRDs)}
	who, err := c.Kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectReview as the agent: %v", err)
	}
	if want := "system:serviceaccount:" + namespace + ":" + agentSA; who.Status.UserInfo.Username != want {
		t.Fatalf("authenticated as %q, want %q", who.Status.UserInfo.Username, want)
	}
	if got := who.Status.UserInfo.Extra["authentication.kubernetes.io/node-name"]; !slices.Equal(got, authenticationv1.ExtraValue{fixtureNode}) {
		t.Fatalf("token's node-name claim %v, want [%s]", got, fixtureNode)
	}

	for _, call := range agentCalls {
		t.Run("allowed/"+call.Resource+"/"+call.Verb+"/"+groupName(call.Group), func(t *testing.T) {
			if err := call.Do(ctx, c); err != nil {
				t.Errorf("%s %s/%s (%s) as the agent: %v", call.Verb, groupName(call.Group), call.Resource, call.Why, err)
			}
		})
	}
	for _, d := range outOfScope {
		t.Run("refused/"+d.Name, func(t *testing.T) {
			err := d.Do(ctx, c)
			t.Logf("%s: %v", d.Name, err)
			if !apierrors.IsForbidden(err) {
				t.Errorf("%s: want Forbidden, got %v", d.Name, err)
			}
		})
	}
	// The agent's patch really landed (not a no-op).
	n, err := admin.CoreV1().Nodes().Get(ctx, fixtureNode, metav1.GetOptions{})
	if err != nil || n.Annotations["strata.io/datapath"] != "bgp-underlay" {
		t.Errorf("node annotations after the agent's patch: %v (%v)", n.Annotations, err)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("ran out of time")
	}
}

// c0PeerNS is where BGPPeers live: "" when the CRD is cluster-scoped.
func c0PeerNS(crds []*unstructured.Unstructured) string {
	for _, o := range crds {
		if o.GetName() == "bgppeers.strata.io" {
			if s, _, _ := unstructured.NestedString(o.Object, "spec", "scope"); s == "Namespaced" {
				return namespace
			}
		}
	}
	return ""
}

func groupName(g string) string {
	if g == "" {
		return "core"
	}
	return g
}
