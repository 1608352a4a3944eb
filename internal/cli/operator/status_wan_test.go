package operator

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/strata-net/strata/api"
)

func TestPrintStatusShowsTheWAN(t *testing.T) {
	age := 3.2
	st := api.Status{Node: "edge-b1", WAN: &api.WAN{Setting: "auto", Impl: "userspace",
		ImplReason: "the kernel has no WireGuard", PublicKey: "KEY=", Port: 51871,
		SeenAs: map[string]netip.AddrPort{"cloud-1": netip.MustParseAddrPort("198.51.100.2:40001")},
		Peers: []api.WANPeer{{WANDevicePeer: api.WANDevicePeer{Name: "cloud-1", Endpoint: netip.MustParseAddrPort("203.0.113.11:51871"),
			LastHandshake: time.Now()}, HandshakeAgeSeconds: &age, Probes: api.WANProbeCounts{OK: 10, Failed: 1}},
			{WANDevicePeer: api.WANDevicePeer{Name: "cloud-2"}}},
		Errors: []string{"wan peer edge-a2: relay nobody is not a peer"}}}
	var b bytes.Buffer
	PrintStatus(&b, st)
	out := b.String()
	for _, want := range []string{"wan: userspace WireGuard (the kernel has no WireGuard)", "public key KEY=", "none (behind NAT",
		"seen by cloud-1 as 198.51.100.2:40001 (learned, not published)", "3s ago", "never", "10/1", "not applied: wan peer edge-a2"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	PrintStatus(&b, api.Status{WAN: &api.WAN{Setting: "off", Off: "--wan=off"}})
	if !strings.Contains(b.String(), "wan: off (--wan=off)") {
		t.Errorf("WAN off not shown:\n%s", b.String())
	}
}
