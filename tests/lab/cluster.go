package lab

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/rtproto"
	"github.com/strata-net/strata/topology"
)

// client talks to the lab's API server through a socket opened in ctl.
func (l *Lab) client() (*kubernetes.Clientset, error) {
	return kubernetes.NewForConfig(l.restConfig())
}

func (l *Lab) restConfig() *rest.Config {
	return &rest.Config{Host: l.cp.url(), BearerToken: adminToken, Timeout: 10 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, Dial: l.cp.dial}
}

func (l *Lab) nodeDir(node string) string { return filepath.Join(l.dir, "nodes", node) }

// createNodes registers every lab node with its declared labels (only
// strata.io/pool for a poolOnly node). An edge node with a podCIDR in
// lab.yaml gets it in spec.podCIDR, as kube-controller-manager would set
// it; the others get a block of their NodePool from their agent.
func (l *Lab) createNodes(ctx context.Context) error {
	cs, err := l.client()
	if err != nil {
		return err
	}
	for _, n := range l.spec.Nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{
			topology.LabelLocation: n.Location, topology.LabelPool: n.Pool,
			"kubernetes.io/hostname": n.Name,
		}}}
		if n.PoolOnly {
			delete(node.Labels, topology.LabelLocation)
		} else if n.Interconnect == string(topology.InterconnectLeasedLine) || n.Interconnect == string(topology.InterconnectInternet) {
			node.Labels[topology.LabelInterconnect] = n.Interconnect
		}
		for k, v := range n.Labels {
			node.Labels[k] = v
		}
		if n.Public != nil {
			node.Annotations = map[string]string{topology.AnnotationPublicEndpoint: n.Public.Endpoint().String()}
		}
		if n.PodCIDR.IsValid() {
			node.Spec.PodCIDR = n.PodCIDR.String()
			node.Spec.PodCIDRs = []string{n.PodCIDR.String()}
		}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create Node %s: %w", n.Name, err)
		}
	}
	return nil
}

// startAgents runs one strata-agent in each node namespace.
func (l *Lab) startAgents(ctx context.Context) error {
	key := filepath.Join(l.dir, "gossip.key")
	if _, err := os.Stat(key); err != nil {
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		if err := os.WriteFile(key, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
			return err
		}
	}
	kc := filepath.Join(l.dir, "kubeconfig")
	if err := os.WriteFile(kc, []byte(l.cp.kubeconfig()), 0o600); err != nil {
		return err
	}
	for i, n := range l.spec.Nodes {
		if err := l.startAgent(n, i, kc, key); err != nil {
			return err
		}
	}
	// Ready when every agent serves /healthz and has its CNI socket.
	deadline := time.Now().Add(90 * time.Second)
	for _, n := range l.spec.Nodes {
		for {
			st, err := l.agentStatus(ctx, n.Name)
			if err == nil && st.Ready == "yes" {
				if _, err := os.Stat(l.socket(n.Name)); err == nil {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("agent on %s not ready after 90s (last: %v); log: %s", n.Name, err, l.procs.logPath("agent-"+n.Name))
			}
			if !alive(l.procs.pid("agent-" + n.Name)) {
				return fmt.Errorf("agent on %s exited; log %s:\n%s", n.Name, l.procs.logPath("agent-"+n.Name), tail(l.procs.logPath("agent-"+n.Name), 20))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

func (l *Lab) socket(node string) string { return filepath.Join(l.nodeDir(node), "cni.sock") }

func (l *Lab) agentBin(name string) string {
	if p := os.Getenv("STRATA_BIN"); p != "" {
		return filepath.Join(p, name)
	}
	exe, _ := os.Executable()
	return filepath.Join(filepath.Dir(exe), name)
}

func (l *Lab) startAgent(n Node, i int, kubeconfig, key string) error {
	dir := l.nodeDir(n.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	argv := []string{l.agentBin("strata-agent"), "--node-name", n.Name, "--kubeconfig", kubeconfig,
		"--state-dir", dir, "--ipam-dir", filepath.Join(dir, "ipam"), "--cni-socket", l.socket(n.Name),
		"--control-socket", filepath.Join(dir, "agent.sock"),
		"--metrics-addr", net.JoinHostPort(l.spec.MgmtAddr(i+1).String(), "9253"),
		"--gossip-key-file", key, "--underlay-link", "eth0", "--hold-down", "3s"}
	if n.ASN != 0 {
		argv = append(argv, "--bgp-asn", strconv.FormatUint(uint64(n.ASN), 10))
	}
	argv = append(argv, l.cloudArgs(n)...)
	if l.spec.hasInternet() {
		// Across a real internet only the WAN carries cross-site pairs; the
		// node's public endpoint comes from its Node annotation.
		argv = append(argv, "--wan", "on")
	}
	argv = append(argv, l.authorityArgs()...)
	return l.procs.start("agent-"+n.Name, l.ns(n.Name).Exec(argv...))
}

// agentStatus fetches an agent's /status over the management network.
func (l *Lab) agentStatus(ctx context.Context, node string) (agentStatus, error) {
	var st agentStatus
	idx := -1
	for i, n := range l.spec.Nodes {
		if n.Name == node {
			idx = i
		}
	}
	if idx < 0 {
		return st, fmt.Errorf("no node %q", node)
	}
	b, err := l.httpGet(ctx, "http://"+net.JoinHostPort(l.spec.MgmtAddr(idx+1).String(), "9253")+"/status")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

// agentStatus mirrors agent.Status (kept local: the lab reads JSON, as
// `strata status` does).
type agentStatus struct {
	Node        string `json:"node"`
	Datapath    string `json:"datapath"`
	Ready       string `json:"ready"`
	Allocations int    `json:"allocations"`
	PoolIdle    *int   `json:"poolIdle"`
	Refused     []struct {
		Name           string `json:"name"`
		Isolated       string `json:"isolated"`
		IsolatedReason string `json:"isolatedReason"`
		Withheld       []struct {
			Reason string `json:"reason"`
		} `json:"withheld"`
	} `json:"refused"`
	Peers []struct {
		Peer   string `json:"peer"`
		Path   string `json:"path"`
		Reason string `json:"reason"`
	} `json:"peers"`
}

func (st agentStatus) pathTo(peer string) (string, string) {
	for _, p := range st.Peers {
		if p.Peer == peer {
			return p.Path, p.Reason
		}
	}
	return "local", ""
}

// PodInfo is one lab pod: a namespace wired by strata-cni.
type PodInfo struct {
	Node string `json:"node"`
	Name string `json:"name"`
	IP   string `json:"ip"`
}

func (p PodInfo) host() string { return p.Node + "-" + strings.TrimPrefix(p.Name, "pod-") }

// createPods runs strata-cni through cnitool for every pod, as a runtime
// would, inside the node's namespace, and records Pod objects.
func (l *Lab) createPods(ctx context.Context) error {
	if _, err := l.pods(); err == nil {
		return nil // idempotent up: the pods exist
	}
	cs, err := l.client()
	if err != nil {
		return err
	}
	var pods []PodInfo
	for _, n := range l.spec.Nodes {
		confDir := filepath.Join(l.nodeDir(n.Name), "net.d")
		if err := os.MkdirAll(confDir, 0o755); err != nil {
			return err
		}
		conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"strata","plugins":[{"type":"strata-cni","socket":%q}]}`, l.socket(n.Name))
		if err := os.WriteFile(filepath.Join(confDir, "10-strata.conflist"), []byte(conf), 0o644); err != nil {
			return err
		}
		for i := range n.Pods {
			p := PodInfo{Node: n.Name, Name: fmt.Sprintf("pod-%d", i+1)}
			ip, err := l.addPod(p, confDir)
			if err != nil {
				return err
			}
			p.IP = ip
			pods = append(pods, p)
			obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: n.Name + "-" + p.Name, Namespace: "default"},
				Spec: corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "c", Image: "lab"}}}}
			created, err := cs.CoreV1().Pods("default").Create(ctx, obj, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create Pod %s: %w", obj.Name, err)
			}
			if err == nil {
				created.Status.PodIP = ip
				created.Status.PodIPs = []corev1.PodIP{{IP: ip}}
				created.Status.Phase = corev1.PodRunning
				_, _ = cs.CoreV1().Pods("default").UpdateStatus(ctx, created, metav1.UpdateOptions{})
			}
		}
	}
	b, _ := json.MarshalIndent(pods, "", "  ")
	return os.WriteFile(filepath.Join(l.dir, "pods.json"), b, 0o644)
}

func (l *Lab) pods() ([]PodInfo, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, "pods.json"))
	if err != nil {
		return nil, fmt.Errorf("no pods recorded: is the lab up? (%w)", err)
	}
	var ps []PodInfo
	return ps, json.Unmarshal(b, &ps)
}

// addPod creates the pod namespace and runs cnitool add in the node.
func (l *Lab) addPod(p PodInfo, confDir string) (string, error) {
	name := nsutil.LabName(p.host())
	podNS, err := nsutil.Open(name)
	if err != nil {
		if podNS, err = nsutil.Create(name); err != nil {
			return "", err
		}
	}
	cmd := exec.Command("ip", l.ns(p.Node).Exec(filepath.Join(l.binDir, "cnitool"), "add", "strata", podNS.Path)[1:]...)
	cmd.Env = append(os.Environ(), "NETCONFPATH="+confDir, "CNI_PATH="+filepath.Dir(l.agentBin("strata-cni"))+":/usr/lib/cni",
		"CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME="+p.Node+"-"+p.Name, "CNI_IFNAME=eth0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("cnitool add %s on %s: %v\n%s", p.Name, p.Node, err, out)
	}
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) == 0 {
		return "", fmt.Errorf("cnitool add %s on %s: no address in result: %s", p.Name, p.Node, out)
	}
	ip, _, _ := strings.Cut(res.IPs[0].Address, "/")
	return ip, nil
}

// podNS returns the namespace of a lab pod.
func (l *Lab) podNS(p PodInfo) nsutil.NS { return l.ns(p.host()) }

// ping sends count pings from a pod; it returns the loss in percent.
func (l *Lab) ping(ctx context.Context, from PodInfo, to string, count int, interval time.Duration) (int, error) {
	args := []string{"ping", "-n", "-q", "-c", strconv.Itoa(count), "-W", "1"}
	if interval > 0 {
		args = append(args, "-i", strconv.FormatFloat(interval.Seconds(), 'f', 3, 64))
	}
	args = append(args, to)
	out, _ := exec.CommandContext(ctx, "ip", l.podNS(from).Exec(args...)[1:]...).CombinedOutput()
	s := string(out)
	i := strings.Index(s, "% packet loss")
	if i < 0 {
		return 100, fmt.Errorf("ping %s → %s: %s", from.Name, to, s)
	}
	j := strings.LastIndexAny(s[:i], " ,") + 1
	loss, err := strconv.ParseFloat(s[j:i], 64)
	return int(loss), err
}

// KillAgent kills a node's agent with SIGKILL, as a crash would.
func (l *Lab) KillAgent(node string) { l.procs.kill("agent-" + node) }

// StartAgent (re)starts a node's agent and waits until it is ready.
func (l *Lab) StartAgent(ctx context.Context, node string) error {
	for i, n := range l.spec.Nodes {
		if n.Name != node {
			continue
		}
		_ = l.procs.stop("agent-"+node, time.Second)
		if err := l.startAgent(n, i, filepath.Join(l.dir, "kubeconfig"), filepath.Join(l.dir, "gossip.key")); err != nil {
			return err
		}
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if st, err := l.agentStatus(ctx, node); err == nil && st.Ready == "yes" {
				return nil
			}
			time.Sleep(200 * time.Millisecond)
		}
		return fmt.Errorf("agent on %s not ready 60s after restart; log: %s", node, l.procs.logPath("agent-"+node))
	}
	return fmt.Errorf("no node %q", node)
}

// Pods lists the lab's pods.
func (l *Lab) Pods() ([]PodInfo, error) { return l.pods() }

// PingStats counts one ping stream.
type PingStats struct{ Sent, Received, Lost int }

// PingStream sends count pings, interval apart, from a pod and counts the
// replies: the lab's probe stream for failover windows (lost × interval).
func (l *Lab) PingStream(ctx context.Context, from PodInfo, to string, count int, interval time.Duration) (PingStats, error) {
	args := []string{"ping", "-n", "-q", "-c", strconv.Itoa(count), "-W", "1",
		"-i", strconv.FormatFloat(interval.Seconds(), 'f', 3, 64), to}
	out, _ := exec.CommandContext(ctx, "ip", l.podNS(from).Exec(args...)[1:]...).CombinedOutput()
	var st PingStats
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "packets transmitted") {
			if _, err := fmt.Sscanf(strings.TrimSpace(line), "%d packets transmitted, %d received", &st.Sent, &st.Received); err != nil {
				return st, fmt.Errorf("ping output %q: %w", line, err)
			}
			st.Lost = st.Sent - st.Received
			return st, nil
		}
	}
	return st, fmt.Errorf("ping %s → %s: no summary in %q", from.Name, to, out)
}

// Ping sends count pings from a pod to an address; it returns the loss in percent.
func (l *Lab) Ping(ctx context.Context, from PodInfo, to string, count int, interval time.Duration) (int, error) {
	return l.ping(ctx, from, to, count, interval)
}

// Status prints each agent's status, as `strata status` does on a node.
func (l *Lab) Status(ctx context.Context, w io.Writer) error {
	for _, n := range l.spec.Nodes {
		st, err := l.agentStatus(ctx, n.Name)
		if err != nil {
			fmt.Fprintf(w, "node %s: agent unreachable: %v (log: %s)\n\n", n.Name, err, l.procs.logPath("agent-"+n.Name))
			continue
		}
		fmt.Fprintf(w, "node %s: datapath %s, ready: %s\n", st.Node, st.Datapath, st.Ready)
		for _, p := range st.Peers {
			fmt.Fprintf(w, "  %-10s %-11s %s\n", p.Peer, p.Path, p.Reason)
		}
		fmt.Fprintln(w)
	}
	return nil
}

// Churn adds and then deletes n extra pods spread over the nodes, through
// strata-cni, as a runtime would. It returns the first error.
func (l *Lab) Churn(ctx context.Context, n int) error {
	for i := range n {
		node := l.spec.Nodes[i%len(l.spec.Nodes)]
		p := PodInfo{Node: node.Name, Name: fmt.Sprintf("pod-churn%d", i)}
		confDir := filepath.Join(l.nodeDir(node.Name), "net.d")
		if _, err := l.addPod(p, confDir); err != nil {
			return err
		}
		if err := l.delPod(p, confDir); err != nil {
			return err
		}
	}
	return nil
}

// delPod runs cnitool del for a pod and removes its namespace.
func (l *Lab) delPod(p PodInfo, confDir string) error {
	podNS := l.podNS(p)
	cmd := exec.Command("ip", l.ns(p.Node).Exec(filepath.Join(l.binDir, "cnitool"), "del", "strata", podNS.Path)[1:]...)
	cmd.Env = append(os.Environ(), "NETCONFPATH="+confDir, "CNI_PATH="+filepath.Dir(l.agentBin("strata-cni"))+":/usr/lib/cni",
		"CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME="+p.Node+"-"+p.Name, "CNI_IFNAME=eth0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cnitool del %s on %s: %v\n%s", p.Name, p.Node, err, out)
	}
	return nsutil.Delete(podNS.Name)
}

// Accounting is what a node holds for its pods, from three places, and on
// cloud nodes from a fourth: the cloud.
type Accounting struct {
	Node        string
	Pods        int // pods the lab created on the node
	Allocations int // the agent's IPAM
	HostRoutes  int // host routes to pods in the kernel
	// Cloud nodes only (Cloud true): the warm pool's free addresses as the
	// agent reports them, and the addresses the ECS emulator has assigned
	// to the instance's secondary ENIs (secondary IPs, 16 per /28 prefix).
	Cloud    bool
	PoolIdle int
	CloudIPs int
}

// Account compares each node's live pods with its IPAM and its kernel, and
// on cloud nodes with the cloud's view.
func (l *Lab) Account(ctx context.Context) ([]Accounting, error) {
	pods, err := l.pods()
	if err != nil {
		return nil, err
	}
	var out []Accounting
	for _, n := range l.spec.Nodes {
		a := Accounting{Node: n.Name}
		for _, p := range pods {
			if p.Node == n.Name {
				a.Pods++
			}
		}
		st, err := l.agentStatus(ctx, n.Name)
		if err != nil {
			return nil, err
		}
		a.Allocations = st.Allocations
		if n.Location == "cloud" && l.spec.Cloud != nil {
			if st.PoolIdle == nil {
				return nil, fmt.Errorf("%s: the agent reports no warm pool (poolIdle) in /status", n.Name)
			}
			a.Cloud, a.PoolIdle = true, *st.PoolIdle
			if a.CloudIPs, err = l.cloudIPs(ctx, instanceID(n.Name)); err != nil {
				return nil, err
			}
		}
		if err := l.ns(n.Name).Do(func() error {
			rs, err := nlretry.Dump(func() ([]netlink.Route, error) {
				return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: rtproto.Pod}, netlink.RT_FILTER_PROTOCOL)
			})
			a.HostRoutes = len(rs)
			return err
		}); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// StopAPIServer stops kube-apiserver (the API outage test); StartAPIServer
// brings it back.
func (l *Lab) StopAPIServer() error { return l.procs.stop("kube-apiserver", 5*time.Second) }

// StartAPIServer restarts kube-apiserver and waits until it is ready.
func (l *Lab) StartAPIServer(ctx context.Context) error { return l.cp.start(ctx) }

// PodNS is the network namespace of a lab pod.
func (l *Lab) PodNS(p PodInfo) nsutil.NS { return l.podNS(p) }

// NodeNS is the network namespace of a lab node (or router) by its name in
// the description.
func (l *Lab) NodeNS(name string) nsutil.NS { return l.ns(name) }

// settle waits until no agent's per-peer paths have changed for longer than
// the hold-down (3 s in the lab), so `matrix` right after `up` shows the
// steady state, not the moment before BGP converged.
func (l *Lab) settle(ctx context.Context) error {
	const quiet = 6 * time.Second
	var last string
	since := time.Now()
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); {
		var b strings.Builder
		for _, n := range l.spec.Nodes {
			st, err := l.agentStatus(ctx, n.Name)
			if err != nil {
				fmt.Fprintf(&b, "%s:?;", n.Name)
				continue
			}
			for _, p := range st.Peers {
				fmt.Fprintf(&b, "%s>%s:%s;", n.Name, p.Peer, p.Path)
			}
		}
		if sig := b.String(); sig != last {
			last, since = sig, time.Now()
		} else if time.Since(since) >= quiet && !strings.Contains(sig, ":?;") {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("agents' paths still changing after 90s; see `strata-lab status` and the agent logs in %s/logs", l.dir)
}
