package operator

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/strata-net/strata/api"
	"github.com/strata-net/strata/bgp"
)

func TestBGPPeersFromAgent(t *testing.T) {
	ctx := context.Background()
	sp, err := bgp.New(bgp.Config{RouterID: netip.MustParseAddr("10.0.0.1"), ASN: 65011}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sp.Stop(ctx, bgp.StopCease) }()
	if err := sp.AddPeer(ctx, bgp.PeerConfig{Address: netip.MustParseAddr("192.0.2.1"), ASN: 65010, Passive: true}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(api.BGPPeersPath, bgp.StatusHandler(sp))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ps, _, err := fetchBGPPeers(ctx, strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	PrintBGPPeers(&out, ps)
	if len(ps) != 1 || !strings.Contains(out.String(), "192.0.2.1") || !strings.Contains(out.String(), "passive") {
		t.Fatalf("peers %+v\n%s", ps, out.String())
	}
}

func TestPrintBGPInstall(t *testing.T) {
	var out bytes.Buffer
	PrintBGPInstall(&out, api.BGPInstall{FailingRoutes: 1, ErrorsTotal: 4, Stale: "keeping routes of an earlier run until End-of-RIB from [10.0.1.1]", StaleWaiting: true,
		Failing: []api.BGPFailedRoute{{Prefix: "10.99.0.0/24", NextHops: []string{"10.0.9.1"}, Error: "network is unreachable", Attempts: 4}}})
	for _, want := range []string{"1 learned routes NOT installed", "10.99.0.0/24 via [10.0.9.1]: network is unreachable (attempt 4", "End-of-RIB from [10.0.1.1]"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in:\n%s", want, out.String())
		}
	}
}
