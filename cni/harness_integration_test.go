//go:build integration

package cni_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/testutil"
)

// allVersions are the spec versions every verb test loops over.
var allVersions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// bins builds strata-cni and the test agent once per test binary and returns
// a CNI_PATH directory that also holds Debian's portmap and bandwidth.
func bins(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "strata-cni-it-")
		if buildErr != nil {
			return
		}
		for pkg, out := range map[string]string{
			"github.com/strata-net/strata/cmd/strata-cni":         "strata-cni",
			"github.com/strata-net/strata/cni/internal/testagent": "testagent",
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, out), pkg)
			if b, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
				return
			}
		}
		for _, p := range []string{"portmap", "bandwidth", "loopback"} {
			if err := os.Symlink(filepath.Join("/usr/lib/cni", p), filepath.Join(binDir, p)); err != nil {
				buildErr = err
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("build test binaries: %v", buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func cnitoolPath(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("STRATA_TOOLS_BIN")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "strata", "bin")
	}
	p := filepath.Join(dir, "cnitool")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("cnitool not found at %s: run hack/build-tools.sh, or `GOBIN=<dir> go install github.com/containernetworking/cni/cnitool@v1.3.0` and set STRATA_TOOLS_BIN=<dir>", p)
	}
	return p
}

// agent is the test agent running as a subprocess, so it can be killed.
type agent struct {
	t      *testing.T
	socket string
	db     string
	cidr   string
	cmd    *exec.Cmd
	done   chan struct{}
}

func startAgent(t *testing.T, cidr string) *agent {
	t.Helper()
	dir := t.TempDir()
	a := &agent{t: t, socket: filepath.Join(dir, "cni.sock"), db: filepath.Join(dir, "ipam.db"), cidr: cidr}
	a.start()
	t.Cleanup(a.stop)
	return a
}

func (a *agent) start() {
	a.t.Helper()
	cmd := exec.Command(filepath.Join(bins(a.t), "testagent"), "-socket", a.socket, "-db", a.db, "-cidr", a.cidr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		a.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		a.t.Fatalf("start test agent: %v", err)
	}
	a.cmd, a.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(a.done) }()
	ready := make(chan bool, 1)
	go func() {
		s := bufio.NewScanner(out)
		ok := s.Scan() && s.Text() == "ready"
		ready <- ok
		for s.Scan() {
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			a.t.Fatal("test agent exited before it was ready")
		}
	case <-time.After(60 * time.Second):
		a.stop()
		a.t.Fatal("test agent not ready after 60 s")
	}
}

// kill ends the agent abruptly (SIGKILL), like a crash.
func (a *agent) kill() {
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Kill()
	<-a.done
	a.cmd = nil
}

func (a *agent) stop() { a.kill() }

func (a *agent) client() *wire.Client {
	return &wire.Client{Socket: a.socket, DialWait: 5 * time.Second}
}

// stored stops the agent and reads its store: containerID/ifName -> address.
// The persisted store is the ground truth for leaks and duplicates.
func (a *agent) stored() map[string]string {
	a.t.Helper()
	a.kill()
	st, err := ipamstore.Open(a.db)
	if err != nil {
		a.t.Fatal(err)
	}
	defer st.Close()
	pools, err := st.Pools()
	if err != nil {
		a.t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pools {
		recs, err := st.List(p)
		if err != nil {
			a.t.Fatal(err)
		}
		for _, r := range recs {
			out[r.Key()] = r.Addr.String()
		}
	}
	return out
}

// held reports the address the agent holds for an attachment, or "".
func (a *agent) held(containerID, ifName string) string {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	al, err := a.client().Check(ctx, wire.Attachment{ContainerID: containerID, IfName: ifName})
	var we *wire.Error
	if errors.As(err, &we) && we.Code == wire.CodeUnknownAttachment {
		return ""
	}
	if err != nil {
		a.t.Fatalf("ask agent about %s/%s: %v", containerID, ifName, err)
	}
	return al.Addr.Addr().String()
}

// lab is a node namespace (the host side of pods) and pod namespaces.
type lab struct {
	t    *testing.T
	node nsutil.NS
	bin  string
}

var labSeq struct {
	sync.Mutex
	n int
}

func uniq(prefix string) string {
	labSeq.Lock()
	defer labSeq.Unlock()
	labSeq.n++
	return fmt.Sprintf("%s%d", prefix, labSeq.n)
}

func newLab(t *testing.T) *lab {
	t.Helper()
	testutil.RequireRoot(t)
	node := mkNS(t, uniq("cnode"))
	// The node's own address on the pod network, for pods to reach.
	if err := node.Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(lo, mustIPNet("10.244.1.1/32"))
	}); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "exec", node.Name, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("enable forwarding in the node namespace: %v %s", err, out)
	}
	return &lab{t: t, node: node, bin: bins(t)}
}

func mkNS(t *testing.T, name string) nsutil.NS {
	t.Helper()
	n, err := nsutil.Create(nsutil.OwnedName(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nsutil.Delete(n.Name); err != nil {
			t.Errorf("delete netns %s: %v", n.Name, err)
		}
	})
	return n
}

func (l *lab) pod() nsutil.NS { return mkNS(l.t, uniq("cpod")) }

func mustIPNet(s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

// writeConf writes a conflist named netName into a fresh dir.
func writeConf(t *testing.T, netName, version, socket string, chained bool) string {
	t.Helper()
	plugins := []map[string]any{{"type": "strata-cni", "socket": socket, "timeoutSeconds": 60}}
	if chained {
		plugins = append(plugins,
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
			map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}})
	}
	b, _ := json.Marshal(map[string]any{"cniVersion": version, "name": netName, "plugins": plugins})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "10-"+netName+".conflist"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// cnitool runs the real cnitool in the node namespace.
func (l *lab) cnitool(confDir, verb, netName string, pod nsutil.NS, env ...string) ([]byte, error) {
	cmd := exec.Command("ip", "netns", "exec", l.node.Name, cnitoolPath(l.t), verb, netName, pod.Path)
	cmd.Env = append(os.Environ(), "NETCONFPATH="+confDir, "CNI_PATH="+l.bin)
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.Bytes(), fmt.Errorf("cnitool %s: %v: %s %s", verb, err, out.String(), errb.String())
	}
	return out.Bytes(), nil
}

// libcni returns a libcni config whose cache lives in a temp dir.
func (l *lab) libcni() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{l.bin}, l.t.TempDir(), nil)
}

// inNode runs fn in the node namespace (libcni then execs the plugin there).
func (l *lab) inNode(fn func() error) error { return l.node.Do(fn) }

// nodeLinks lists the node namespace's links other than lo.
func (l *lab) nodeLinks() []string {
	l.t.Helper()
	var names []string
	if err := l.node.Do(func() error {
		links, err := nlretry.Dump(netlink.LinkList)
		for _, k := range links {
			if k.Attrs().Name != "lo" {
				names = append(names, k.Attrs().Name)
			}
		}
		return err
	}); err != nil {
		l.t.Fatal(err)
	}
	return names
}

// podAddr is the IPv4 address of ifName in pod, or "".
func podAddr(t *testing.T, pod nsutil.NS, ifName string) string {
	t.Helper()
	var got string
	_ = pod.Do(func() error {
		link, err := netlink.LinkByName(ifName)
		if err != nil {
			return nil
		}
		addrs, err := nlretry.Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(link, netlink.FAMILY_V4) })
		if err == nil && len(addrs) > 0 {
			got = addrs[0].IP.String()
		}
		return nil
	})
	return got
}

func ping(t *testing.T, from nsutil.NS, to string) error {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", from.Name, "ping", "-c", "1", "-W", "10", to).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v: %s", to, from.Name, err, out)
	}
	return nil
}

func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	// cnitool prints the error JSON on stdout.
	s := err.Error()
	if i := strings.Index(s, `"code":`); i >= 0 {
		var c uint
		fmt.Sscanf(strings.TrimSpace(s[i+7:]), "%d", &c)
		return c
	}
	return 0
}
