package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/strata-net/strata/cni/plugin"
	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/apis/strata/v1alpha1"
	"github.com/strata-net/strata/internal/cli"
	"github.com/strata-net/strata/nodepool"
	"github.com/strata-net/strata/topology"
	"github.com/strata-net/strata/topology/probe"
	"github.com/strata-net/strata/vxlan"
)

// TestManifestsDecodeStrictly: every object in deploy/manifests is a known
// kind whose fields all exist in its Go type (a misspelt field would be
// silently dropped by a lenient apply).
func TestManifestsDecodeStrictly(t *testing.T) {
	objs := loadDir(t, manifestsDir)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
		switch o.GetKind() {
		case "Namespace":
			typed[corev1.Namespace](t, o)
		case "ServiceAccount":
			typed[corev1.ServiceAccount](t, o)
		case "ConfigMap":
			typed[corev1.ConfigMap](t, o)
		case "Secret":
			typed[corev1.Secret](t, o)
		case "DaemonSet":
			typed[appsv1.DaemonSet](t, o)
		case "ClusterRole":
			typed[rbacv1.ClusterRole](t, o)
		case "ClusterRoleBinding":
			typed[rbacv1.ClusterRoleBinding](t, o)
		case "Role":
			typed[rbacv1.Role](t, o)
		case "RoleBinding":
			typed[rbacv1.RoleBinding](t, o)
		case "CustomResourceDefinition":
			typed[apiextv1.CustomResourceDefinition](t, o)
		case "ValidatingAdmissionPolicy":
			typed[admissionv1.ValidatingAdmissionPolicy](t, o)
		case "ValidatingAdmissionPolicyBinding":
			typed[admissionv1.ValidatingAdmissionPolicyBinding](t, o)
		case "BGPPeer":
			typed[v1alpha1.BGPPeer](t, o)
		case "NodePool":
			if o.GetAPIVersion() != "strata.io/v1alpha1" {
				t.Errorf("NodePool %s: apiVersion %s, want strata.io/v1alpha1", o.GetName(), o.GetAPIVersion())
			}
		default:
			t.Errorf("unexpected kind %s (%s) in %s: add it to this test", o.GetKind(), o.GetName(), manifestsDir)
		}
		if ns := o.GetNamespace(); ns != "" && ns != namespace {
			t.Errorf("%s %s: namespace %q, want %q (or none for cluster-scoped kinds)", o.GetKind(), o.GetName(), ns, namespace)
		}
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "ConfigMap", "Secret", "DaemonSet", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "CustomResourceDefinition", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		if kinds[k] == 0 {
			t.Errorf("deploy/manifests has no %s", k)
		}
	}
}

// rbacGrants expands the ClusterRoles and Roles bound to the agent's
// ServiceAccount into grants, failing on rules RBAC would read more broadly
// than intended (wildcards, resourceNames, nonResourceURLs).
func rbacGrants(t testing.TB, objs []*unstructured.Unstructured, saNamespace string) map[grant]bool {
	t.Helper()
	bound := map[string]bool{} // "ClusterRole/name" or "Role/ns/name"
	isAgent := func(subjects []rbacv1.Subject) bool {
		return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
			return s.Kind == "ServiceAccount" && s.Name == agentSA && s.Namespace == saNamespace
		})
	}
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterRoleBinding":
			b := typed[rbacv1.ClusterRoleBinding](t, o)
			if isAgent(b.Subjects) {
				bound["ClusterRole/"+b.RoleRef.Name] = true
			}
		case "RoleBinding":
			b := typed[rbacv1.RoleBinding](t, o)
			if isAgent(b.Subjects) {
				bound["Role/"+b.Namespace+"/"+b.RoleRef.Name] = true
			}
		}
	}
	out := map[grant]bool{}
	add := func(ns string, rules []rbacv1.PolicyRule, who string) {
		for _, r := range rules {
			if len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
				t.Errorf("%s: rule %v: nonResourceURLs/resourceNames are not expected", who, r)
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						if g == "*" || res == "*" || v == "*" {
							t.Errorf("%s: wildcard in rule %v: list exactly what the agent uses", who, r)
						}
						out[grant{ns, g, res, v}] = true
					}
				}
			}
		}
	}
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterRole":
			if bound["ClusterRole/"+o.GetName()] {
				add("", typed[rbacv1.ClusterRole](t, o).Rules, "ClusterRole "+o.GetName())
			}
		case "Role":
			if bound["Role/"+o.GetNamespace()+"/"+o.GetName()] {
				add(o.GetNamespace(), typed[rbacv1.Role](t, o).Rules, "Role "+o.GetName())
			}
		}
	}
	return out
}

// checkGrantsExact compares what RBAC grants with what the agent's code
// calls (derived by scanning it: derive_test.go).
func checkGrantsExact(t *testing.T, got map[grant]bool, ns string) {
	t.Helper()
	want := derivedGrants(t, ns)
	for g := range got {
		if _, ok := want[g]; !ok {
			t.Errorf("RBAC grants %s, which no code in strata-agent calls: remove it (least privilege)", g)
		}
	}
	for g, at := range want {
		if !got[g] {
			t.Errorf("strata-agent calls %s (%s), which the RBAC does not grant: add the grant to deploy/manifests and the Helm chart", g, strings.Join(at, ", "))
		}
	}
}

func TestRBACIsExactlyAgentCalls(t *testing.T) {
	checkGrantsExact(t, rbacGrants(t, loadDir(t, manifestsDir), namespace), namespace)
}

func daemonSet(t testing.TB, objs []*unstructured.Unstructured) *appsv1.DaemonSet {
	t.Helper()
	return typed[appsv1.DaemonSet](t, find(t, objs, "DaemonSet", "strata-agent"))
}

func container(t testing.TB, cs []corev1.Container, name string) *corev1.Container {
	t.Helper()
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// argValue returns the value of --name=value in args.
func argValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// checkDaemonSet holds the DaemonSet to the agent's deployment contract:
// flags, host paths, identity and privileges. Shared by the plain manifest
// and the rendered chart.
func checkDaemonSet(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ds := daemonSet(t, objs)
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("hostNetwork must be true: the agent programs the node's own network")
	}
	if spec.ServiceAccountName != agentSA {
		t.Errorf("serviceAccountName %q, want %q", spec.ServiceAccountName, agentSA)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool { return tl.Operator == corev1.TolerationOpExists && tl.Key == "" }) {
		t.Error("the agent must tolerate every taint: nodes are NotReady until the CNI is installed")
	}
	agent := container(t, spec.Containers, "agent")
	wantArgs := map[string]string{
		"node-name":       "$(NODE_NAME)",
		"state-dir":       "/var/lib/strata",
		"cni-socket":      wire.DefaultSocket,
		"control-socket":  "/run/strata/agent.sock", // beside the CNI socket, on the same hostPath
		"metrics-addr":    ":9253",
		"gossip-key-file": "/etc/strata/gossip/key",
	}
	for k, want := range wantArgs {
		if got, ok := argValue(agent.Args, k); !ok || got != want {
			t.Errorf("agent flag --%s=%q, want %q", k, got, want)
		}
	}
	if _, ok := argValue(agent.Args, "kubeconfig"); ok {
		t.Error("--kubeconfig must stay unset in the DaemonSet: in-cluster config")
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range agent.Env {
		env[e.Name] = e
	}
	if e := env["NODE_NAME"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Error("NODE_NAME must come from the downward API (spec.nodeName)")
	}
	for _, k := range []string{"ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"} {
		if e := env[k]; e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Optional == nil || !*e.ValueFrom.SecretKeyRef.Optional {
			t.Errorf("%s must come from an optional Secret key: ENS and IDC nodes have no cloud credentials", k)
		}
	}
	sc := agent.SecurityContext
	if sc == nil || sc.Privileged == nil || !*sc.Privileged || sc.Capabilities == nil {
		t.Fatal("the agent container must be privileged")
	}
	for _, c := range []corev1.Capability{"NET_ADMIN", "SYS_ADMIN", "BPF"} {
		if !slices.Contains(sc.Capabilities.Add, c) {
			t.Errorf("capability %s missing", c)
		}
	}
	// Host paths the agent needs, by mount path.
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	hostMounts := map[string]string{}
	for _, m := range agent.VolumeMounts {
		if v, ok := vols[m.Name]; ok && v.HostPath != nil {
			hostMounts[m.MountPath] = v.HostPath.Path
			if m.MountPath == "/lib/modules" && !m.ReadOnly {
				t.Error("/lib/modules must be mounted read-only")
			}
		}
	}
	for _, p := range []string{"/var/run/netns", "/run/strata", "/var/lib/strata", "/opt/cni/bin", "/etc/cni/net.d", "/sys/fs/bpf", "/lib/modules"} {
		if _, ok := hostMounts[p]; !ok {
			t.Errorf("agent lacks the host mount %s", p)
		}
	}
	// The gossip key comes from a Secret volume.
	keyFound := false
	for _, m := range agent.VolumeMounts {
		if v := vols[m.Name]; m.MountPath == "/etc/strata/gossip" && v.Secret != nil {
			keyFound = true
		}
	}
	if !keyFound {
		t.Error("the gossip key Secret is not mounted at /etc/strata/gossip")
	}
	checkTunablesWired(t, objs)
	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != "install-cni" {
		t.Fatalf("want one init container install-cni, got %d", len(spec.InitContainers))
	}
	if spec.InitContainers[0].Image != agent.Image {
		t.Errorf("install-cni image %s differs from the agent's %s: strata-cni must match the agent", spec.InitContainers[0].Image, agent.Image)
	}
}

func TestDaemonSetContract(t *testing.T) { checkDaemonSet(t, loadDir(t, manifestsDir)) }

// TestAgentHasDaemonSetFlags: the agent's own flag parser accepts the
// DaemonSet's command line, with $(VARS) expanded as the kubelet does (an
// unknown flag or a malformed value would crash-loop every agent).
func TestAgentHasDaemonSetFlags(t *testing.T) { checkAgentParsesArgs(t, loadDir(t, manifestsDir)) }

func checkAgentParsesArgs(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	cm := typed[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "strata-config"))
	agent := container(t, daemonSet(t, objs).Spec.Template.Spec.Containers, "agent")
	vars := map[string]string{}
	for _, e := range agent.Env {
		switch {
		case e.ValueFrom == nil:
			vars[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			vars[e.Name] = "node-1"
		case e.ValueFrom.ConfigMapKeyRef != nil:
			vars[e.Name] = cm.Data[e.ValueFrom.ConfigMapKeyRef.Key]
		}
	}
	varRef := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	var args []string
	for _, a := range agent.Args {
		args = append(args, varRef.ReplaceAllStringFunc(a, func(m string) string {
			name := varRef.FindStringSubmatch(m)[1]
			v, ok := vars[name]
			if !ok {
				t.Errorf("arg %s refers to $(%s), which the container does not define", a, name)
			}
			return v
		}))
	}
	cmd := cli.NewAgent()
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("strata-agent refuses the DaemonSet's arguments %q: %v", args, err)
	}
	if got := cmd.Flags().Lookup("node-name").Value.String(); got != "node-1" {
		t.Errorf("--node-name parsed as %q", got)
	}
}

// tunables are the ConfigMap keys that are agent flags (all but the
// conflist).
func tunables(cm *corev1.ConfigMap) map[string]string {
	out := map[string]string{}
	for k, v := range cm.Data {
		if !strings.HasSuffix(k, ".conflist") {
			out[k] = v
		}
	}
	return out
}

// effectiveDefaults are flags whose zero default means a value chosen
// elsewhere in the code; the ConfigMap shows the value that takes effect.
var effectiveDefaults = map[string]string{
	"probe-period": probe.DefaultProbePeriod.String(),
}

// TestConfigMapIsAgentDefaults: each ConfigMap key is a strata-agent flag,
// its value parses as that flag, and it is the agent's default, so the
// ConfigMap documents the defaults truthfully.
func TestConfigMapIsAgentDefaults(t *testing.T) {
	objs := loadDir(t, manifestsDir)
	cm := typed[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "strata-config"))
	tun := tunables(cm)
	if len(tun) == 0 {
		t.Fatal("ConfigMap strata-config has no agent settings")
	}
	for k, v := range tun {
		cmd := cli.NewAgent()
		f := cmd.Flags().Lookup(k)
		if f == nil {
			t.Errorf("ConfigMap key %q is not a strata-agent flag", k)
			continue
		}
		def := f.Value.String()
		if err := cmd.Flags().Set(k, v); err != nil {
			t.Errorf("ConfigMap %s=%q does not parse as the agent's flag: %v", k, v, err)
			continue
		}
		want := def
		if e, ok := effectiveDefaults[k]; ok {
			want = e
		}
		if got := f.Value.String(); got != want {
			t.Errorf("ConfigMap %s=%q (as the flag reads it: %s), but the agent's default is %s", k, v, got, want)
		}
	}
	if got, want := tun["fail-threshold"], strconv.Itoa(topology.DefaultConfig().FailThreshold); got != want {
		t.Errorf("fail-threshold %s, topology default %s", got, want)
	}
	// 0 leaves VNI and port to the NodePool, then the built-in default.
	if tun["vxlan-port"] != "0" || tun["vxlan-vni"] != "0" {
		t.Errorf("vxlan-vni %s, vxlan-port %s: want 0 (unset), or no NodePool's vxlan takes effect", tun["vxlan-vni"], tun["vxlan-port"])
	}
	if int(nodepool.DefaultVXLANPort) != vxlan.DefaultPort {
		t.Errorf("nodepool default port %d, vxlan default %d", nodepool.DefaultVXLANPort, vxlan.DefaultPort)
	}
	checkTunablesWired(t, objs)
}

// checkTunablesWired: the DaemonSet passes every tunable as --KEY=$(ENV),
// with ENV read from that ConfigMap key.
func checkTunablesWired(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	cm := typed[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "strata-config"))
	agent := container(t, daemonSet(t, objs).Spec.Template.Spec.Containers, "agent")
	env := map[string]corev1.EnvVar{}
	for _, e := range agent.Env {
		env[e.Name] = e
	}
	for k := range tunables(cm) {
		v, ok := argValue(agent.Args, k)
		name, isRef := strings.CutPrefix(v, "$(")
		name, _ = strings.CutSuffix(name, ")")
		if !ok || !isRef {
			t.Errorf("the DaemonSet does not pass --%s=$(ENV)", k)
			continue
		}
		e := env[name]
		if e.ValueFrom == nil || e.ValueFrom.ConfigMapKeyRef == nil || e.ValueFrom.ConfigMapKeyRef.Name != cm.Name || e.ValueFrom.ConfigMapKeyRef.Key != k {
			t.Errorf("env %s (for --%s) must come from ConfigMap %s key %s", name, k, cm.Name, k)
		}
	}
}

// TestChartValuesMatchConfigMap: the chart's default tunables are the plain
// ConfigMap's, key for key.
func TestChartValuesMatchConfigMap(t *testing.T) {
	cm := typed[corev1.ConfigMap](t, find(t, loadDir(t, manifestsDir), "ConfigMap", "strata-config"))
	b, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Config map[string]any `json:"config"`
	}
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for k, v := range values.Config {
		got[k] = fmt.Sprint(v)
	}
	if want := tunables(cm); !maps.Equal(got, want) {
		t.Errorf("values.yaml config differs from manifests/03-configmap.yaml:\nvalues: %v\nplain:  %v", got, want)
	}
}

// checkConflist parses the network list as libcni and strata-cni do.
func checkConflist(t *testing.T, objs []*unstructured.Unstructured, wantChained []string) {
	t.Helper()
	cm := typed[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "strata-config"))
	ds := daemonSet(t, objs)
	init := ds.Spec.Template.Spec.InitContainers[0]
	env := map[string]string{}
	for _, e := range init.Env {
		env[e.Name] = e.Value
	}
	name := env["CONFLIST_NAME"]
	if !strings.HasSuffix(name, ".conflist") {
		t.Fatalf("CONFLIST_NAME %q: the runtime only reads *.conflist as a list", name)
	}
	data, ok := cm.Data[name]
	if !ok {
		t.Fatalf("ConfigMap strata-config has no %s (keys %v)", name, slices.Sorted(maps.Keys(cm.Data)))
	}
	list, err := libcni.ConfListFromBytes([]byte(data))
	if err != nil {
		t.Fatalf("libcni rejects %s: %v", name, err)
	}
	var types []string
	for _, p := range list.Plugins {
		types = append(types, p.Network.Type)
	}
	if want := append([]string{"strata-cni"}, wantChained...); !slices.Equal(types, want) {
		t.Fatalf("plugins %v, want %v", types, want)
	}
	// libcni injects name and cniVersion into each plugin's config.
	var first map[string]any
	if err := json.Unmarshal(list.Plugins[0].Bytes, &first); err != nil {
		t.Fatal(err)
	}
	first["name"], first["cniVersion"] = list.Name, list.CNIVersion
	b, _ := json.Marshal(first)
	pc, err := plugin.ParseConfig(b)
	if err != nil {
		t.Fatalf("strata-cni rejects its config: %v", err)
	}
	agent := container(t, ds.Spec.Template.Spec.Containers, "agent")
	if sock, _ := argValue(agent.Args, "cni-socket"); pc.Socket != sock {
		t.Errorf("conflist socket %s, agent --cni-socket %s: the plugin could not reach the agent", pc.Socket, sock)
	}
}

func TestConflist(t *testing.T) {
	checkConflist(t, loadDir(t, manifestsDir), []string{"portmap", "bandwidth"})
}

// runInitScript runs the install-cni container's script against temporary
// host directories, as the kubelet would run it against the node's.
func runInitScript(t *testing.T, objs []*unstructured.Unstructured, hostBin string, overwrite bool) (confDir string) {
	t.Helper()
	ds := daemonSet(t, objs)
	init := ds.Spec.Template.Spec.InitContainers[0]
	if len(init.Command) != 2 || init.Command[0] != "/bin/sh" || len(init.Args) != 1 {
		t.Fatalf("install-cni must be /bin/sh -c SCRIPT, got %v %v", init.Command, init.Args)
	}
	img := t.TempDir() // stands for the image's filesystem
	confDir = t.TempDir()
	cm := typed[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "strata-config"))
	env := map[string]string{}
	for _, e := range init.Env {
		env[e.Name] = e.Value
	}
	write := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(img, "strata-cni"), "new strata-cni")
	write(filepath.Join(img, "chained/portmap"), "image portmap")
	write(filepath.Join(img, "chained/bandwidth"), "image bandwidth")
	write(filepath.Join(img, "conf", env["CONFLIST_NAME"]), cm.Data[env["CONFLIST_NAME"]])
	// The script's image paths are rewritten to the stand-in image.
	script := strings.NewReplacer("/usr/local/bin/strata-cni", filepath.Join(img, "strata-cni"), "/opt/strata/cni/", filepath.Join(img, "chained")+"/").Replace(init.Args[0])
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = append(os.Environ(),
		"CNI_BIN_DIR="+hostBin, "CNI_CONF_DIR="+confDir,
		"CONFLIST_SRC="+filepath.Join(img, "conf", env["CONFLIST_NAME"]),
		"CONFLIST_NAME="+env["CONFLIST_NAME"],
		"OVERWRITE_CHAINED="+map[bool]string{true: "true", false: "false"}[overwrite])
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install-cni script: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(confDir, env["CONFLIST_NAME"]))
	if err != nil || string(got) != cm.Data[env["CONFLIST_NAME"]] {
		t.Fatalf("conflist on the host: %q, %v", got, err)
	}
	for _, d := range []string{hostBin, confDir} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".tmp") {
				t.Errorf("temporary file %s left in %s", e.Name(), d)
			}
		}
	}
	return confDir
}

func checkInitScript(t *testing.T, objs []*unstructured.Unstructured) {
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	t.Run("fresh node", func(t *testing.T) {
		bin := t.TempDir()
		runInitScript(t, objs, bin, false)
		for f, want := range map[string]string{"strata-cni": "new strata-cni", "portmap": "image portmap", "bandwidth": "image bandwidth"} {
			if got := read(filepath.Join(bin, f)); got != want {
				t.Errorf("%s = %q, want %q", f, got, want)
			}
			if st, err := os.Stat(filepath.Join(bin, f)); err != nil || st.Mode().Perm() != 0o755 {
				t.Errorf("%s mode: %v %v", f, st, err)
			}
		}
	})
	t.Run("node with its own portmap, and an old strata-cni", func(t *testing.T) {
		bin := t.TempDir()
		_ = os.WriteFile(filepath.Join(bin, "portmap"), []byte("node portmap"), 0o755)
		_ = os.WriteFile(filepath.Join(bin, "strata-cni"), []byte("old strata-cni"), 0o755)
		runInitScript(t, objs, bin, false)
		if got := read(filepath.Join(bin, "portmap")); got != "node portmap" {
			t.Errorf("the node's portmap was replaced (%q) without overwriteChainedPlugins", got)
		}
		if got := read(filepath.Join(bin, "strata-cni")); got != "new strata-cni" {
			t.Errorf("strata-cni = %q: it must always match the agent", got)
		}
		runInitScript(t, objs, bin, true)
		if got := read(filepath.Join(bin, "portmap")); got != "image portmap" {
			t.Errorf("overwrite asked, portmap = %q", got)
		}
	})
}

func TestInitScriptInstallsCNI(t *testing.T) { checkInitScript(t, loadDir(t, manifestsDir)) }

// TestChartShipsEveryCRD: the chart's crds/ holds every CRD of
// deploy/manifests/crds-pool and deploy/crds (as symlinks, so they cannot
// drift), since `helm install` alone must give a working cluster.
func TestChartShipsEveryCRD(t *testing.T) {
	inChart := map[string]string{}
	for _, o := range loadDir(t, filepath.Join(chartDir, "crds")) {
		b, _ := json.Marshal(o.Object)
		inChart[o.GetName()] = string(b)
	}
	for _, dir := range []string{poolCRDDir, bgpCRDDir} {
		for _, o := range loadDir(t, dir) {
			if o.GetKind() != "CustomResourceDefinition" {
				continue
			}
			b, _ := json.Marshal(o.Object)
			if got, ok := inChart[o.GetName()]; !ok {
				t.Errorf("CRD %s (%s) is not in %s/crds: add a symlink to it", o.GetName(), dir, chartDir)
			} else if got != string(b) {
				t.Errorf("CRD %s in the chart differs from %s", o.GetName(), dir)
			}
		}
	}
}
