//go:build integration

package foundation

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/harness/netlab"
)

// cnitool drives Debian's bridge + host-local plugins (ADD, CHECK, DEL), the
// runtime path strata-cni plugs into. The bridge lives in a throw-away "node"
// namespace, never in the host's.
func TestIntegrationCNIToolBridgeHostLocal(t *testing.T) {
	testutil.RequireRoot(t)
	cnitool := testutil.Tool(t, "cnitool")
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Fatalf("Debian containernetworking-plugins missing: run hack/install-deps.sh")
	}
	lab := netlab.New(t, netlab.Spec{Hosts: []netlab.Host{{Name: "node"}, {Name: "pod"}}})
	node, pod := lab.NS("node"), lab.NS("pod")

	dir := t.TempDir()
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "stfound",
  "plugins": [{
    "type": "bridge", "bridge": "stbr0", "isGateway": true,
    "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.88.0.0/24"}]]}
  }]
}`, filepath.Join(dir, "ipam"))
	if err := os.WriteFile(filepath.Join(dir, "stfound.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(verb string) string {
		t.Helper()
		cmd := exec.Command("ip", node.Exec(cnitool, verb, "stfound", pod.Path)[1:]...)
		cmd.Env = append(os.Environ(), "CNI_PATH=/usr/lib/cni", "NETCONFPATH="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cnitool %s: %v\n%s", verb, err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { // DEL is idempotent: make sure cached results go even on failure
		cmd := exec.Command("ip", node.Exec(cnitool, "del", "stfound", pod.Path)[1:]...)
		cmd.Env = append(os.Environ(), "CNI_PATH=/usr/lib/cni", "NETCONFPATH="+dir)
		_ = cmd.Run()
	})

	out := run("add")
	if !strings.Contains(out, "10.88.0.") {
		t.Fatalf("ADD result has no address from 10.88.0.0/24:\n%s", out)
	}
	// The pod can reach its gateway on the node's bridge.
	if b, err := exec.Command("ip", pod.Exec("ping", "-c1", "-W2", "10.88.0.1")[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("pod → bridge gateway: %v\n%s", err, b)
	}
	run("check")
	run("del")
	run("del") // a second DEL succeeds too
	if b, _ := exec.Command("ip", pod.Exec("ip", "-o", "link", "show", "eth0")[1:]...).CombinedOutput(); strings.Contains(string(b), "eth0@") {
		t.Fatalf("eth0 still in the pod after DEL: %s", b)
	}
}
