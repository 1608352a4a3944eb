package wire

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/strata-net/strata/internal/role"
)

func TestAllocationCarriesHostVia(t *testing.T) {
	ra := role.Allocation{ContainerID: "c", IfName: "eth0", Addr: netip.MustParsePrefix("10.0.64.20/32"),
		Gateway: netip.MustParseAddr("10.0.64.1"), Datapath: role.DatapathIPVlan, HostVia: netip.MustParseAddr("10.0.64.5")}
	b, err := json.Marshal(FromRole(ra))
	if err != nil {
		t.Fatal(err)
	}
	var back Allocation
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.HostVia != ra.HostVia {
		t.Fatalf("hostVia lost on the wire: %s", b)
	}
	// other datapaths leave it out, so older plugins see the same JSON
	ra.HostVia, ra.Datapath = netip.Addr{}, role.DatapathVethRouted
	b, _ = json.Marshal(FromRole(ra))
	if strings.Contains(string(b), "hostVia") {
		t.Fatalf("zero hostVia encoded: %s", b)
	}
}
