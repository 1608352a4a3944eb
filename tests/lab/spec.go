// Package lab builds Strata's lab: a whole mixed cluster on one machine, in
// network namespaces, from the description in lab.yaml. Routers and nodes are
// namespaces; BIRD plays the VBR and the IDC vSwitch; a real kube-apiserver,
// etcd and the ECS emulator run on an out-of-band management network; one
// strata-agent runs in each node namespace; pods are namespaces created
// through strata-cni, as a container runtime would.
package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/strata-net/strata/wan"
)

// Spec is the lab description (lab.yaml).
type Spec struct {
	Name     string       `json:"name"`
	Mgmt     netip.Prefix `json:"mgmt"`
	Routers  []Router     `json:"routers"`
	Links    []Link       `json:"links"`
	Switches []Switch     `json:"switches"`
	Nodes    []Node       `json:"nodes"`
	Pools    []Pool       `json:"pools,omitempty"`
	Cloud    *Cloud       `json:"cloud,omitempty"`

	path string // the file it was loaded from
}

// Cloud describes the emulated VPC the cloud nodes live in.
type Cloud struct {
	Region       string    `json:"region"`
	VPCCIDR      string    `json:"vpcCIDR"`
	Switch       string    `json:"switch"` // the lab switch ENIs plug into
	InstanceType string    `json:"instanceType"`
	ENIs         int       `json:"enis"`
	IPsPerENI    int       `json:"ipsPerENI"`
	VSwitches    []VSwitch `json:"vswitches"`
	PodVSwitches []string  `json:"podVSwitches"`
}

// VSwitch is one emulated vSwitch.
type VSwitch struct {
	ID   string `json:"id"`
	CIDR string `json:"cidr"`
}

// Router is a forwarding namespace, optionally running BIRD.
type Router struct {
	Name   string  `json:"name"`
	Routes []Route `json:"routes,omitempty"`
	BGP    *BGP    `json:"bgp,omitempty"`
	// Internet marks the router as the internet: it routes public
	// addresses only, and every address on its links is public (Validate
	// refuses a private route or link address there).
	Internet bool `json:"internet,omitempty"`
	// NAT makes the router a site's NAT: its LAN leaves through the public
	// interface with the site's public address, and the nodes' declared
	// public addresses (Node.Public) are DNATed/SNATed here.
	NAT *NAT `json:"nat,omitempty"`
}

// NAT is a site router's (or the VPC's NAT gateway's) address translation.
type NAT struct {
	// Public is the interface towards the internet; its address is the
	// site's public address (the masquerade source).
	Public string `json:"public"`
	// Inside are the prefixes masqueraded when they leave through Public.
	Inside []netip.Prefix `json:"inside"`
}

// Route is a static route.
type Route struct {
	Dst string `json:"dst"`
	Via string `json:"via"`
}

// BGP configures a router's BIRD.
type BGP struct {
	ASN      uint32         `json:"asn"`
	RouterID netip.Addr     `json:"routerID"`
	Announce []netip.Prefix `json:"announce,omitempty"`
	Peers    []BGPPeer      `json:"peers"`
}

// BGPPeer is one BIRD session.
type BGPPeer struct {
	Name    string     `json:"name"`
	Address netip.Addr `json:"address"`
	ASN     uint32     `json:"asn"`
}

// End is one side of a link.
type End struct {
	Host   string `json:"host"`
	Ifname string `json:"ifname"`
	Addr   string `json:"addr"`
}

// Link is a named point-to-point link; `fail <name>` cuts it.
type Link struct {
	Name string `json:"name"`
	A    End    `json:"a"`
	B    End    `json:"b"`
}

// Switch is an L2 segment with its router's port.
type Switch struct {
	Name   string `json:"name"`
	Router struct {
		Host   string   `json:"host"`
		Ifname string   `json:"ifname"`
		Addrs  []string `json:"addrs"`
	} `json:"router"`
}

// Pool is a NodePool the lab creates before the nodes join: edge nodes of a
// pool with podCIDRs get their blocks from it, as in a cluster whose
// controller-manager allocates no node CIDRs.
type Pool struct {
	Name         string         `json:"name"`
	Location     string         `json:"location"`
	Interconnect string         `json:"interconnect,omitempty"`
	PodCIDRs     []netip.Prefix `json:"podCIDRs,omitempty"`
	NodeMaskSize int            `json:"nodeMaskSize,omitempty"`
}

// Node is a Kubernetes node.
type Node struct {
	Name         string       `json:"name"`
	Location     string       `json:"location"`
	Pool         string       `json:"pool"`
	Interconnect string       `json:"interconnect"`
	Switch       string       `json:"switch"`
	Addr         netip.Prefix `json:"addr"`
	Gateway      netip.Addr   `json:"gateway"`
	PodCIDR      netip.Prefix `json:"podCIDR,omitzero"` // set by hand; else from the node's pool
	// PoolOnly labels the Node with strata.io/pool alone: location and
	// interconnect come from its NodePool (onboarding is one label).
	PoolOnly bool      `json:"poolOnly,omitempty"`
	ASN      uint32    `json:"asn,omitempty"`
	BGPPeers []BGPPeer `json:"bgpPeers,omitempty"`
	Pods     int       `json:"pods"`
	// ENIPrefixes runs a cloud node's pool in /28 prefix mode
	// (--eni-ipv4-prefixes), so the lab covers both ENIIP pool kinds.
	ENIPrefixes bool `json:"eniPrefixes,omitempty"`
	// Labels are extra labels on the Node object (e.g.
	// strata.io/wan-gateway: "true").
	Labels map[string]string `json:"labels,omitempty"`
	// Public gives the node a public address on its site router's NAT: a
	// 1:1 address (an EIP, an ENS public IP) or, with UDPPort, a port
	// forward on the site's public address. The lab publishes it as the
	// Node annotation strata.io/public-endpoint.
	Public *Public `json:"public,omitempty"`
}

// Public is a node's public address.
type Public struct {
	// IP is the public address: the node's own (1:1) or, with UDPPort, the
	// site router's public address.
	IP netip.Addr `json:"ip"`
	// UDPPort, when set, forwards only this UDP port of IP to the same port
	// on the node; the node's WAN listens there.
	UDPPort uint16 `json:"udpPort,omitempty"`
}

// Endpoint is where the internet reaches the node's WAN: the 1:1 address
// at the WAN's port, or the forwarded port.
func (p Public) Endpoint() netip.AddrPort {
	if p.UDPPort != 0 {
		return netip.AddrPortFrom(p.IP, p.UDPPort)
	}
	return netip.AddrPortFrom(p.IP, wan.DefaultPort)
}

// Load reads and validates a lab description.
func Load(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read lab description: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s.path = path
	return s, nil
}

// Parse decodes and validates a lab description.
func Parse(b []byte) (*Spec, error) {
	var s Spec
	if err := yaml.UnmarshalStrict(b, &s); err != nil {
		return nil, fmt.Errorf("lab description: %w", err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Validate checks names and references, naming the field at fault.
func (s *Spec) Validate() error {
	var errs []error
	hosts := map[string]string{}
	add := func(kind, name string) {
		if name == "" || len(name) > 12 || strings.ContainsAny(name, " /_.") {
			errs = append(errs, fmt.Errorf("%s name %q: use 1-12 characters of [a-z0-9-]", kind, name))
		}
		if prev, ok := hosts[name]; ok {
			errs = append(errs, fmt.Errorf("%s %q: name already used by a %s", kind, name, prev))
		}
		hosts[name] = kind
	}
	if !s.Mgmt.IsValid() {
		errs = append(errs, errors.New("mgmt: want the management network's CIDR, e.g. 10.255.0.0/24"))
	}
	for _, r := range s.Routers {
		add("router", r.Name)
	}
	add("router", "ctl")
	for _, n := range s.Nodes {
		add("node", n.Name)
	}
	switches := map[string]bool{}
	for _, sw := range s.Switches {
		switches[sw.Name] = true
		if hosts[sw.Router.Host] != "router" {
			errs = append(errs, fmt.Errorf("switch %s: router.host %q is not a router", sw.Name, sw.Router.Host))
		}
	}
	for _, l := range s.Links {
		for _, e := range []End{l.A, l.B} {
			if hosts[e.Host] == "" {
				errs = append(errs, fmt.Errorf("link %s: host %q is not declared", l.Name, e.Host))
			}
		}
	}
	pools := map[string]Pool{}
	for _, p := range s.Pools {
		pools[p.Name] = p
	}
	for _, n := range s.Nodes {
		if !switches[n.Switch] {
			errs = append(errs, fmt.Errorf("node %s: switch %q is not declared", n.Name, n.Switch))
		}
		if !n.Addr.IsValid() || !n.Gateway.IsValid() {
			errs = append(errs, fmt.Errorf("node %s: addr (CIDR) and gateway are required", n.Name))
		}
		switch n.Location {
		case "cloud", "idc", "ens":
		default:
			errs = append(errs, fmt.Errorf("node %s: location %q: want cloud, idc or ens", n.Name, n.Location))
		}
		if n.ENIPrefixes && n.Location != "cloud" {
			errs = append(errs, fmt.Errorf("node %s: eniPrefixes applies to cloud nodes only; remove it", n.Name))
		}
		pool, hasPool := pools[n.Pool]
		if n.Location != "cloud" && !n.PodCIDR.IsValid() && len(pool.PodCIDRs) == 0 {
			errs = append(errs, fmt.Errorf("node %s: %s nodes need a podCIDR, or a pool (pools:) with podCIDRs", n.Name, n.Location))
		}
		if n.PoolOnly && (!hasPool || pool.Location != n.Location) {
			errs = append(errs, fmt.Errorf("node %s: poolOnly needs a pool %q in pools: with location %s", n.Name, n.Pool, n.Location))
		}
	}
	errs = append(errs, s.validateInternet()...)
	return errors.Join(errs...)
}

// Link returns the named link.
func (s *Spec) Link(name string) (Link, bool) {
	for _, l := range s.Links {
		if l.Name == name {
			return l, true
		}
	}
	return Link{}, false
}

// MgmtAddr returns the i-th management address (0 is ctl).
func (s *Spec) MgmtAddr(i int) netip.Addr {
	a := s.Mgmt.Addr()
	for range i + 1 {
		a = a.Next()
	}
	return a
}
