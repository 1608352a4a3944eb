//go:build privileged

package bpf

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/testutil"
)

// FindForwardFilters reads a real ruleset written by nft(8): it sees a
// NetworkPolicy-style reject behind a jump and a drop policy, and ignores
// kube-proxy's table.
func TestPrivilegedFindForwardFilters(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft(8) not installed (make deps installs it)")
	}
	n, err := nsutil.Create(nsutil.OwnedName("nffwd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(n.Name) })
	nft := func(ruleset string) {
		t.Helper()
		cmd := exec.Command("ip", n.Exec("nft", "-f", "-")[1:]...)
		cmd.Stdin = strings.NewReader(ruleset)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft: %v\n%s", err, out)
		}
	}
	find := func() []ForwardFilter {
		t.Helper()
		got, err := FindForwardFilters(&n, DefaultForwardIgnore)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := find(); len(got) != 0 {
		t.Fatalf("empty namespace: %v", got)
	}
	nft(`table ip kube-proxy {
	chain filter-forward {
		type filter hook forward priority -110; policy accept;
		ct state new reject
	}
}
table inet stats {
	chain count_forwarded {
		type filter hook forward priority 10; policy accept;
		counter accept
	}
}`)
	if got := find(); len(got) != 0 {
		t.Fatalf("kube-proxy and an accepting chain: %v, want none", got)
	}
	nft(`table inet netpol {
	chain pod_ingress {
		ip daddr 10.244.1.5 tcp dport 80 reject
	}
	chain forwarding {
		type filter hook forward priority 0; policy accept;
		jump pod_ingress
	}
}`)
	got := find()
	if len(got) != 1 || got[0].Table != "netpol" || !strings.Contains(got[0].Why, "pod_ingress rejects") {
		t.Fatalf("NetworkPolicy-style reject: %v", got)
	}
	nft(`flush ruleset
table ip host {
	chain forwarding {
		type filter hook forward priority 0; policy drop;
	}
}`)
	if got := find(); len(got) != 1 || got[0].Why != "policy drop" {
		t.Fatalf("drop policy: %v", got)
	}
}
