package wan

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// DeviceName is the one WireGuard interface per node that carries the WAN.
const DeviceName = "strata-wan"

// DefaultPort is the WAN's UDP port (the --wan-port flag).
const DefaultPort uint16 = 51871

// DefaultMTU is the WAN device MTU for a 1500-byte underlay: 1500 minus the
// WireGuard overhead over IPv6 (40 IP + 8 UDP + 32 WireGuard = 80), so the
// same MTU holds whichever address family the endpoint has.
const DefaultMTU = 1420

// Overhead is the bytes WireGuard adds to an inner packet on an IPv6
// underlay (on IPv4 it is 60).
const Overhead = 80

// DefaultKeepalive is the persistent keepalive of peers whose Keepalive is
// zero. NAT and stateful firewalls drop idle UDP mappings after 30 s or more
// (RFC 4787 asks for at least 2 min, home routers go as low as 30 s), so 10 s
// keeps them open with margin while costing 32 bytes a peer every 10 s.
const DefaultKeepalive = 10 * time.Second

// KeyFile is the private key's file name inside Config.StateDir.
const KeyFile = "wan.key"

// Impl is a WireGuard implementation.
type Impl string

const (
	// ImplAuto picks the kernel's WireGuard when the kernel has it, else
	// userspace.
	ImplAuto Impl = ""
	// ImplKernel is the kernel's WireGuard (link type "wireguard"), driven
	// through wgctrl over generic netlink.
	ImplKernel Impl = "kernel"
	// ImplUserspace is wireguard-go over a TUN device, configured in-process.
	// The tunnel lives as long as the process does.
	ImplUserspace Impl = "userspace"
)

// Impls lists the concrete implementations (the values of Transport.Impl).
var Impls = []Impl{ImplKernel, ImplUserspace}

// Config is one node's WAN transport.
type Config struct {
	// Name of the WireGuard device; default DeviceName.
	Name string
	// Port is the UDP listen port; default DefaultPort.
	Port uint16
	// StateDir holds the private key (KeyFile, mode 0600). Required.
	StateDir string
	// MTU of the device; default DefaultMTU.
	MTU int
	// Impl forces an implementation; ImplAuto (the default) chooses.
	Impl Impl
	// Source is the node's own address, set as the preferred source of the
	// tunnel routes so host-originated packets carry an address the peer
	// accepts (every peer's AllowedIPs include its node address), and put
	// on the device as a /32 (loose reverse-path filtering needs the device
	// to have an address). Without it, a node whose rp_filter is on drops
	// what standby peers send.
	Source netip.Addr
	// Table is the routing table for the tunnel routes; default 254 (main).
	Table int
	// Keepalive for peers whose Peer.Keepalive is zero; default DefaultKeepalive.
	Keepalive time.Duration
	// Mark is set on the tunnel's own (outer) UDP packets, so a policy rule
	// can send them by the underlay's default route, never by a pod route
	// or a BGP route over the leased line the tunnel is there to bypass.
	// 0 sets no mark.
	Mark uint32
	// Log; default slog.Default().
	Log *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		c.Name = DeviceName
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.Table == 0 {
		c.Table = 254
	}
	if c.Keepalive == 0 {
		c.Keepalive = DefaultKeepalive
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	var errs []error
	if len(c.Name) > 15 || strings.ContainsAny(c.Name, "/ \t\n") {
		errs = append(errs, fmt.Errorf("wan config: name %q: want an interface name of at most 15 characters without '/' or spaces (default %s)", c.Name, DeviceName))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("wan config: stateDir is empty: set the agent's state directory (the private key is kept there)"))
	}
	if c.MTU < 1280 || c.MTU > 65535-Overhead {
		errs = append(errs, fmt.Errorf("wan config: mtu=%d: want 1280..%d (default %d: a 1500-byte underlay minus %d)", c.MTU, 65535-Overhead, DefaultMTU, Overhead))
	}
	switch c.Impl {
	case ImplAuto, ImplKernel, ImplUserspace:
	default:
		errs = append(errs, fmt.Errorf("wan config: impl=%q: want kernel, userspace or empty (auto)", c.Impl))
	}
	if c.Source.IsValid() && c.Source.Zone() != "" {
		errs = append(errs, fmt.Errorf("wan config: source=%s: want an address without a zone", c.Source))
	}
	if c.Table < 1 || c.Table == 255 {
		errs = append(errs, fmt.Errorf("wan config: table=%d: want a routing table id other than 255 (local); default 254 (main)", c.Table))
	}
	if c.Keepalive < time.Second || c.Keepalive > 65535*time.Second {
		errs = append(errs, fmt.Errorf("wan config: keepalive=%s: want 1s..65535s (default %s)", c.Keepalive, DefaultKeepalive))
	}
	return c, errors.Join(errs...)
}

// Peer is one WireGuard peer of this node.
type Peer struct {
	// Name is the peer's node name (for errors, status and metrics).
	Name string
	// PublicKey is the peer's published key (base64, strata.io/wan-public-key).
	PublicKey string
	// Endpoint is where to send to; the zero value means "unknown": the peer
	// is reached once it initiates (it is behind NAT), and an endpoint
	// learned that way is kept.
	Endpoint netip.AddrPort
	// AllowedIPs are the inner addresses routed to and accepted from this
	// peer: its pod prefixes and its node address, plus, when it relays,
	// the far nodes' prefixes. Each prefix belongs to one peer.
	AllowedIPs []netip.Prefix
	// Keepalive is the persistent keepalive; zero means Config.Keepalive,
	// NoKeepalive none (this side need not hold a NAT mapping open).
	Keepalive time.Duration
	// Routes are the allowed prefixes the kernel routes into the device
	// (each must be one of AllowedIPs). The others are accepted from the
	// peer but routed elsewhere: a standby peer, whose session is ready so
	// a failover only adds routes.
	Routes []netip.Prefix
}

// NoKeepalive as Peer.Keepalive turns persistent keepalives off for the peer.
const NoKeepalive time.Duration = -1

// PeerError is one peer that Reconcile could not apply; the others were.
type PeerError struct {
	Peer string
	Err  error
}

func (e *PeerError) Error() string { return fmt.Sprintf("wan peer %s: %v", e.Peer, e.Err) }
func (e *PeerError) Unwrap() error { return e.Err }

// validatePeers checks every peer on its own and returns the valid ones,
// sorted by name, plus one PeerError per rejected peer. A prefix or key
// claimed twice is kept by the first peer in name order and rejects the
// others, so the outcome does not depend on input order.
func validatePeers(peers []Peer, self string) ([]Peer, []error) {
	sorted := slices.Clone(peers)
	slices.SortStableFunc(sorted, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	var ok []Peer
	var errs []error
	names := map[string]bool{}
	keys := map[string]string{}
	owner := map[netip.Prefix]string{}
	for _, p := range sorted {
		if err := validatePeer(p, self); err != nil {
			errs = append(errs, &PeerError{Peer: p.Name, Err: err})
			continue
		}
		if names[p.Name] {
			errs = append(errs, &PeerError{Peer: p.Name, Err: errors.New("listed twice: peer names must be unique")})
			continue
		}
		if other, dup := keys[p.PublicKey]; dup {
			errs = append(errs, &PeerError{Peer: p.Name, Err: fmt.Errorf("public key %s is also peer %s's: each node needs its own key (a copied state dir?)", p.PublicKey, other)})
			continue
		}
		var clash []string
		for _, pf := range p.AllowedIPs {
			if o, taken := owner[pf.Masked()]; taken {
				clash = append(clash, pf.String()+" (peer "+o+")")
			}
		}
		if len(clash) > 0 {
			errs = append(errs, &PeerError{Peer: p.Name, Err: fmt.Errorf("allowed IPs %s already belong to another peer: one prefix, one peer", strings.Join(clash, ", "))})
			continue
		}
		names[p.Name], keys[p.PublicKey] = true, p.Name
		p.AllowedIPs = normPrefixes(p.AllowedIPs)
		for _, pf := range p.AllowedIPs {
			owner[pf] = p.Name
		}
		p.Routes = normPrefixes(p.Routes)
		ok = append(ok, p)
	}
	return ok, errs
}

func validatePeer(p Peer, self string) error {
	if p.Name == "" {
		return errors.New("empty name: every peer needs its node name")
	}
	k, err := parseKey(p.PublicKey)
	if err != nil {
		return fmt.Errorf("publicKey %q: %w", p.PublicKey, err)
	}
	if k.String() == self {
		return errors.New("publicKey is this node's own key: a node is not its own peer")
	}
	if p.Endpoint.IsValid() && (p.Endpoint.Port() == 0 || p.Endpoint.Addr().IsUnspecified() || p.Endpoint.Addr().Zone() != "") {
		return fmt.Errorf("endpoint %s: want a routable ip:port with a non-zero port, or none", p.Endpoint)
	}
	allowed := map[netip.Prefix]bool{}
	for _, pf := range p.AllowedIPs {
		if !pf.IsValid() {
			return errors.New("allowedIPs holds an invalid prefix")
		}
		allowed[pf.Masked()] = true
	}
	for _, pf := range p.Routes {
		if !pf.IsValid() || !allowed[pf.Masked()] {
			return fmt.Errorf("routes holds %s, which is not one of allowedIPs: a route into the tunnel needs the peer to accept it", pf)
		}
	}
	if p.Keepalive != NoKeepalive && (p.Keepalive < 0 || p.Keepalive > 65535*time.Second || p.Keepalive%time.Second != 0) {
		return fmt.Errorf("keepalive %s: want whole seconds 0..65535 (0: the transport's default) or NoKeepalive", p.Keepalive)
	}
	return nil
}

// normPrefixes masks, sorts and deduplicates (into a new slice).
func normPrefixes(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	out := make([]netip.Prefix, len(ps))
	for i, pf := range ps {
		out[i] = pf.Masked()
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
