package lab

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// The lab's internet: a router marked `internet: true` routes only public
// addresses, as the real one does, and each site reaches it through a NAT on
// its router. This file checks that shape and writes the routers' nftables.

// nonPublic are the IPv4 blocks the internet never routes: private (RFC
// 1918), shared address space (RFC 6598), loopback, link local, the
// benchmarking block, "this network", multicast and reserved.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/3"),
}

// publicPrefix reports whether every address of p is routable on the lab's
// internet. The documentation ranges (192.0.2.0/24, 198.51.100.0/24,
// 203.0.113.0/24) count as public: they stand for the sites' public blocks.
func publicPrefix(p netip.Prefix) bool {
	if !p.IsValid() || !p.Addr().Is4() {
		return false
	}
	for _, np := range nonPublic {
		if np.Overlaps(p) {
			return false
		}
	}
	return true
}

func publicAddr(a netip.Addr) bool { return a.IsValid() && publicPrefix(netip.PrefixFrom(a, 32)) }

// notPublicPrefix reports whether p lies wholly inside the blocks the
// internet never routes.
func notPublicPrefix(p netip.Prefix) bool {
	for _, np := range nonPublic {
		if np.Bits() <= p.Bits() && np.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// hasInternet reports whether the description has a real internet.
func (s *Spec) hasInternet() bool {
	for _, r := range s.Routers {
		if r.Internet {
			return true
		}
	}
	return false
}

// endAddr returns the address of a host's interface on a link or switch.
func (s *Spec) endAddr(host, ifname string) (netip.Prefix, bool) {
	for _, l := range s.Links {
		for _, e := range []End{l.A, l.B} {
			if e.Host == host && e.Ifname == ifname {
				p, err := netip.ParsePrefix(e.Addr)
				return p, err == nil
			}
		}
	}
	return netip.Prefix{}, false
}

func (s *Spec) router(name string) (Router, bool) {
	for _, r := range s.Routers {
		if r.Name == name {
			return r, true
		}
	}
	return Router{}, false
}

// siteRouter is the router of the switch a node is plugged into.
func (s *Spec) siteRouter(n Node) (Router, bool) {
	for _, sw := range s.Switches {
		if sw.Name == n.Switch {
			return s.router(sw.Router.Host)
		}
	}
	return Router{}, false
}

// publicAddrOf is a NAT router's public address (its Public interface's).
func (s *Spec) publicAddrOf(r Router) (netip.Addr, bool) {
	if r.NAT == nil {
		return netip.Addr{}, false
	}
	p, ok := s.endAddr(r.Name, r.NAT.Public)
	return p.Addr(), ok
}

// validateInternet checks the internet's shape: the internet router routes
// public addresses only and every address on its links is public; NATs name
// a public interface; nodes' public addresses sit on their site router's
// NAT; and no BGP announcement carries a public address, so public
// addresses never route over the leased line.
func (s *Spec) validateInternet() []error {
	var errs []error
	for _, r := range s.Routers {
		if !r.Internet {
			continue
		}
		for _, rt := range r.Routes {
			if rt.Dst == "default" {
				errs = append(errs, fmt.Errorf("router %s (internet): route dst default would route private addresses; the internet routes public addresses only: list each site's public block (e.g. 198.51.100.0/24)", r.Name))
				continue
			}
			dst, err := netip.ParsePrefix(rt.Dst)
			if err != nil {
				errs = append(errs, fmt.Errorf("router %s: route dst %q: %w", r.Name, rt.Dst, err))
				continue
			}
			if !publicPrefix(dst) {
				errs = append(errs, fmt.Errorf("router %s (internet): route dst %s is a private (or otherwise unroutable) address; the internet routes public addresses only: route the site's public block (e.g. 198.51.100.0/24) and NAT the site behind it", r.Name, dst))
			}
			if via, err := netip.ParseAddr(rt.Via); err != nil || !publicAddr(via) {
				errs = append(errs, fmt.Errorf("router %s (internet): route %s via %q: the next hop must be a public address on an internet link", r.Name, dst, rt.Via))
			}
		}
		for _, l := range s.Links {
			if l.A.Host != r.Name && l.B.Host != r.Name {
				continue
			}
			for _, e := range []End{l.A, l.B} {
				if p, err := netip.ParsePrefix(e.Addr); err != nil || !publicAddr(p.Addr()) {
					errs = append(errs, fmt.Errorf("link %s: %s:%s addr %q: a link of the internet router %s needs public addresses on both ends", l.Name, e.Host, e.Ifname, e.Addr, r.Name))
				}
			}
		}
		if r.NAT != nil || r.BGP != nil {
			errs = append(errs, fmt.Errorf("router %s (internet): nat and bgp belong on site routers; remove them", r.Name))
		}
	}
	for _, r := range s.Routers {
		if r.NAT == nil {
			continue
		}
		if a, ok := s.publicAddrOf(r); !ok {
			errs = append(errs, fmt.Errorf("router %s: nat.public %q is not one of its link interfaces", r.Name, r.NAT.Public))
		} else if !publicAddr(a) {
			errs = append(errs, fmt.Errorf("router %s: nat.public %s has address %s, which is not public; give the site a public address", r.Name, r.NAT.Public, a))
		}
		if len(r.NAT.Inside) == 0 {
			errs = append(errs, fmt.Errorf("router %s: nat.inside is empty; list the LAN prefixes to masquerade", r.Name))
		}
	}
	if s.hasInternet() {
		for _, r := range s.Routers {
			if r.BGP == nil {
				continue
			}
			for _, p := range r.BGP.Announce {
				if !notPublicPrefix(p) {
					errs = append(errs, fmt.Errorf("router %s: bgp.announce %s covers public addresses, which must never route over the leased line; announce private prefixes only", r.Name, p))
				}
			}
		}
	}
	oneToOne := map[netip.Addr]string{}
	for _, n := range s.Nodes {
		if n.Public == nil {
			continue
		}
		r, ok := s.siteRouter(n)
		pub, hasNAT := s.publicAddrOf(r)
		switch {
		case !ok || !hasNAT:
			errs = append(errs, fmt.Errorf("node %s: public needs a NAT on its site router %q (router.nat)", n.Name, r.Name))
			continue
		case !publicAddr(n.Public.IP):
			errs = append(errs, fmt.Errorf("node %s: public.ip %s is not a public address", n.Name, n.Public.IP))
			continue
		}
		if n.Public.UDPPort != 0 {
			if n.Public.IP != pub {
				errs = append(errs, fmt.Errorf("node %s: public.udpPort forwards a port of the site's public address: set public.ip to %s (router %s's %s)", n.Name, pub, r.Name, r.NAT.Public))
			}
			continue
		}
		if n.Public.IP == pub {
			errs = append(errs, fmt.Errorf("node %s: public.ip %s is router %s's own address; a 1:1 address needs its own IP, or set public.udpPort for a port forward", n.Name, pub, r.Name))
		}
		if other, dup := oneToOne[n.Public.IP]; dup {
			errs = append(errs, fmt.Errorf("node %s: public.ip %s is already node %s's", n.Name, n.Public.IP, other))
		}
		oneToOne[n.Public.IP] = n.Name
	}
	return errs
}

// natTable is the nftables table (family ip) of a site router's NAT.
const natTable = "stlab_nat"

// natScripts returns, per NAT router, the nft script that makes its NAT:
// the nodes' 1:1 addresses and port forwards (DNAT in, SNAT out), the rest
// of the LAN masqueraded to the site's public address, and a forward filter
// that lets in from the internet only what a NAT would (replies and
// forwarded addresses). Private-to-private traffic (the leased line, the
// LAN) is not tracked, so native paths pay nothing for conntrack.
func (s *Spec) natScripts() map[string]string {
	out := map[string]string{}
	for _, r := range s.Routers {
		if r.NAT == nil {
			continue
		}
		pub, _ := s.publicAddrOf(r)
		var pre, post []string
		names := []string{}
		byName := map[string]Node{}
		for _, n := range s.Nodes {
			if sr, ok := s.siteRouter(n); ok && sr.Name == r.Name && n.Public != nil {
				names = append(names, n.Name)
				byName[n.Name] = n
			}
		}
		sort.Strings(names)
		wanIf := fmt.Sprintf("%q", r.NAT.Public)
		for _, name := range names {
			n := byName[name]
			node := n.Addr.Addr()
			if p := n.Public.UDPPort; p != 0 {
				pre = append(pre, fmt.Sprintf("iifname %s ip daddr %s udp dport %d dnat to %s:%d", wanIf, pub, p, node, p))
				post = append(post, fmt.Sprintf("oifname %s ip saddr %s udp sport %d snat to %s:%d", wanIf, node, p, pub, p))
				continue
			}
			pre = append(pre, fmt.Sprintf("iifname %s ip daddr %s dnat to %s", wanIf, n.Public.IP, node))
			post = append(post, fmt.Sprintf("oifname %s ip saddr %s snat to %s", wanIf, node, n.Public.IP))
		}
		var inside []string
		for _, p := range r.NAT.Inside {
			inside = append(inside, p.String())
		}
		post = append(post, fmt.Sprintf("oifname %s ip saddr { %s } masquerade", wanIf, strings.Join(inside, ", ")))
		var private []string
		for _, p := range nonPublic {
			private = append(private, p.String())
		}
		var b strings.Builder
		fmt.Fprintf(&b, "add table ip %[1]s\nflush table ip %[1]s\n", natTable)
		fmt.Fprintf(&b, "add set ip %s private { type ipv4_addr; flags interval; elements = { %s } }\n", natTable, strings.Join(private, ", "))
		chain := func(name, hook string, rules []string) {
			fmt.Fprintf(&b, "add chain ip %s %s { %s }\n", natTable, name, hook)
			for _, rule := range rules {
				fmt.Fprintf(&b, "add rule ip %s %s %s\n", natTable, name, rule)
			}
		}
		chain("raw_prerouting", "type filter hook prerouting priority raw;", []string{"ip saddr @private ip daddr @private notrack"})
		chain("raw_output", "type filter hook output priority raw;", []string{"ip saddr @private ip daddr @private notrack"})
		chain("prerouting", "type nat hook prerouting priority dstnat;", pre)
		chain("postrouting", "type nat hook postrouting priority srcnat;", post)
		chain("forward", "type filter hook forward priority filter;", []string{
			fmt.Sprintf("iifname %s ct state established,related accept", wanIf),
			fmt.Sprintf("iifname %s ct status dnat accept", wanIf),
			fmt.Sprintf("iifname %s drop", wanIf),
		})
		out[r.Name] = b.String()
	}
	return out
}
