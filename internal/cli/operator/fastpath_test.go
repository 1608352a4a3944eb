package operator

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-net/strata/api"
)

func TestStatusPrintsTheFastPath(t *testing.T) {
	ip := netip.MustParseAddr("10.244.1.10")
	st := api.Status{Node: "n1", Datapath: "vxlan-overlay", FastPath: api.FastPath{
		Setting: "auto", Active: true, Enabled: true, Reason: "kernel supports it", Attach: "tcx",
		Attached: []string{"eth0", "stc1"}, Endpoints: 1,
		Counters: &api.FastPathCounters{Paths: map[string]api.Counter{"local": {Packets: 7, Bytes: 700}},
			Pods: map[netip.Addr]api.PodCounters{ip: {Local: api.Counter{Packets: 7, Bytes: 700}}}},
	}}
	// Through JSON, as `strata status` gets it.
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back api.Status
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
	PrintStatus(&b, api.Status{FastPath: api.FastPath{Setting: "off", Reason: "switched off by configuration"}})
	if !strings.Contains(b.String(), "bpf fast path: off (not loaded: switched off by configuration)") {
		t.Errorf("inactive fast path not explained:\n%s", b.String())
	}
}

func TestFastpathSwitchCallsTheAgent(t *testing.T) {
	var got []string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path)
		_ = json.NewEncoder(w).Encode(api.FastPath{Active: true, Enabled: false})
	})
	// Over a unix socket, as to the agent's control socket.
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	tcp := httptest.NewServer(h)
	defer tcp.Close()
	for _, addr := range []string{sock, "unix://" + sock, tcp.URL, tcp.URL + "/", strings.TrimPrefix(tcp.URL, "http://")} {
		got = nil
		cmd := newFastpathCmd()
		cmd.SetContext(context.Background())
		cmd.SetArgs([]string{"off", "--agent", addr})
		if err := cmd.Execute(); err != nil {
			t.Fatalf("--agent %s: %v", addr, err)
		}
		if len(got) != 1 || got[0] != "POST /bpf/fastpath/off" {
			t.Fatalf("--agent %s: agent got %q, want POST /bpf/fastpath/off", addr, got)
		}
	}
	if def := newFastpathCmd().Flags().Lookup("agent").DefValue; def != api.DefaultControlSocket {
		t.Errorf("strata fastpath's default --agent is %q, want the control socket %s", def, api.DefaultControlSocket)
	}
	cmd := newFastpathCmd()
	cmd.SetArgs([]string{"maybe"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "want on or off") {
		t.Fatalf("bad state: %v", err)
	}
}

func TestParseAgentAcceptsURLsHostPortAndSockets(t *testing.T) {
	for in, want := range map[string]agentEndpoint{
		"10.255.0.4:9253":           {base: "http://10.255.0.4:9253", shown: "10.255.0.4:9253"},
		"http://10.255.0.4:9253":    {base: "http://10.255.0.4:9253", shown: "http://10.255.0.4:9253"},
		"http://10.255.0.4:9253/":   {base: "http://10.255.0.4:9253", shown: "http://10.255.0.4:9253"},
		"https://node.example:9253": {base: "https://node.example:9253", shown: "https://node.example:9253"},
		"[fd00::4]:9253":            {base: "http://[fd00::4]:9253", shown: "[fd00::4]:9253"},
		"/run/strata/agent.sock":    {base: "http://agent", socket: "/run/strata/agent.sock", shown: "/run/strata/agent.sock"},
		"unix:///run/strata/a.sock": {base: "http://agent", socket: "/run/strata/a.sock", shown: "/run/strata/a.sock"},
		" 127.0.0.1:9253 ":          {base: "http://127.0.0.1:9253", shown: "127.0.0.1:9253"},
	} {
		got, err := parseAgent(in)
		if err != nil || got != want {
			t.Errorf("parseAgent(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "10.255.0.4", "ftp://x:1", "http://", "http://x:1?y=z", "relative.sock"} {
		if got, err := parseAgent(bad); err == nil {
			t.Errorf("parseAgent(%q) = %+v, want an error", bad, got)
		}
	}
}
