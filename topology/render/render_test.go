package render

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/strata-net/strata/topology"
)

func labPlan(t *testing.T, file string) *topology.Plan {
	t.Helper()
	b, err := os.ReadFile("../testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	f, err := topology.ParseFactsDoc(b)
	if err != nil {
		t.Fatal(err)
	}
	p, err := topology.Decide(f, topology.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	if err := Table(&b, labPlan(t, "lab-failover.yaml")); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"edge-a1  idc-a   idc       bgp-underlay", "cloud-1  edge-a1  vxlan   native pod path vpc↔idc-a probe failed 3×", "cloud-1  cloud-2  native"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n != 1+5+1+1+20 {
		t.Errorf("%d lines", n)
	}
}

func TestDOT(t *testing.T) {
	dot, err := DOT(labPlan(t, "lab-failover.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(dot)
	for _, want := range []string{
		`"cloud-1" -> "edge-a1" [color="#1565c0"`, // vxlan colour
		`label="vxlan", style=dashed`,             // failed native link dashed
		`"cloud-1" -> "cloud-2" [color="#2e7d32", fontcolor="#2e7d32", label="native", style=solid`,
		`"edge-b1" [label="edge-b1\nvxlan-overlay", fillcolor="#9966ff"`,
		`label="pool idc-a"`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("DOT lacks %q", want)
		}
	}
	if strings.Count(s, " -> ") != 10 {
		t.Errorf("want 10 undirected edges for 5 nodes, got %d", strings.Count(s, " -> "))
	}
}

func TestCheckSVG(t *testing.T) {
	if err := CheckSVG([]byte(`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><g/></svg>`)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`<svg><g></svg>`, `<html/>`, ``} {
		if CheckSVG([]byte(bad)) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The WAN lab: wan edges in their colour, relayed ones name the gateway.
func TestDOTWAN(t *testing.T) {
	p := labPlan(t, "lab-wan.yaml")
	dot, err := DOT(p)
	if err != nil {
		t.Fatal(err)
	}
	relay, _ := p.Pair("edge-a2", "edge-b1")
	if relay.Relay == "" {
		t.Fatalf("edge-a2→edge-b1 not relayed: %+v", relay)
	}
	s := string(dot)
	for _, want := range []string{
		`"cloud-1" -> "edge-b1" [color="#ef6c00", fontcolor="#ef6c00", label="wan", style=solid`,
		`"edge-a2" -> "edge-b1" [color="#ef6c00", fontcolor="#ef6c00", label="wan via ` + relay.Relay + `"`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("DOT lacks %q:\n%s", want, s)
		}
	}
}
