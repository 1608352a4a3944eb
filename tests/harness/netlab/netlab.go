// Package netlab builds throw-away networks of namespaces from a small
// declarative description: hosts and routers are namespaces, point-to-point
// links are veth pairs, and L2 segments are bridges living in their own
// namespace. Nothing is created in the caller's namespace, and every name is
// owned by this process (see nsutil), so a sweep cleans up after a crash.
package netlab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/testutil"
)

// Spec describes a network.
type Spec struct {
	Hosts    []Host
	Links    []Link
	Switches []Switch
}

// Host is a namespace. Forward turns on IPv4 and IPv6 forwarding (a router).
type Host struct {
	Name    string
	Forward bool
	Routes  []Route
}

// Route is a static route added after all links exist. Via may be empty for a
// device route.
type Route struct {
	Dst string // CIDR, or "default"
	Via string
	Dev string
}

// Port is one end of a link: an interface in a host, with an optional address.
type Port struct {
	Host   string
	Ifname string
	Addr   string // CIDR, e.g. 10.0.0.1/30; empty for none
	MAC    string // optional
}

// Link is a veth pair between two hosts.
type Link struct {
	A, B Port
	MTU  int // 0 means the kernel default (1500)
}

// Switch is an L2 segment: a bridge in its own namespace with one veth port
// per member.
type Switch struct {
	Name  string
	Ports []Port
	MTU   int
}

// Lab is a built network.
type Lab struct {
	ns     map[string]nsutil.NS
	naming func(string) string
}

// New builds spec for a test and removes it when the test ends, pass or fail.
func New(t testing.TB, spec Spec) *Lab {
	t.Helper()
	testutil.RequireRoot(t)
	l, err := Build(spec)
	if l != nil {
		t.Cleanup(func() {
			if err := l.Close(); err != nil {
				t.Errorf("netlab cleanup: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	return l
}

// Build creates the network. On error it removes what it made and returns a
// nil Lab.
func Build(spec Spec) (*Lab, error) { return BuildNamed(spec, nsutil.OwnedName) }

// BuildNamed is Build with a caller-chosen namespace naming (e.g. the lab's
// fixed names, which outlive the process that built them).
func BuildNamed(spec Spec, naming func(host string) string) (*Lab, error) {
	l := &Lab{ns: map[string]nsutil.NS{}, naming: naming}
	if err := l.build(spec); err != nil {
		_ = l.Close()
		return nil, err
	}
	return l, nil
}

// NS returns a host's (or a switch's) namespace. It panics on an unknown name,
// which is a bug in the test's spec.
func (l *Lab) NS(host string) nsutil.NS {
	n, ok := l.ns[host]
	if !ok {
		panic(fmt.Sprintf("netlab: no host %q", host))
	}
	return n
}

// Hosts lists the short names of every namespace in the lab.
func (l *Lab) Hosts() []string {
	out := make([]string, 0, len(l.ns))
	for k := range l.ns {
		out = append(out, k)
	}
	return out
}

// Close removes every namespace of the lab, with the processes inside.
func (l *Lab) Close() error {
	var errs []error
	for _, n := range l.ns {
		errs = append(errs, nsutil.Delete(n.Name))
	}
	l.ns = map[string]nsutil.NS{}
	return errors.Join(errs...)
}

func (l *Lab) addNS(name string) error {
	if _, ok := l.ns[name]; ok {
		return fmt.Errorf("host %q declared twice", name)
	}
	n, err := nsutil.Create(l.naming(name))
	if err != nil {
		return err
	}
	l.ns[name] = n
	return nil
}

func (l *Lab) build(spec Spec) error {
	for _, h := range spec.Hosts {
		if err := l.addNS(h.Name); err != nil {
			return err
		}
		if h.Forward {
			if err := l.ns[h.Name].Do(EnableForwarding); err != nil {
				return err
			}
		}
	}
	for _, lk := range spec.Links {
		if err := l.link(lk.A, lk.B, lk.MTU); err != nil {
			return fmt.Errorf("link %s:%s-%s:%s: %w", lk.A.Host, lk.A.Ifname, lk.B.Host, lk.B.Ifname, err)
		}
	}
	for _, sw := range spec.Switches {
		if err := l.addNS("sw-" + sw.Name); err != nil {
			return err
		}
		swNS := l.ns["sw-"+sw.Name]
		if err := swNS.Do(func() error {
			br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", MTU: sw.MTU}}
			if err := netlink.LinkAdd(br); err != nil {
				return fmt.Errorf("add bridge: %w", err)
			}
			return netlink.LinkSetUp(br)
		}); err != nil {
			return fmt.Errorf("switch %s: %w", sw.Name, err)
		}
		for i, p := range sw.Ports {
			swPort := Port{Host: "sw-" + sw.Name, Ifname: fmt.Sprintf("p%d", i)}
			if err := l.link(p, swPort, sw.MTU); err != nil {
				return fmt.Errorf("switch %s port %s:%s: %w", sw.Name, p.Host, p.Ifname, err)
			}
			if err := swNS.Do(func() error {
				port, err := netlink.LinkByName(swPort.Ifname)
				if err != nil {
					return err
				}
				br, err := netlink.LinkByName("br0")
				if err != nil {
					return err
				}
				return netlink.LinkSetMaster(port, br)
			}); err != nil {
				return fmt.Errorf("switch %s enslave %s: %w", sw.Name, swPort.Ifname, err)
			}
		}
	}
	for _, h := range spec.Hosts {
		for _, r := range h.Routes {
			if err := l.ns[h.Name].Do(func() error { return AddRoute(r) }); err != nil {
				return fmt.Errorf("host %s route %s: %w", h.Name, r.Dst, err)
			}
		}
	}
	return nil
}

// link creates a veth pair with one end in each host's namespace.
func (l *Lab) link(a, b Port, mtu int) error {
	na, ok := l.ns[a.Host]
	if !ok {
		return fmt.Errorf("unknown host %q", a.Host)
	}
	nb, ok := l.ns[b.Host]
	if !ok {
		return fmt.Errorf("unknown host %q", b.Host)
	}
	fb, err := os.Open(nb.Path)
	if err != nil {
		return err
	}
	defer fb.Close()
	if err := na.Do(func() error {
		v := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: a.Ifname, MTU: mtu},
			PeerName:      b.Ifname,
			PeerNamespace: netlink.NsFd(int(fb.Fd())),
		}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		return configure(a)
	}); err != nil {
		return err
	}
	return nb.Do(func() error { return configure(b) })
}

func configure(p Port) error {
	link, err := netlink.LinkByName(p.Ifname)
	if err != nil {
		return err
	}
	if p.MAC != "" {
		hw, err := net.ParseMAC(p.MAC)
		if err != nil {
			return fmt.Errorf("port %s: bad MAC %q: %w", p.Ifname, p.MAC, err)
		}
		if err := netlink.LinkSetHardwareAddr(link, hw); err != nil {
			return err
		}
	}
	if p.Addr != "" {
		addr, err := netlink.ParseAddr(p.Addr)
		if err != nil {
			return fmt.Errorf("port %s: bad address %q (want CIDR like 10.0.0.1/30): %w", p.Ifname, p.Addr, err)
		}
		addr.Flags |= 0x80 // IFA_F_NODAD: v6 addresses usable at once
		if err := netlink.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("add %s to %s: %w", p.Addr, p.Ifname, err)
		}
	}
	return netlink.LinkSetUp(link)
}

// AddRoute adds r in the current namespace.
func AddRoute(r Route) error {
	rt := &netlink.Route{}
	if r.Dst != "default" {
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			return fmt.Errorf("bad destination %q (want CIDR or \"default\"): %w", r.Dst, err)
		}
		rt.Dst = dst
	} else if strings.Contains(r.Via, ":") {
		_, rt.Dst, _ = net.ParseCIDR("::/0")
	}
	if r.Via != "" {
		rt.Gw = net.ParseIP(r.Via)
		if rt.Gw == nil {
			return fmt.Errorf("bad gateway %q", r.Via)
		}
	}
	if r.Dev != "" {
		link, err := netlink.LinkByName(r.Dev)
		if err != nil {
			return err
		}
		rt.LinkIndex = link.Attrs().Index
	}
	return netlink.RouteReplace(rt)
}

// EnableForwarding turns on IPv4 and IPv6 forwarding in the current namespace.
func EnableForwarding() error {
	for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("enable forwarding: %w", err)
		}
	}
	return nil
}
