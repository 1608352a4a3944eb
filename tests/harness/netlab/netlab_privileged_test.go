//go:build privileged

package netlab

import (
	"os"
	"os/exec"
	"testing"
)

// Two hosts on separate subnets, a router between them, and an L2 switch with
// a third host: packets cross both, and Close leaves nothing behind.
func TestPrivilegedNetlabRoutedAndSwitched(t *testing.T) {
	l := New(t, Spec{
		Hosts: []Host{
			{Name: "h1", Routes: []Route{{Dst: "default", Via: "10.1.0.1"}}},
			{Name: "r", Forward: true},
			{Name: "h2", Routes: []Route{{Dst: "default", Via: "10.2.0.1"}}},
			{Name: "h3", Routes: []Route{{Dst: "default", Via: "10.2.0.1"}}},
		},
		Links: []Link{
			{A: Port{Host: "h1", Ifname: "eth0", Addr: "10.1.0.2/24"}, B: Port{Host: "r", Ifname: "to-h1", Addr: "10.1.0.1/24"}},
		},
		Switches: []Switch{{Name: "lan", Ports: []Port{
			{Host: "r", Ifname: "lan", Addr: "10.2.0.1/24"},
			{Host: "h2", Ifname: "eth0", Addr: "10.2.0.2/24"},
			{Host: "h3", Ifname: "eth0", Addr: "10.2.0.3/24", MAC: "02:00:00:00:02:03"},
		}}},
	})
	for _, c := range []struct{ from, to string }{{"h1", "10.2.0.2"}, {"h1", "10.2.0.3"}, {"h2", "10.2.0.3"}, {"h3", "10.1.0.2"}} {
		argv := l.NS(c.from).Exec("ping", "-c1", "-W2", c.to)
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%s → %s: %v\n%s", c.from, c.to, err, out)
		}
	}
	paths := []string{l.NS("h1").Path, l.NS("sw-lan").Path}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still present after Close", p)
		}
	}
}
