package lab

import (
	"maps"
	"os"
	"strings"
	"testing"
)

func TestShippedLabDescriptionIsValid(t *testing.T) {
	s, err := Load("lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Nodes) != 5 || s.MgmtAddr(0).String() != "10.255.0.1" {
		t.Fatalf("unexpected lab: %d nodes, ctl %s", len(s.Nodes), s.MgmtAddr(0))
	}
	if _, ok := s.Link("leased-line"); !ok {
		t.Fatal("no leased-line link")
	}
}

func TestBadDescriptionsNameTheField(t *testing.T) {
	cases := map[string]string{
		"name: x\nmgmt: 10.255.0.0/24\nnodes:\n  - {name: n1, location: mars, switch: s, addr: 10.0.0.1/24, gateway: 10.0.0.254}\n": "location \"mars\"",
		"name: x\nmgmt: nope\n":                  "nope",
		"name: x\nmgmt: 10.255.0.0/24\nbogus: 1": "bogus",
	}
	for in, want := range cases {
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v; want an error mentioning %q", in, err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("name: x\nmgmt: 10.255.0.0/24\n"))
	f.Add([]byte("routers: [{name: r}]\nlinks: [{name: l, a: {host: r}, b: {host: q}}]"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = Parse(b) })
}

func loadInet(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/inet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInetLabDescription(t *testing.T) {
	s, err := Parse(loadInet(t))
	if err != nil {
		t.Fatal(err)
	}
	if !s.hasInternet() {
		t.Fatal("inet.yaml has no router marked internet")
	}
	endpoints := map[string]string{}
	pools := map[string]bool{}
	for _, n := range s.Nodes {
		if n.Public != nil {
			endpoints[n.Name] = n.Public.Endpoint().String()
			pools[n.Pool] = true
		}
	}
	want := map[string]string{"cloud-1": "203.0.113.11:51871", "cloud-2": "203.0.113.12:51871", "edge-a1": "198.51.100.5:51871"}
	if !maps.Equal(endpoints, want) {
		t.Errorf("public endpoints %v, want %v", endpoints, want)
	}
	if pools["site-b"] {
		t.Error("site-b must have no node with a public address (issue 14: one pool reachable only through a relay)")
	}
	scripts := s.natScripts()
	for host, rules := range map[string][]string{
		"vpc": {
			`iifname "wan0" ip daddr 203.0.113.11 dnat to 10.0.1.11`,
			`oifname "wan0" ip saddr 10.0.1.12 snat to 203.0.113.12`,
			`oifname "wan0" ip saddr { 10.0.0.0/16 } masquerade`,
		},
		"idc-a": {
			`iifname "wan0" ip daddr 198.51.100.5 udp dport 51871 dnat to 192.168.10.11:51871`,
			`oifname "wan0" ip saddr 192.168.10.11 udp sport 51871 snat to 198.51.100.5:51871`,
			`oifname "wan0" ip saddr { 192.168.10.0/24 } masquerade`,
		},
		"site-b": {`oifname "wan0" ip saddr { 192.168.30.0/24 } masquerade`, `iifname "wan0" drop`},
	} {
		for _, r := range rules {
			if !strings.Contains(scripts[host], r) {
				t.Errorf("router %s NAT lacks %q:\n%s", host, r, scripts[host])
			}
		}
	}
	if _, ok := scripts["inet"]; ok {
		t.Error("the internet router must not NAT")
	}
	if strings.Contains(scripts["site-b"], "dnat to") {
		t.Errorf("site-b forwards nothing inbound, yet its NAT has a dnat rule:\n%s", scripts["site-b"])
	}
}

// A private address must never be routed on the internet, nor sit on its
// links, nor a public one be announced over the leased line.
func TestInternetRefusesPrivateAddresses(t *testing.T) {
	base := string(loadInet(t))
	cases := []struct{ old, new, want string }{
		{"{dst: 192.0.2.0/24, via: 192.0.2.9}", "{dst: 192.168.30.0/24, via: 192.0.2.9}", "route dst 192.168.30.0/24 is a private"},
		{"{dst: 192.0.2.0/24, via: 192.0.2.9}", "{dst: 100.64.0.0/24, via: 192.0.2.9}", "route dst 100.64.0.0/24 is a private"},
		{"{dst: 192.0.2.0/24, via: 192.0.2.9}", "{dst: default, via: 192.0.2.9}", "route dst default would route private"},
		{"{dst: 192.0.2.0/24, via: 192.0.2.9}", "{dst: 192.0.2.0/24, via: 10.0.0.9}", "next hop must be a public"},
		{"addr: 192.0.2.10/30}}", "addr: 172.20.0.10/30}}", "needs public addresses on both ends"},
		{"announce: [10.0.0.0/16]", "announce: [10.0.0.0/16, 203.0.113.0/24]", "bgp.announce 203.0.113.0/24 covers public"},
		{"public: {ip: 198.51.100.5, udpPort: 51871}", "public: {ip: 198.51.100.7, udpPort: 51871}", "set public.ip to 198.51.100.5"},
		{"public: {ip: 203.0.113.12}", "public: {ip: 10.0.9.12}", "public.ip 10.0.9.12 is not a public"},
		{"public: {ip: 203.0.113.12}", "public: {ip: 203.0.113.11}", "already node cloud-1's"},
		{"nat: {public: wan0, inside: [192.168.30.0/24]}", "nat: {public: lan9, inside: [192.168.30.0/24]}", "nat.public \"lan9\""},
	}
	for _, c := range cases {
		if !strings.Contains(base, c.old) {
			t.Fatalf("inet.yaml no longer contains %q; update the test", c.old)
		}
		_, err := Parse([]byte(strings.Replace(base, c.old, c.new, 1)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s → %s: err = %v; want it to mention %q", c.old, c.new, err, c.want)
		}
	}
}
