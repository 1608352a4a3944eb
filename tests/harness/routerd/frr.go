package routerd

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/testutil"
)

// FRRKernelProto is the route protocol number zebra stamps on BGP routes.
const FRRKernelProto = 186

// FRRConfig describes an FRR (zebra + bgpd) instance.
type FRRConfig struct {
	RouterID  string
	ASN       uint32
	Neighbors []Neighbor
	// Announce are IPv4 prefixes FRR originates (`network` statements).
	Announce []string
}

// FRR is a running zebra + bgpd pair.
type FRR struct {
	NS   nsutil.NS
	Dir  string
	cfg  FRRConfig
	pids []int
}

func frrBGPConf(c FRRConfig, dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults traditional\nhostname bgpd\nlog file %s/bgpd.log\n!\nrouter bgp %d\n bgp router-id %s\n", dir, c.ASN, c.RouterID)
	// FRR 8.4 exchanges no eBGP routes without a policy unless told so.
	b.WriteString(" no bgp ebgp-requires-policy\n no bgp network import-check\n")
	for _, n := range c.Neighbors {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n", n.Address, n.ASN)
		if n.Port != 0 {
			fmt.Fprintf(&b, " neighbor %s port %d\n", n.Address, n.Port)
		}
		if n.Password != "" {
			fmt.Fprintf(&b, " neighbor %s password %s\n", n.Address, n.Password)
		}
		if n.HoldTime > 0 {
			fmt.Fprintf(&b, " neighbor %s timers %d %d\n", n.Address, max(n.HoldTime/3, 1), n.HoldTime)
		}
		fmt.Fprintf(&b, " neighbor %s timers connect 1\n", n.Address)
		if n.GracefulRestart {
			fmt.Fprintf(&b, " neighbor %s graceful-restart\n", n.Address)
		}
	}
	b.WriteString(" address-family ipv4 unicast\n")
	for _, p := range c.Announce {
		fmt.Fprintf(&b, "  network %s\n", p)
	}
	b.WriteString(" exit-address-family\n!\n")
	return b.String()
}

// StartFRR writes the configuration and starts zebra and bgpd inside ns.
// Both are stopped when the test ends.
func StartFRR(t testing.TB, ns nsutil.NS, c FRRConfig) *FRR {
	t.Helper()
	testutil.RequireCommand(t, "vtysh", "apt-get install frr (or `make deps`)")
	dir := daemonDir(t, "strata-frr-")
	f := &FRR{NS: ns, Dir: dir, cfg: c}
	t.Cleanup(func() {
		f.Stop()
		if t.Failed() {
			t.Logf("bgpd log (%s):\n%s", ns.Name, logTail(dir+"/bgpd.log"))
		}
		_ = os.RemoveAll(dir)
	})
	if err := f.start(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *FRR) start() error {
	files := map[string]string{
		"zebra.conf": fmt.Sprintf("hostname zebra\nlog file %s/zebra.log\n", f.Dir),
		"bgpd.conf":  frrBGPConf(f.cfg, f.Dir),
		"vtysh.conf": "",
	}
	for name, body := range files {
		if err := os.WriteFile(dirJoin(f.Dir, name), []byte(body), 0o640); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	if out, err := exec.Command("chown", "-R", "frr:frr", f.Dir).CombinedOutput(); err != nil {
		return fmt.Errorf("chown %s to frr: %w: %s", f.Dir, err, out)
	}
	common := []string{"-d", "-z", dirJoin(f.Dir, "zserv.api"), "--vty_socket", f.Dir, "-u", "frr", "-g", "frr"}
	for _, d := range []struct{ bin, conf, pid string }{
		{"/usr/lib/frr/zebra", "zebra.conf", "zebra.pid"},
		{"/usr/lib/frr/bgpd", "bgpd.conf", "bgpd.pid"},
	} {
		argv := append([]string{d.bin, "-f", dirJoin(f.Dir, d.conf), "-i", dirJoin(f.Dir, d.pid)}, common...)
		if d.bin == "/usr/lib/frr/bgpd" {
			argv = append(argv, "-P", "0")
		}
		if _, err := run(f.NS.Exec(argv...)...); err != nil {
			return fmt.Errorf("start %s in %s: %w", d.bin, f.NS.Name, err)
		}
		pid, err := waitPIDFile(dirJoin(f.Dir, d.pid))
		if err != nil {
			return fmt.Errorf("%s in %s did not start: %w\n%s", d.bin, f.NS.Name, err, logTail(dirJoin(f.Dir, "bgpd.log")))
		}
		f.pids = append(f.pids, pid)
	}
	return nil
}

// Stop ends bgpd and zebra by PID.
func (f *FRR) Stop() {
	for i := len(f.pids) - 1; i >= 0; i-- {
		stopPID(f.pids[i])
	}
	f.pids = nil
}

// Vtysh runs one vtysh command.
func (f *FRR) Vtysh(cmd string) (string, error) {
	return run("vtysh", "--vty_socket", f.Dir, "-c", cmd)
}

// PeerInfo is a neighbour line of `show bgp ipv4 unicast summary json`.
type PeerInfo struct {
	State   string `json:"state"`
	PfxRcd  int    `json:"pfxRcd"`
	PfxSnt  int    `json:"pfxSnt"`
	Address string `json:"-"`
}

// Peers returns FRR's view of its IPv4 sessions.
func (f *FRR) Peers() (map[string]PeerInfo, error) {
	out, err := f.Vtysh("show bgp ipv4 unicast summary json")
	if err != nil {
		return nil, err
	}
	var s struct {
		Peers map[string]PeerInfo `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return nil, fmt.Errorf("parse FRR summary: %w: %s", err, out)
	}
	return s.Peers, nil
}

// WaitEstablished waits for the session with addr.
func (f *FRR) WaitEstablished(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, "frr session "+addr+" established", func() error {
		ps, err := f.Peers()
		if err != nil {
			return err
		}
		if p, ok := ps[addr]; !ok || p.State != "Established" {
			return fmt.Errorf("peer %s: %+v", addr, ps)
		}
		return nil
	})
}

// HasRoute reports whether FRR's BGP table has prefix.
func (f *FRR) HasRoute(prefix string) (bool, string, error) {
	out, err := f.Vtysh("show bgp ipv4 unicast " + prefix + " json")
	if err != nil {
		return false, out, err
	}
	return strings.Contains(out, `"paths"`) && strings.Contains(out, prefix), out, nil
}
