package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/strata-net/strata/bpf"
	"github.com/strata-net/strata/internal/agent"
)

func TestStatusPrintsTheFastPath(t *testing.T) {
	ip := netip.MustParseAddr("10.244.1.10")
	st := agent.Status{Node: "n1", Datapath: "vxlan-overlay", FastPath: agent.FastPathStatus{
		Setting: "auto", Active: true, Enabled: true, Reason: "kernel supports it", Attach: "tcx",
		Attached: []string{"eth0", "stc1"}, Endpoints: 1,
		Counters: &bpf.Counters{Paths: map[string]bpf.Counter{"local": {Packets: 7, Bytes: 700}},
			Pods: map[netip.Addr]bpf.PodCounters{ip: {Local: bpf.Counter{Packets: 7, Bytes: 700}}}},
	}}
	// Through JSON, as `strata status` gets it.
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back agent.Status
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	PrintStatus(&b, back)
	for _, want := range []string{"bpf fast path: on (kernel supports it); attach tcx, 2 interfaces, 1 endpoints", "path local", "pod  10.244.1.10"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	PrintStatus(&b, agent.Status{FastPath: agent.FastPathStatus{Setting: "off", Reason: "switched off by configuration"}})
	if !strings.Contains(b.String(), "bpf fast path: off (not loaded: switched off by configuration)") {
		t.Errorf("inactive fast path not explained:\n%s", b.String())
	}
}

func TestFastpathSwitchCallsTheAgent(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Method + " " + r.URL.Path
		_ = json.NewEncoder(w).Encode(agent.FastPathStatus{Active: true, Enabled: false})
	}))
	defer srv.Close()
	cmd := newFastpathCmd()
	cmd.SetContext(context.Background())
	cmd.SetArgs([]string{"off", "--agent", strings.TrimPrefix(srv.URL, "http://")})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got != "POST /bpf/fastpath/off" {
		t.Fatalf("agent got %q, want POST /bpf/fastpath/off", got)
	}
	cmd = newFastpathCmd()
	cmd.SetArgs([]string{"maybe"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "want on or off") {
		t.Fatalf("bad state: %v", err)
	}
}
