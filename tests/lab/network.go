package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/tests/harness/netlab"
)

const ctlHost = "ctl"

// netSpec turns the lab description into a netlab network: routers and
// nodes are namespaces, links are veths, switches are bridges, and a
// management switch joins ctl to every node's mgmt0.
func (s *Spec) netSpec() netlab.Spec {
	var ns netlab.Spec
	for _, r := range s.Routers {
		h := netlab.Host{Name: r.Name, Forward: true}
		for _, rt := range r.Routes {
			h.Routes = append(h.Routes, netlab.Route{Dst: rt.Dst, Via: rt.Via})
		}
		ns.Hosts = append(ns.Hosts, h)
	}
	ns.Hosts = append(ns.Hosts, netlab.Host{Name: ctlHost})
	mgmtBits := s.Mgmt.Bits()
	mgmt := netlab.Switch{Name: "mgmt", Ports: []netlab.Port{{Host: ctlHost, Ifname: "mgmt0", Addr: fmt.Sprintf("%s/%d", s.MgmtAddr(0), mgmtBits)}}}
	for i, n := range s.Nodes {
		ns.Hosts = append(ns.Hosts, netlab.Host{Name: n.Name, Routes: []netlab.Route{{Dst: "default", Via: n.Gateway.String()}}})
		mgmt.Ports = append(mgmt.Ports, netlab.Port{Host: n.Name, Ifname: "mgmt0", Addr: fmt.Sprintf("%s/%d", s.MgmtAddr(i+1), mgmtBits)})
	}
	for _, l := range s.Links {
		ns.Links = append(ns.Links, netlab.Link{
			A: netlab.Port{Host: l.A.Host, Ifname: l.A.Ifname, Addr: l.A.Addr},
			B: netlab.Port{Host: l.B.Host, Ifname: l.B.Ifname, Addr: l.B.Addr},
		})
	}
	for _, sw := range s.Switches {
		nsw := netlab.Switch{Name: sw.Name}
		if len(sw.Router.Addrs) > 0 {
			nsw.Ports = append(nsw.Ports, netlab.Port{Host: sw.Router.Host, Ifname: sw.Router.Ifname, Addr: sw.Router.Addrs[0]})
		}
		for _, n := range s.Nodes {
			if n.Switch == sw.Name {
				nsw.Ports = append(nsw.Ports, netlab.Port{Host: n.Name, Ifname: "eth0", Addr: n.Addr.String()})
			}
		}
		ns.Switches = append(ns.Switches, nsw)
	}
	ns.Switches = append(ns.Switches, mgmt)
	return ns
}

// buildNetwork creates the namespaces, or reopens them when the lab is up.
func (l *Lab) buildNetwork() error {
	marker := filepath.Join(l.dir, "network.built")
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	spec := l.spec.netSpec()
	if _, err := netlab.BuildNamed(spec, nsutil.LabName); err != nil {
		return fmt.Errorf("build the lab network: %w (run `strata-lab down` to clear a half-built lab)", err)
	}
	// Secondary router addresses (e.g. the pod vSwitch gateway on the VPC router).
	for _, sw := range l.spec.Switches {
		for _, a := range sw.Router.Addrs[1:] {
			if err := l.ns(sw.Router.Host).Do(func() error { return addAddr(sw.Router.Ifname, a) }); err != nil {
				return fmt.Errorf("switch %s: %w", sw.Name, err)
			}
		}
	}
	for _, sw := range l.spec.Switches {
		if err := l.ns("sw-" + sw.Name).Do(plainBridges); err != nil {
			return fmt.Errorf("switch %s: %w", sw.Name, err)
		}
	}
	for host, script := range l.spec.natScripts() {
		if err := l.nft(host, script); err != nil {
			return fmt.Errorf("router %s NAT: %w", host, err)
		}
	}
	return os.WriteFile(marker, nil, 0o644)
}

// plainBridges stops the bridges of the current namespace from passing
// bridged frames through the IP firewall hooks. When br_netfilter is loaded
// on the machine (container engines and kube setups load it) every new
// namespace starts with bridge-nf-call-* = 1, and each frame the switch
// forwards pays br_netfilter's pre-routing, forward and post-routing work:
// about 10% of cloud↔edge-a throughput in the lab, which crosses two
// switches. The switches stand for a VPC vSwitch and a LAN switch, which do
// no such thing.
func plainBridges() error {
	for _, name := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"} {
		p := filepath.Join("/proc/sys/net/bridge", name)
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			continue // br_netfilter is not loaded: the bridges are plain already
		}
		if err := os.WriteFile(p, []byte("0"), 0o644); err != nil {
			return fmt.Errorf("turn off %s in the switch's namespace: %w", name, err)
		}
	}
	return nil
}

func (l *Lab) ns(host string) nsutil.NS {
	return nsutil.NS{Name: nsutil.LabName(host), Path: filepath.Join(nsutil.RunDir, nsutil.LabName(host))}
}

// hosts lists every namespace the lab owns (for down).
func (l *Lab) hosts() []string {
	out := []string{ctlHost, "sw-mgmt"}
	for _, r := range l.spec.Routers {
		out = append(out, r.Name)
	}
	for _, n := range l.spec.Nodes {
		out = append(out, n.Name)
	}
	for _, sw := range l.spec.Switches {
		out = append(out, "sw-"+sw.Name)
	}
	return out
}

func addAddr(ifname, cidr string) error {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	return netlink.AddrReplace(link, a)
}

// setLink sets a named lab link's two ends up or down (fail/heal).
func (l *Lab) setLink(name string, up bool) error {
	lk, err := l.link(name)
	if err != nil {
		return err
	}
	for _, e := range []End{lk.A, lk.B} {
		if err := l.ns(e.Host).Do(func() error {
			link, err := netlink.LinkByName(e.Ifname)
			if err != nil {
				return err
			}
			if up {
				return netlink.LinkSetUp(link)
			}
			return netlink.LinkSetDown(link)
		}); err != nil {
			return fmt.Errorf("link %s end %s:%s: %w", name, e.Host, e.Ifname, err)
		}
	}
	return nil
}

func (l *Lab) link(name string) (Link, error) {
	lk, ok := l.spec.Link(name)
	if !ok {
		return Link{}, fmt.Errorf("no link %q in the lab description (links: %v)", name, l.linkNames())
	}
	return lk, nil
}

// silentTable is the nftables table (family netdev) that holds the lab's
// silent cuts in a router's namespace: one ingress chain per cut device.
const silentTable = "stlab_silent"

// silenceLink drops every frame arriving at either end of a link (ARP
// included) with an nftables ingress chain, while both ends keep carrier:
// a provider fault or a wrong ACL. Nothing tells BGP; it notices only when
// its hold timer expires. on=false removes the chains (heal).
func (l *Lab) silenceLink(name string, on bool) error {
	lk, err := l.link(name)
	if err != nil {
		return err
	}
	for _, e := range []End{lk.A, lk.B} {
		chain := "cut_" + e.Ifname
		// Declaring the chain is idempotent; on heal the same transaction
		// then deletes it, so heal works whether or not it was cut silently
		// (nft 1.0.6 has no "destroy").
		script := fmt.Sprintf("add table netdev %[1]s\nadd chain netdev %[1]s %[2]s { type filter hook ingress device %[3]q priority -500; policy drop; }\n",
			silentTable, chain, e.Ifname)
		if !on {
			script += fmt.Sprintf("delete chain netdev %s %s\n", silentTable, chain)
		}
		if err := l.nft(e.Host, script); err != nil {
			return fmt.Errorf("link %s end %s:%s: %w", name, e.Host, e.Ifname, err)
		}
	}
	return nil
}

// nft runs an nftables script in a lab namespace.
func (l *Lab) nft(host, script string) error {
	argv := l.ns(host).Exec("nft", "-f", "-")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s (is the nftables package installed? make deps)", host, err, bytes.TrimSpace(out))
	}
	return nil
}

func (l *Lab) linkNames() []string {
	var out []string
	for _, lk := range l.spec.Links {
		out = append(out, lk.Name)
	}
	return out
}
