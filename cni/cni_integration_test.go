//go:build integration

package cni_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/nsutil"
)

var podCIDR = netip.MustParsePrefix("10.244.1.0/24")

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// resultIP checks a printed result is in the requested version and returns
// its pod address.
func resultIP(t *testing.T, ver string, out []byte) netip.Addr {
	t.Helper()
	var head struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(out, &head); err != nil || head.CNIVersion != ver {
		t.Fatalf("result version %q (%v), want %s: %s", head.CNIVersion, err, ver, out)
	}
	r, err := create.Create(ver, out)
	if err != nil {
		t.Fatalf("parse %s result: %v: %s", ver, err, out)
	}
	return firstIP(t, r)
}

func firstIP(t *testing.T, r types.Result) netip.Addr {
	t.Helper()
	c, err := current.NewResultFromResult(r)
	if err != nil || len(c.IPs) == 0 {
		t.Fatalf("result without IPs: %v %v", r, err)
	}
	a, _ := netip.AddrFromSlice(c.IPs[0].Address.IP.To4())
	if !podCIDR.Contains(a) {
		t.Fatalf("pod address %v outside %v", a, podCIDR)
	}
	return a
}

// assertGone checks an attachment left nothing: no node link, no pod
// interface, no allocation.
func assertGone(t *testing.T, l *lab, a *agent, pod nsutil.NS, containerID string) {
	t.Helper()
	if links := l.nodeLinks(); len(links) != 0 {
		t.Errorf("node namespace still has links %v", links)
	}
	if got := podAddr(t, pod, "eth0"); got != "" {
		t.Errorf("pod still has eth0 with %s", got)
	}
	if containerID != "" {
		if got := a.held(containerID, "eth0"); got != "" {
			t.Errorf("agent still holds %s for %s", got, containerID)
		}
	}
}

func rtConf(containerID string, pod nsutil.NS) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: containerID, NetNS: pod.Path, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "web-" + containerID}},
	}
}

func loadList(t *testing.T, dir, name string) *libcni.NetworkConfigList {
	t.Helper()
	l, err := libcni.LoadNetworkConf(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestIntegrationVerbsAllVersions drives ADD, CHECK, DEL and DEL again
// through cnitool and through libcni for every supported spec version.
func TestIntegrationVerbsAllVersions(t *testing.T) {
	l := newLab(t)
	a := startAgent(t, podCIDR.String())
	for _, ver := range allVersions {
		t.Run(ver+"/cnitool", func(t *testing.T) {
			netName := uniq("strata-it-")
			dir := writeConf(t, netName, ver, a.socket, false)
			pod := l.pod()
			out, err := l.cnitool(dir, "add", netName, pod)
			if err != nil {
				t.Fatal(err)
			}
			ip := resultIP(t, ver, out)
			if got := podAddr(t, pod, "eth0"); got != ip.String() {
				t.Fatalf("pod eth0 has %q, result says %s", got, ip)
			}
			if err := ping(t, pod, "10.244.1.1"); err != nil {
				t.Fatal(err)
			}
			_, err = l.cnitool(dir, "check", netName, pod)
			if ver == "0.3.1" {
				if err == nil {
					t.Fatal("CHECK with a 0.3.1 config succeeded; the spec has no CHECK before 0.4.0")
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if _, err := l.cnitool(dir, "del", netName, pod); err != nil {
				t.Fatal(err)
			}
			assertGone(t, l, a, pod, "")
			if _, err := l.cnitool(dir, "del", netName, pod); err != nil {
				t.Fatalf("second DEL: %v", err)
			}
		})
		t.Run(ver+"/libcni", func(t *testing.T) {
			netName := uniq("strata-it-")
			list := loadList(t, writeConf(t, netName, ver, a.socket, false), netName)
			cn := l.libcni()
			pod1, pod2 := l.pod(), l.pod()
			rt1, rt2 := rtConf(uniq("c"), pod1), rtConf(uniq("c"), pod2)
			var r1, r2 types.Result
			if err := l.inNode(func() (err error) {
				if r1, err = cn.AddNetworkList(testCtx(t), list, rt1); err != nil {
					return err
				}
				r2, err = cn.AddNetworkList(testCtx(t), list, rt2)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if r1.Version() != ver {
				t.Fatalf("result version %s, want %s", r1.Version(), ver)
			}
			ip1, ip2 := firstIP(t, r1), firstIP(t, r2)
			if ip1 == ip2 {
				t.Fatalf("two pods share %v", ip1)
			}
			if got := a.held(rt1.ContainerID, "eth0"); got != ip1.String() {
				t.Fatalf("agent holds %q for pod 1, result says %s", got, ip1)
			}
			// Pod to pod through the node's routing.
			if err := ping(t, pod1, ip2.String()); err != nil {
				t.Fatal(err)
			}
			if ver != "0.3.1" {
				if err := l.inNode(func() error { return cn.CheckNetworkList(testCtx(t), list, rt1) }); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			for i := 0; i < 2; i++ {
				if err := l.inNode(func() error {
					if err := cn.DelNetworkList(testCtx(t), list, rt1); err != nil {
						return err
					}
					return cn.DelNetworkList(testCtx(t), list, rt2)
				}); err != nil {
					t.Fatalf("DEL round %d: %v", i+1, err)
				}
			}
			assertGone(t, l, a, pod1, rt1.ContainerID)
			assertGone(t, l, a, pod2, rt2.ContainerID)
		})
	}
}

// TestIntegrationDelWhenNetnsGone: DEL succeeds and cleans the host side
// after the pod's namespace was deleted.
func TestIntegrationDelWhenNetnsGone(t *testing.T) {
	l := newLab(t)
	a := startAgent(t, podCIDR.String())
	netName := uniq("strata-it-")
	list := loadList(t, writeConf(t, netName, "1.1.0", a.socket, false), netName)
	cn := l.libcni()
	pod := l.pod()
	rt := rtConf(uniq("c"), pod)
	if err := l.inNode(func() error { _, err := cn.AddNetworkList(testCtx(t), list, rt); return err }); err != nil {
		t.Fatal(err)
	}
	if err := nsutil.Delete(pod.Name); err != nil {
		t.Fatal(err)
	}
	if err := l.inNode(func() error { return cn.DelNetworkList(testCtx(t), list, rt) }); err != nil {
		t.Fatalf("DEL after the netns is gone: %v", err)
	}
	if links := l.nodeLinks(); len(links) != 0 {
		t.Fatalf("node links left: %v", links)
	}
	if got := a.held(rt.ContainerID, "eth0"); got != "" {
		t.Fatalf("agent still holds %s", got)
	}
}

// TestIntegrationGC: GC with a partial valid list releases every other
// allocation, including ones libcni's cache never knew.
func TestIntegrationGC(t *testing.T) {
	l := newLab(t)
	a := startAgent(t, podCIDR.String())
	netName := uniq("strata-it-")
	list := loadList(t, writeConf(t, netName, "1.1.0", a.socket, false), netName)
	cn := l.libcni()
	var rts []*libcni.RuntimeConf
	for range 3 {
		rt := rtConf(uniq("c"), l.pod())
		rts = append(rts, rt)
		if err := l.inNode(func() error { _, err := cn.AddNetworkList(testCtx(t), list, rt); return err }); err != nil {
			t.Fatal(err)
		}
	}
	// Orphans: allocations whose runtime state was lost.
	for _, id := range []string{"orphan-1", "orphan-2"} {
		if _, err := a.client().Add(testCtx(t), wire.AddRequest{ContainerID: id, IfName: "eth0"}); err != nil {
			t.Fatal(err)
		}
	}
	keep := types.GCAttachment{ContainerID: rts[0].ContainerID, IfName: "eth0"}
	if err := l.inNode(func() error {
		return cn.GCNetworkList(testCtx(t), list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{keep}})
	}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if got := a.held(keep.ContainerID, "eth0"); got == "" {
		t.Fatal("GC released a valid attachment")
	}
	for _, id := range []string{rts[1].ContainerID, rts[2].ContainerID, "orphan-1", "orphan-2"} {
		if got := a.held(id, "eth0"); got != "" {
			t.Errorf("GC left %s holding %s", id, got)
		}
	}
	if links := l.nodeLinks(); len(links) != 1 {
		t.Errorf("node links after GC: %v, want only the kept pod's", links)
	}
	// A GC without the list is refused rather than releasing everything.
	_, err := l.cnitool(writeConf(t, netName, "1.1.0", a.socket, false), "gc", netName, l.pod())
	if err == nil || !strings.Contains(err.Error(), "valid-attachments") {
		t.Fatalf("GC without cni.dev/valid-attachments: %v", err)
	}
	if got := a.held(keep.ContainerID, "eth0"); got == "" {
		t.Fatal("list-less GC released a valid attachment")
	}
}

// TestIntegrationStatus: ready, out of addresses (51), agent stopped (50).
func TestIntegrationStatus(t *testing.T) {
	l := newLab(t)
	a := startAgent(t, "10.244.1.0/30") // one pod address
	netName := uniq("strata-it-")
	dir := writeConf(t, netName, "1.1.0", a.socket, false)
	list := loadList(t, dir, netName)
	cn := l.libcni()
	status := func() error {
		return l.inNode(func() error { return cn.GetStatusNetworkList(testCtx(t), list) })
	}
	if err := status(); err != nil {
		t.Fatalf("STATUS with a ready agent: %v", err)
	}
	if _, err := l.cnitool(dir, "status", netName, l.pod()); err != nil {
		t.Fatalf("cnitool status: %v", err)
	}
	rt := rtConf(uniq("c"), l.pod())
	if err := l.inNode(func() error { _, err := cn.AddNetworkList(testCtx(t), list, rt); return err }); err != nil {
		t.Fatal(err)
	}
	if err := status(); cniCode(err) != 51 {
		t.Fatalf("STATUS with no free address: %v, want code 51", err)
	}
	a.kill()
	err := status()
	if cniCode(err) != 50 || !strings.Contains(err.Error(), a.socket) {
		t.Fatalf("STATUS with the agent stopped: %v, want code 50 naming %s", err, a.socket)
	}
	// ADD with the agent gone fails cleanly, naming the socket.
	pod := l.pod()
	_, err = l.cnitool(dir, "add", netName, pod)
	if err == nil || !strings.Contains(err.Error(), a.socket) {
		t.Fatalf("ADD with the agent stopped: %v", err)
	}
	if got := podAddr(t, pod, "eth0"); got != "" {
		t.Fatalf("failed ADD left eth0 with %s", got)
	}
	a.start()
	if err := l.inNode(func() error { return cn.DelNetworkList(testCtx(t), list, rt) }); err != nil {
		t.Fatal(err)
	}
	if err := status(); err != nil {
		t.Fatalf("STATUS after a DEL freed an address: %v", err)
	}
}

// TestIntegrationChained runs strata-cni with Debian's portmap and bandwidth.
// Debian ships containernetworking-plugins 1.1.1, which speaks up to 1.0.0.
func TestIntegrationChained(t *testing.T) {
	l := newLab(t)
	a := startAgent(t, podCIDR.String())
	bw := `"bandwidth":{"ingressRate":10000000,"ingressBurst":1000000,"egressRate":10000000,"egressBurst":1000000}`
	for _, ver := range []string{"0.4.0", "1.0.0"} {
		t.Run(ver, func(t *testing.T) {
			netName := uniq("strata-it-")
			dir := writeConf(t, netName, ver, a.socket, true)
			pod := l.pod()
			capArgs := "CAP_ARGS={" + bw + "}"
			out, err := l.cnitool(dir, "add", netName, pod, capArgs)
			if err != nil {
				t.Fatal(err)
			}
			resultIP(t, ver, out)
			tc, _ := exec.Command("ip", "netns", "exec", l.node.Name, "tc", "qdisc", "show").CombinedOutput()
			if !strings.Contains(string(tc), "tbf") {
				t.Fatalf("bandwidth did not shape the host veth:\n%s", tc)
			}
			if _, err := l.cnitool(dir, "check", netName, pod, capArgs); err != nil {
				t.Fatal(err)
			}
			if _, err := l.cnitool(dir, "del", netName, pod, capArgs); err != nil {
				t.Fatal(err)
			}
			assertGone(t, l, a, pod, "")
		})
	}
	// Port mappings: ADD installs the DNAT, DEL removes it. (CHECK with a
	// port mapping is not run: Debian's portmap 1.1.1 wrongly demands IPv6
	// rules for IPv4-only pods, containernetworking/plugins#819.)
	t.Run("portmap", func(t *testing.T) {
		netName := uniq("strata-it-")
		dir := writeConf(t, netName, "1.0.0", a.socket, true)
		pod := l.pod()
		capArgs := `CAP_ARGS={"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}`
		if _, err := l.cnitool(dir, "add", netName, pod, capArgs); err != nil {
			t.Fatal(err)
		}
		rules := func() string {
			b, _ := exec.Command("ip", "netns", "exec", l.node.Name, "iptables-save", "-t", "nat").CombinedOutput()
			return string(b)
		}
		if !strings.Contains(rules(), "18080") {
			t.Fatalf("no DNAT for host port 18080:\n%s", rules())
		}
		if _, err := l.cnitool(dir, "del", netName, pod, capArgs); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(rules(), "18080") {
			t.Fatalf("DNAT left after DEL:\n%s", rules())
		}
		assertGone(t, l, a, pod, "")
	})
}

// execPlugin runs strata-cni directly (as a runtime would) in the node
// namespace and returns its CNI error, if any.
func (l *lab) execPlugin(command, containerID, netns, ifName, args string, conf []byte) error {
	cmd := exec.Command("ip", "netns", "exec", l.node.Name, l.bin+"/strata-cni")
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + containerID, "CNI_NETNS=" + netns,
		"CNI_IFNAME=" + ifName, "CNI_ARGS=" + args, "CNI_PATH=" + l.bin, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdin = strings.NewReader(string(conf))
	out, err := cmd.Output()
	if err == nil {
		return nil
	}
	var te types.Error
	if jerr := json.Unmarshal(out, &te); jerr != nil {
		return fmt.Errorf("plugin failed without a CNI error (%v): %s", err, out)
	}
	return &te
}

// TestIntegrationBadInput: each bad input is a CNI error with the right code
// naming the field, and leaves nothing behind.
func TestIntegrationBadInput(t *testing.T) {
	l := newLab(t)
	a := startAgent(t, podCIDR.String())
	good := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"strata","type":"strata-cni","socket":%q}`, a.socket)
	pod := l.pod()
	taken := l.pod()
	if err := taken.Do(func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0peer"})
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, conf, netns, ifName, args string
		code                            uint
		field                           string
	}{
		{"malformed JSON", `{"cniVersion":"1.0.0",`, pod.Path, "eth0", "", types.ErrDecodingFailure, ""},
		{"unknown cniVersion", `{"cniVersion":"7.7.7","name":"strata","type":"strata-cni"}`, pod.Path, "eth0", "", types.ErrIncompatibleCNIVersion, ""},
		{"relative socket", `{"cniVersion":"1.0.0","name":"strata","type":"strata-cni","socket":"cni.sock"}`, pod.Path, "eth0", "", types.ErrInvalidNetworkConfig, `"socket"`},
		{"bad timeout", `{"cniVersion":"1.0.0","name":"strata","type":"strata-cni","timeoutSeconds":9999}`, pod.Path, "eth0", "", types.ErrInvalidNetworkConfig, `"timeoutSeconds"`},
		{"bad pod name", good, pod.Path, "eth0", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=Not_A_Pod", types.ErrInvalidEnvironmentVariables, "K8S_POD_NAME"},
		{"missing netns", good, "/var/run/netns/strata-no-such-ns", "eth0", "", types.ErrInvalidNetNS, "CNI_NETNS"},
		{"bad ifname", good, pod.Path, "this-name-is-far-too-long", "", types.ErrInvalidEnvironmentVariables, "CNI_IFNAME"},
		{"taken ifname", good, taken.Path, "eth0", "", types.ErrInvalidEnvironmentVariables, "CNI_IFNAME"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := uniq("bad")
			err := l.execPlugin("ADD", id, tc.netns, tc.ifName, tc.args, []byte(tc.conf))
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("want a CNI error, got %v", err)
			}
			if te.Code != tc.code || !strings.Contains(te.Msg, tc.field) {
				t.Fatalf("got code %d %q, want code %d naming %s", te.Code, te.Msg, tc.code, tc.field)
			}
			if got := a.held(id, tc.ifName); got != "" {
				t.Fatalf("failed ADD left allocation %s", got)
			}
			if links := l.nodeLinks(); len(links) != 0 {
				t.Fatalf("failed ADD left node links %v", links)
			}
		})
	}
	t.Run("failure after the veth exists is undone", func(t *testing.T) {
		// A foreign route to the pod's future address makes the host route
		// fail after the veth, sysctls and allocation are in place.
		if err := l.node.Do(func() error {
			lo, _ := netlink.LinkByName("lo")
			dst := mustIPNet("10.244.1.2/32").IPNet
			return netlink.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: dst, Protocol: 4})
		}); err != nil {
			t.Fatal(err)
		}
		id := uniq("undo")
		err := l.execPlugin("ADD", id, pod.Path, "eth0", "", []byte(good))
		if err == nil {
			t.Fatal("ADD succeeded despite the conflicting host route")
		}
		if got := a.held(id, "eth0"); got != "" {
			t.Fatalf("failed ADD left allocation %s", got)
		}
		assertGone(t, l, a, pod, id)
	})
}

// TestIntegrationAgentKilledDuringAdds kills the agent while 100 ADDs run,
// restarts it, and checks every pod got a working address or a clean error,
// with no address leaked or shared.
func TestIntegrationAgentKilledDuringAdds(t *testing.T) {
	const n = 100
	l := newLab(t)
	a := startAgent(t, podCIDR.String())
	netName := uniq("strata-it-")
	list := loadList(t, writeConf(t, netName, "1.1.0", a.socket, false), netName)
	cn := l.libcni()
	pods := make([]nsutil.NS, n)
	rts := make([]*libcni.RuntimeConf, n)
	for i := range n {
		pods[i] = l.pod()
		rts[i] = rtConf(fmt.Sprintf("kill-%03d", i), pods[i])
	}
	ips := make([]netip.Addr, n)
	errs := make([]error, n)
	var finished atomic.Int32
	killed := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = l.inNode(func() error {
				r, err := cn.AddNetworkList(testCtx(t), list, rts[i])
				if err == nil {
					ips[i] = firstIP(t, r)
				}
				return err
			})
			if finished.Add(1) == 10 {
				close(killed)
			}
		})
	}
	select {
	case <-killed:
	case <-time.After(5 * time.Minute):
		t.Fatal("10 ADDs did not finish in 5 minutes")
	}
	a.kill()
	a.start()
	wg.Wait()

	ok := map[string]netip.Addr{}
	var failed []int
	for i := range n {
		if errs[i] != nil {
			var te *types.Error
			if !errors.As(errs[i], &te) && !strings.Contains(errs[i].Error(), "strata") {
				t.Errorf("pod %d: unclean error %v", i, errs[i])
			}
			failed = append(failed, i)
			continue
		}
		if got := podAddr(t, pods[i], "eth0"); got != ips[i].String() {
			t.Errorf("pod %d: eth0 has %q, result says %s", i, got, ips[i])
		}
		ok[rts[i].ContainerID+"/eth0"] = ips[i]
	}
	t.Logf("%d ADDs succeeded, %d failed cleanly around the agent kill", len(ok), len(failed))
	// A runtime DELs every failed ADD; that must succeed and leave nothing.
	for _, i := range failed {
		if err := l.inNode(func() error { return cn.DelNetworkList(testCtx(t), list, rts[i]) }); err != nil {
			t.Errorf("DEL after failed ADD of pod %d: %v", i, err)
		}
		if got := podAddr(t, pods[i], "eth0"); got != "" {
			t.Errorf("failed pod %d has eth0 with %s", i, got)
		}
	}
	// Working addresses: a sample of the pods reach the node.
	for i := 0; i < n; i += 17 {
		if errs[i] == nil {
			if err := ping(t, pods[i], "10.244.1.1"); err != nil {
				t.Error(err)
			}
		}
	}
	stored := a.stored()
	if len(stored) != len(ok) {
		t.Errorf("store holds %d allocations, %d pods succeeded (leak or loss)", len(stored), len(ok))
	}
	seen := map[string]string{}
	for key, addr := range stored {
		if want, live := ok[key]; !live || want.String() != addr {
			t.Errorf("store: %s holds %s, which no live pod has", key, addr)
		}
		if other, dup := seen[addr]; dup {
			t.Errorf("address %s held by %s and %s", addr, key, other)
		}
		seen[addr] = key
	}
	if links := l.nodeLinks(); len(links) != len(ok) {
		t.Errorf("%d host links for %d live pods", len(links), len(ok))
	}
}
