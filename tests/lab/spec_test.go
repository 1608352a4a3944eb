package lab

import (
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
