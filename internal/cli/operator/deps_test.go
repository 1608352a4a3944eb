package operator

import (
	"os/exec"
	"strings"
	"testing"
)

// TestStrataLinksNoDaemon fails when the operator CLI links the daemon
// again: it talks to strata-agent over HTTP (package api) only, so it must
// not pull in the BGP speaker, the cloud SDK, gossip, the eBPF loader or the
// agent's packages.
func TestStrataLinksNoDaemon(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH to list the CLI's packages")
	}
	out, err := exec.Command(goBin, "list", "-deps", "github.com/strata-net/strata/cmd/strata").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/strata: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/osrg/gobgp", "github.com/aliyun/alibaba-cloud-sdk-go", "github.com/hashicorp/memberlist",
		"github.com/cilium/ebpf", "github.com/vishvananda/netlink", "k8s.io/client-go",
		"github.com/strata-net/strata/internal/agent", "github.com/strata-net/strata/internal/cli",
		"github.com/strata-net/strata/bgp", "github.com/strata-net/strata/bpf", "github.com/strata-net/strata/wan",
		"github.com/strata-net/strata/cloud-node", "github.com/strata-net/strata/edge-node", "github.com/strata-net/strata/vxlan",
	}
	pkgs := strings.Fields(string(out))
	for _, p := range pkgs {
		for _, f := range forbidden {
			if (p == f || strings.HasPrefix(p, f+"/")) && !strings.HasPrefix(p, "github.com/strata-net/strata/internal/cli/operator") {
				t.Errorf("cmd/strata links %s (forbidden: %s); the CLI reads the agent's JSON through package api instead", p, f)
			}
		}
	}
	// 206 packages when this test was written (was 1021 with the daemon):
	// a bound well below the daemon's size.
	if len(pkgs) > 300 {
		t.Errorf("cmd/strata links %d packages, want at most 300: what grew its import graph?", len(pkgs))
	}
}
