//go:build privileged

package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/bpf"
	"github.com/strata-net/strata/cni/server"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/podipam"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/harness/netlab"
)

// fastpathNode is one node namespace running the agent's fast-path wiring
// behind a real CNI server, with pods added by the real strata-cni binary.
type fastpathNode struct {
	t      *testing.T
	lab    *netlab.Lab
	node   nsutil.NS
	role   role.Role
	fast   *podFastpath
	plugin string
	socket string
}

func buildPlugin(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "strata-cni")
	cmd := exec.Command("go", "build", "-o", out, "github.com/strata-net/strata/cmd/strata-cni")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build strata-cni: %v\n%s", err, b)
	}
	return out
}

func newFastpathNode(t *testing.T) *fastpathNode {
	testutil.RequireRoot(t)
	if err := bpf.Supported(); err != nil {
		t.Fatalf("this test needs the fast path: %v", err)
	}
	lab := netlab.New(t, netlab.Spec{Hosts: []netlab.Host{{Name: "node", Forward: true}, {Name: "poda"}, {Name: "podb"}}})
	dir := t.TempDir()
	st, err := ipamstore.Open(filepath.Join(dir, "ipam.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	r, err := podipam.New(netip.MustParsePrefix("10.246.1.0/24"), st, podipam.Options{MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	n := &fastpathNode{t: t, lab: lab, node: lab.NS("node"), role: r, plugin: buildPlugin(t), socket: filepath.Join(dir, "cni.sock")}
	n.startFastpath()

	// The CNI server calls the wrapped role, exactly as Agent.Run wires it.
	l, err := server.Listen(n.socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srvDone := make(chan struct{})
	go func() {
		defer close(srvDone)
		_ = server.New(&lateRole{n: n}, server.Options{}).Serve(ctx, l)
	}()
	t.Cleanup(func() { cancel(); <-srvDone })
	return n
}

// lateRole hands every CNI call to the current fast path's wrap, so the
// "restart" below swaps the wiring under a running server.
type lateRole struct {
	role.Role
	n  *fastpathNode
	mu sync.Mutex
}

func (l *lateRole) current() role.Role {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n.fast.wrap(l.n.role)
}

func (l *lateRole) Name() string { return l.n.role.Name() }
func (l *lateRole) Ready() error { return l.n.role.Ready() }
func (l *lateRole) Allocate(ctx context.Context, req role.PodRequest) (role.Allocation, error) {
	return l.current().Allocate(ctx, req)
}
func (l *lateRole) Release(ctx context.Context, id, ifName string) error {
	return l.current().Release(ctx, id, ifName)
}
func (l *lateRole) Allocations(ctx context.Context) ([]role.Allocation, error) {
	return l.n.role.Allocations(ctx)
}

// startFastpath runs the wiring as Agent.Run does: decision, load, pod
// prefixes, then the pod sync loop fed by the role's allocations.
func (n *fastpathNode) startFastpath() {
	t := n.t
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// auto, as shipped: it also steps aside for netfilter forward rules.
	f, err := newPodFastpath(bpf.Config{Setting: bpf.SettingAuto}, bpf.Supported, &n.node, log)
	if err != nil {
		t.Fatal(err)
	}
	if !f.active() {
		t.Fatalf("fast path not active: %s", f.decision.Reason)
	}
	if err := f.fp.SetPodPrefixes([]netip.Prefix{netip.MustParsePrefix("10.246.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	n.fast = f
	f.start(context.Background(), n.role.Allocations)
	t.Cleanup(n.stopFastpath)
}

func (n *fastpathNode) stopFastpath() {
	if n.fast != nil {
		n.fast.close()
	}
}

// cni runs strata-cni in the node namespace, as the container runtime would.
func (n *fastpathNode) cni(verb, pod string) {
	n.t.Helper()
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"strata","type":"strata-cni","socket":%q}`, n.socket)
	argv := n.node.Exec(n.plugin)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(conf)
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+verb, "CNI_CONTAINERID=ctr-"+pod, "CNI_NETNS="+n.lab.NS(pod).Path,
		"CNI_IFNAME=eth0", "CNI_PATH="+filepath.Dir(n.plugin), "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME="+pod)
	if out, err := cmd.CombinedOutput(); err != nil {
		n.t.Fatalf("CNI %s %s: %v\n%s", verb, pod, err, out)
	}
}

// podAddr reads a pod's address and MAC from inside its namespace.
func (n *fastpathNode) podAddr(pod string) (netip.Addr, net.HardwareAddr) {
	n.t.Helper()
	var ip netip.Addr
	var mac net.HardwareAddr
	err := n.lab.NS(pod).Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil || len(addrs) == 0 {
			return fmt.Errorf("no address on eth0: %v", err)
		}
		ip, _ = netip.AddrFromSlice(addrs[0].IP.To4())
		mac = l.Attrs().HardwareAddr
		return nil
	})
	if err != nil {
		n.t.Fatalf("%s: %v", pod, err)
	}
	return ip, mac
}

// waitEndpoint waits (bounded, not timed) until the fast path has ip's entry
// with the pod's MAC, or has none when mac is nil.
func (n *fastpathNode) waitEndpoint(ip netip.Addr, mac net.HardwareAddr) {
	n.t.Helper()
	var last map[netip.Addr]bpf.Endpoint
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		eps, err := n.fast.fp.Endpoints()
		if err != nil {
			n.t.Fatal(err)
		}
		last = eps
		ep, ok := eps[ip]
		if mac == nil && !ok || mac != nil && ok && bytes.Equal(ep.PodMAC, mac) {
			return
		}
	}
	n.t.Fatalf("endpoint %s: want MAC %v, have %v", ip, mac, last)
}

func (n *fastpathNode) ping(from string, to netip.Addr, args ...string) error {
	argv := n.lab.NS(from).Exec(append([]string{"ping", "-q", "-W", "2"}, append(args, to.String())...)...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s -> %s: %w\n%s", from, to, err, out)
	}
	if !strings.Contains(string(out), " 0% packet loss") {
		return fmt.Errorf("ping %s -> %s lost packets:\n%s", from, to, out)
	}
	return nil
}

// switchTo flips the run-time switch through the agent's control socket,
// as `strata fastpath on|off` does.
func (n *fastpathNode) switchTo(c *http.Client, state string) {
	n.t.Helper()
	if code, body := call(n.t, c, http.MethodPost, "http://agent/bpf/fastpath/"+state); code != http.StatusOK {
		n.t.Fatalf("POST /bpf/fastpath/%s on the control socket: %d %s", state, code, body)
	}
}

// serveHTTP starts the agent's status listener and control socket over
// this node's fast path.
func (n *fastpathNode) serveHTTP() *agentHTTP {
	a := &Agent{cfg: Config{NodeName: "node", MetricsAddr: "127.0.0.1:0", ControlSocket: filepath.Join(n.t.TempDir(), "agent.sock")},
		reg: prometheus.NewRegistry(), log: slog.Default(), fast: n.fast}
	ctx, cancel := context.WithCancel(context.Background())
	n.t.Cleanup(cancel)
	h, err := a.startHTTP(ctx, defaultHTTPLimits)
	if err != nil {
		n.t.Fatal(err)
	}
	return h
}

func TestPrivilegedAgentFastpathFollowsCNI(t *testing.T) {
	n := newFastpathNode(t)
	n.cni("ADD", "poda")
	n.cni("ADD", "podb")
	ipA, macA := n.podAddr("poda")
	ipB, macB := n.podAddr("podb")
	n.waitEndpoint(ipA, macA)
	n.waitEndpoint(ipB, macB)

	t.Run("local traffic is redirected and counted", func(t *testing.T) {
		if err := n.ping("poda", ipB, "-c", "5", "-i", "0.05"); err != nil {
			t.Fatal(err)
		}
		c, err := n.fast.fp.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if c.Paths["local"].Packets < 10 || c.Pods[ipA].Local.Packets < 5 || c.Pods[ipB].Local.Packets < 5 {
			t.Fatalf("want >= 5 redirected echo requests and replies: path local %d, pod A %d, pod B %d",
				c.Paths["local"].Packets, c.Pods[ipA].Local.Packets, c.Pods[ipB].Local.Packets)
		}
		st := n.fast.status()
		if !st.Active || !st.Enabled || st.Endpoints != 2 || len(st.Attached) != 2 {
			t.Fatalf("status %+v: want active, enabled, 2 endpoints on 2 veths", st)
		}
	})

	t.Run("a netfilter forward rule makes it step aside", func(t *testing.T) {
		// A NetworkPolicy-style rule in the node's FORWARD hook: fast-pathed
		// packets would never meet it. The auto fast path must step aside
		// so the rule holds, and come back once it is gone.
		nft := func(ruleset string) {
			t.Helper()
			argv := n.node.Exec("nft", "-f", "-")
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Stdin = strings.NewReader(ruleset)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("nft: %v\n%s", err, out)
			}
		}
		if _, err := exec.LookPath("nft"); err != nil {
			t.Skip("nft(8) not installed (make deps installs it)")
		}
		nft(fmt.Sprintf(`table inet netpol {
	chain pod_b_ingress {
		ip saddr %s ip daddr %s drop
	}
	chain forwarding {
		type filter hook forward priority 0; policy accept;
		jump pod_b_ingress
	}
}`, ipA, ipB))
		t.Cleanup(func() { // gone already unless the test failed half way
			argv := n.node.Exec("nft", "delete", "table", "inet", "netpol")
			_ = exec.Command(argv[0], argv[1:]...).Run()
		})
		waitFor(t, "the fast path to step aside", func() bool { st := n.fast.status(); return st.SteppedAside && !st.Enabled })
		if r := forwardingReason(n.fast.status()); !strings.Contains(r, "stepped aside") || !strings.Contains(r, "pod_b_ingress drops") {
			t.Fatalf("status reason %q: want it to say it stepped aside and name the rule", r)
		}
		if err := n.ping("poda", ipB, "-c", "3", "-i", "0.05"); err == nil {
			t.Fatal("pod A reached pod B through a netfilter rule that drops it: the fast path bypassed it")
		}
		nft("delete table inet netpol")
		waitFor(t, "the fast path to resume", func() bool { st := n.fast.status(); return !st.SteppedAside && st.Enabled })
		before, _ := n.fast.fp.Counters()
		if err := n.ping("poda", ipB, "-c", "5", "-i", "0.05"); err != nil {
			t.Fatal(err)
		}
		if after, _ := n.fast.fp.Counters(); after.Paths["local"].Packets < before.Paths["local"].Packets+10 {
			t.Fatalf("resumed, the pings must be redirected again: local %d -> %d", before.Paths["local"].Packets, after.Paths["local"].Packets)
		}
	})

	t.Run("the run-time switch loses no ping", func(t *testing.T) {
		// The TCP status listener refuses the switch; the socket takes it.
		h := n.serveHTTP()
		code, body := call(t, http.DefaultClient, http.MethodPost, "http://"+h.tcp.String()+"/bpf/fastpath/off")
		if code != http.StatusMethodNotAllowed || !n.fast.enabled() {
			t.Fatalf("a switch over TCP must be refused: %d %s, enabled %v", code, body, n.fast.enabled())
		}
		sock := unixClient(h.control)
		pinged := make(chan error, 1)
		go func() { pinged <- n.ping("poda", ipB, "-c", "200", "-i", "0.01") }()
		for i := 0; i < 6; i++ {
			time.Sleep(150 * time.Millisecond) // spread the flips over the ping run
			n.switchTo(sock, []string{"off", "on"}[i%2])
		}
		if err := <-pinged; err != nil {
			t.Fatal(err)
		}
		n.switchTo(sock, "off")
		if n.fast.enabled() {
			t.Fatal("switched off over the control socket, the fast path still forwards")
		}
		before, _ := n.fast.fp.Counters()
		if err := n.ping("poda", ipB, "-c", "5", "-i", "0.05"); err != nil {
			t.Fatalf("with the fast path off: %v", err)
		}
		after, _ := n.fast.fp.Counters()
		if after.Paths["local"].Packets != before.Paths["local"].Packets || after.Paths["disabled"].Packets < before.Paths["disabled"].Packets+10 {
			t.Fatalf("switched off, the pings must take the stack: local %d -> %d, disabled %d -> %d",
				before.Paths["local"].Packets, after.Paths["local"].Packets, before.Paths["disabled"].Packets, after.Paths["disabled"].Packets)
		}
		n.switchTo(sock, "on")
	})

	t.Run("DEL removes the pod's entries", func(t *testing.T) {
		n.cni("DEL", "podb")
		eps, err := n.fast.fp.Endpoints()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := eps[ipB]; ok {
			t.Fatalf("endpoint of deleted pod %s still present right after DEL: %v", ipB, eps)
		}
		c, _ := n.fast.fp.Counters()
		if _, ok := c.Pods[ipB]; ok {
			t.Fatalf("counters of deleted pod %s still present", ipB)
		}
		if att := n.fast.fp.Attached(); len(att) != 1 {
			t.Fatalf("attached %v: want only pod A's veth", att)
		}
	})

	t.Run("a restarted agent syncs the live pods", func(t *testing.T) {
		n.stopFastpath()
		n.startFastpath()
		n.waitEndpoint(ipA, macA)
		n.cni("ADD", "podb")
		ipB, macB = n.podAddr("podb")
		n.waitEndpoint(ipB, macB)
		if err := n.ping("poda", ipB, "-c", "5", "-i", "0.05"); err != nil {
			t.Fatal(err)
		}
		c, _ := n.fast.fp.Counters()
		if c.Pods[ipA].Local.Packets < 5 {
			t.Fatalf("after restart pod A's pings were not redirected: %+v", c.Pods[ipA])
		}
	})
}

// waitFor polls cond (bounded; not a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
