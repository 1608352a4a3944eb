package vxlan

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Defaults for DeviceConfig fields left zero.
const (
	DefaultName          = "strata.vxlan"
	DefaultVNI           = 1
	DefaultPort          = 4789
	DefaultCheckInterval = 10 * time.Second
	// Overhead is what VXLAN over IPv4 adds to each packet: outer IPv4 (20),
	// UDP (8), VXLAN (8) and the inner Ethernet header (14).
	Overhead = 50
	maxVNI   = 1<<24 - 1
)

// DeviceConfig describes this node's VXLAN device. LocalIP and OverlayIP are
// required; everything else has a default.
type DeviceConfig struct {
	// Name of the device; default "strata.vxlan".
	Name string
	// VNI is the VXLAN network identifier, 1..16777215; default 1.
	VNI uint32
	// Port is the UDP destination port; default 4789.
	Port uint16
	// LocalIP is this node's VTEP (underlay) address: the outer source
	// address. Required, IPv4.
	LocalIP netip.Addr
	// UnderlayLink is the underlay interface. When set the device is bound to
	// it and, unless MTU or UnderlayMTU is set, its MTU gives the device MTU.
	UnderlayLink string
	// UnderlayMTU is the underlay MTU when UnderlayLink is not set or should
	// not be read. The device MTU is UnderlayMTU - 50.
	UnderlayMTU int
	// MTU overrides the computed device MTU.
	MTU int
	// MAC is the VTEP MAC. Empty means DefaultMAC(VNI, OverlayIP), which is
	// stable across restarts and device recreation, so peers need no update.
	MAC net.HardwareAddr
	// OverlayIP is this node's overlay gateway address, put on the device as
	// a /32. Peers reach this node's pods "via OverlayIP dev <vxlan> onlink".
	// Edge nodes use the first address of their pod CIDR (as flannel does);
	// cloud nodes, whose pods are scattered /32s, use one dedicated address
	// (see docs/vxlan.md). Required, IPv4.
	OverlayIP netip.Addr
	// CheckInterval is how often Run re-checks everything; default 10 s.
	CheckInterval time.Duration
}

// Peer is one overlay peer: another node reached through VXLAN.
type Peer struct {
	// Name identifies the peer in logs and errors (the node name).
	Name string
	// UnderlayIP is the peer's VTEP address (the outer destination).
	UnderlayIP netip.Addr
	// MAC is the peer's VTEP MAC; empty means DefaultMAC(VNI, OverlayIP).
	MAC net.HardwareAddr
	// OverlayIP is the peer's overlay gateway address (its DeviceConfig.OverlayIP).
	OverlayIP netip.Addr
	// Prefixes are the peer's pod addresses: its pod CIDR, /28 ENI prefixes
	// or per-pod /32s. Host bits must be zero.
	Prefixes []netip.Prefix
}

// DefaultMAC derives a VTEP MAC from the VNI and the node's overlay address:
// locally administered, unicast, and the same every time, so a recreated
// device (or a restarted agent) keeps the MAC its peers already know.
func DefaultMAC(vni uint32, overlayIP netip.Addr) net.HardwareAddr {
	var buf [4 + 16]byte
	binary.BigEndian.PutUint32(buf[:4], vni)
	a := overlayIP.Unmap().As16() // ::ffff:a.b.c.d and a.b.c.d are one node
	copy(buf[4:], a[:])
	sum := sha256.Sum256(buf[:])
	mac := net.HardwareAddr(append([]byte(nil), sum[:6]...))
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// withDefaults validates cfg and fills in defaults. It does no I/O.
func (cfg DeviceConfig) withDefaults() (DeviceConfig, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if len(cfg.Name) > 15 || strings.ContainsAny(cfg.Name, "/ \t\n:") {
		return cfg, fmt.Errorf("vxlan: DeviceConfig.Name %q is not a valid interface name (at most 15 characters, no '/', ':' or spaces)", cfg.Name)
	}
	if cfg.VNI == 0 {
		cfg.VNI = DefaultVNI
	}
	if cfg.VNI > maxVNI {
		return cfg, fmt.Errorf("vxlan: DeviceConfig.VNI %d is out of range; use 1..%d", cfg.VNI, maxVNI)
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if err := requireV4("DeviceConfig.LocalIP", "this node's underlay (VTEP) address", cfg.LocalIP); err != nil {
		return cfg, err
	}
	if err := requireV4("DeviceConfig.OverlayIP", "this node's overlay gateway address (first address of its pod CIDR, or a dedicated /32)", cfg.OverlayIP); err != nil {
		return cfg, err
	}
	cfg.LocalIP, cfg.OverlayIP = cfg.LocalIP.Unmap(), cfg.OverlayIP.Unmap()
	if cfg.MTU < 0 || cfg.UnderlayMTU < 0 {
		return cfg, fmt.Errorf("vxlan: DeviceConfig.MTU (%d) and UnderlayMTU (%d) must not be negative", cfg.MTU, cfg.UnderlayMTU)
	}
	if cfg.MTU == 0 && cfg.UnderlayMTU == 0 && cfg.UnderlayLink == "" {
		return cfg, errors.New("vxlan: cannot size the device: set DeviceConfig.UnderlayLink (the MTU is read from it), UnderlayMTU, or MTU")
	}
	if cfg.MTU == 0 && cfg.UnderlayMTU != 0 {
		cfg.MTU = cfg.UnderlayMTU - Overhead
	}
	if cfg.MTU != 0 && cfg.MTU < 576 {
		return cfg, fmt.Errorf("vxlan: device MTU %d is too small (IPv4 needs at least 576 here); raise DeviceConfig.UnderlayMTU or MTU", cfg.MTU)
	}
	if cfg.MAC == nil {
		cfg.MAC = DefaultMAC(cfg.VNI, cfg.OverlayIP)
	}
	if err := checkMAC("DeviceConfig.MAC", cfg.MAC); err != nil {
		return cfg, err
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.CheckInterval < 0 {
		return cfg, fmt.Errorf("vxlan: DeviceConfig.CheckInterval %s must be positive", cfg.CheckInterval)
	}
	return cfg, nil
}

func requireV4(field, what string, a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("vxlan: %s is required: %s", field, what)
	case a.Is6() && !a.Is4In6():
		return fmt.Errorf("vxlan: %s %s is IPv6; the overlay supports IPv4 only for now (dual-stack is not implemented); give an IPv4 address", field, a)
	case a.IsUnspecified() || a.IsMulticast():
		return fmt.Errorf("vxlan: %s %s must be a unicast address: %s", field, a, what)
	}
	return nil
}

func checkMAC(field string, mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("vxlan: %s %q is not a 6-byte Ethernet MAC", field, mac.String())
	}
	if mac[0]&0x01 != 0 || mac.String() == "00:00:00:00:00:00" {
		return fmt.Errorf("vxlan: %s %s must be a unicast, non-zero MAC", field, mac)
	}
	return nil
}

// macKey is a MAC usable as a map key.
type macKey [6]byte

func keyOf(mac net.HardwareAddr) (macKey, bool) {
	var k macKey
	if len(mac) != 6 {
		return k, false
	}
	copy(k[:], mac)
	return k, true
}

func (k macKey) hw() net.HardwareAddr { return net.HardwareAddr(append([]byte(nil), k[:]...)) }

// desired is the kernel state a set of peers asks for on our device.
type desired struct {
	neigh  map[netip.Addr]macKey       // overlay gateway -> peer VTEP MAC
	fdb    map[macKey]netip.Addr       // peer VTEP MAC -> peer underlay IP
	routes map[netip.Prefix]netip.Addr // pod prefix -> overlay gateway (onlink)
	peers  int
}

// plan validates peers against cfg (already defaulted) and computes the
// desired state. It does no I/O, so bad input leaves the kernel untouched.
// Each peer is checked on its own: a bad one is left out with a *PeerError
// (in the returned join) and the others are planned, so one bad peer never
// stops the rest. Between two peers that claim the same address, MAC or
// prefix, the first in the list keeps it.
func plan(cfg DeviceConfig, peers []Peer) (desired, error) {
	d := desired{
		neigh:  make(map[netip.Addr]macKey, len(peers)),
		fdb:    make(map[macKey]netip.Addr, len(peers)),
		routes: make(map[netip.Prefix]netip.Addr, len(peers)),
	}
	o := owners{
		names:    make(map[string]struct{}, len(peers)),
		underlay: make(map[netip.Addr]string, len(peers)),
		mac:      make(map[macKey]string, len(peers)),
		gw:       make(map[netip.Addr]string, len(peers)),
		route:    make(map[netip.Prefix]string, len(peers)),
	}
	var errs []error
	for i, p := range peers {
		pp, err := planPeer(cfg, i, p, &o)
		if err != nil {
			errs = append(errs, &PeerError{Peer: p.Name, Err: err})
			continue
		}
		o.names[p.Name] = struct{}{}
		o.underlay[pp.ul] = p.Name
		o.gw[pp.gw] = p.Name
		o.mac[pp.mac] = p.Name
		d.neigh[pp.gw] = pp.mac
		d.fdb[pp.mac] = pp.ul
		for _, pfx := range pp.routes {
			o.route[pfx] = p.Name
			d.routes[pfx] = pp.gw
		}
		d.peers++
	}
	return d, errors.Join(errs...)
}

// PeerError is one peer Reconcile left out, and why; the other peers are
// programmed.
type PeerError struct {
	Peer string
	Err  error
}

func (e *PeerError) Error() string { return e.Err.Error() }
func (e *PeerError) Unwrap() error { return e.Err }

// owners are what the peers planned so far hold.
type owners struct {
	names    map[string]struct{}
	underlay map[netip.Addr]string
	mac      map[macKey]string
	gw       map[netip.Addr]string
	route    map[netip.Prefix]string
}

// peerPlan is one valid peer's share of the desired state.
type peerPlan struct {
	ul, gw netip.Addr
	mac    macKey
	routes []netip.Prefix
}

// planPeer validates one peer against cfg and what earlier peers hold,
// changing nothing.
func planPeer(cfg DeviceConfig, i int, p Peer, o *owners) (peerPlan, error) {
	if p.Name == "" {
		return peerPlan{}, fmt.Errorf("vxlan: peers[%d].Name is empty; give every peer its node name", i)
	}
	if _, dup := o.names[p.Name]; dup {
		return peerPlan{}, fmt.Errorf("vxlan: peer %q is listed twice; pass each peer once", p.Name)
	}
	if err := requireV4("peer "+p.Name+" UnderlayIP", "the peer's VTEP address", p.UnderlayIP); err != nil {
		return peerPlan{}, err
	}
	if err := requireV4("peer "+p.Name+" OverlayIP", "the peer's overlay gateway address", p.OverlayIP); err != nil {
		return peerPlan{}, err
	}
	ul, gw := p.UnderlayIP.Unmap(), p.OverlayIP.Unmap()
	if ul == cfg.LocalIP.Unmap() {
		return peerPlan{}, fmt.Errorf("vxlan: peer %q UnderlayIP %s is this node's own LocalIP; do not list the local node as a peer", p.Name, ul)
	}
	if other, dup := o.underlay[ul]; dup {
		return peerPlan{}, fmt.Errorf("vxlan: peers %q and %q share UnderlayIP %s; each peer needs its own VTEP address", other, p.Name, ul)
	}
	if gw == cfg.OverlayIP.Unmap() {
		return peerPlan{}, fmt.Errorf("vxlan: peer %q OverlayIP %s is this node's own OverlayIP; overlay addresses must be unique per node", p.Name, gw)
	}
	if other, dup := o.gw[gw]; dup {
		return peerPlan{}, fmt.Errorf("vxlan: peers %q and %q share OverlayIP %s; overlay addresses must be unique per node", other, p.Name, gw)
	}
	mac := p.MAC
	if mac == nil {
		mac = DefaultMAC(cfg.VNI, gw)
	}
	if err := checkMAC("peer "+p.Name+" MAC", mac); err != nil {
		return peerPlan{}, err
	}
	mk, _ := keyOf(mac)
	if localMAC, _ := keyOf(cfg.MAC); mk == localMAC {
		return peerPlan{}, fmt.Errorf("vxlan: peer %q MAC %s equals this node's VTEP MAC; VTEP MACs must be unique", p.Name, mac)
	}
	if other, dup := o.mac[mk]; dup {
		return peerPlan{}, fmt.Errorf("vxlan: peers %q and %q share VTEP MAC %s; VTEP MACs must be unique", other, p.Name, mac)
	}
	pp := peerPlan{ul: ul, gw: gw, mac: mk}
	gwCovered := false
	for j, pfx := range p.Prefixes {
		if !pfx.IsValid() {
			return peerPlan{}, fmt.Errorf("vxlan: peer %q Prefixes[%d] is not a valid prefix", p.Name, j)
		}
		if pfx.Addr().Is6() && !pfx.Addr().Is4In6() {
			return peerPlan{}, fmt.Errorf("vxlan: peer %q prefix %s is IPv6; the overlay supports IPv4 only for now (dual-stack is not implemented); route it natively or drop it", p.Name, pfx)
		}
		if pfx.Addr().Is4In6() {
			if pfx.Bits() < 96 {
				return peerPlan{}, fmt.Errorf("vxlan: peer %q prefix %s is not a valid IPv4-mapped prefix", p.Name, pfx)
			}
			pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
		}
		if pfx.Masked() != pfx {
			return peerPlan{}, fmt.Errorf("vxlan: peer %q prefix %s has host bits set; use %s", p.Name, pfx, pfx.Masked())
		}
		if pfx.Bits() == 0 {
			return peerPlan{}, fmt.Errorf("vxlan: peer %q prefix %s would route everything through the overlay; give its pod CIDR, /28s or /32s", p.Name, pfx)
		}
		if other, dup := o.route[pfx]; dup {
			return peerPlan{}, fmt.Errorf("vxlan: prefix %s is claimed by peers %q and %q; a pod prefix belongs to one node", pfx, other, p.Name)
		}
		if slices.Contains(pp.routes, pfx) {
			continue // the same prefix twice for one peer is harmless
		}
		pp.routes = append(pp.routes, pfx)
		gwCovered = gwCovered || pfx.Contains(gw)
	}
	if !gwCovered {
		// The gateway address must be routable so replies to traffic the
		// local node sends from its own OverlayIP come back (cloud nodes'
		// dedicated gateway addresses are in no pod prefix).
		host := netip.PrefixFrom(gw, 32)
		if other, dup := o.route[host]; dup {
			return peerPlan{}, fmt.Errorf("vxlan: peer %q OverlayIP %s is also a pod prefix of peer %q", p.Name, gw, other)
		}
		if !slices.Contains(pp.routes, host) {
			pp.routes = append(pp.routes, host)
		}
	}
	return pp, nil
}
