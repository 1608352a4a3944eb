package wan

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/strata-net/strata/api"
	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/rtproto"
)

// Transport is one node's WireGuard WAN device, its peers and the routes of
// their allowed prefixes. It is safe for concurrent use.
type Transport struct {
	cfg    Config
	log    *slog.Logger
	be     backend
	reason string
	nl     *netlink.Handle
	ns     netns.NsHandle

	mu      sync.Mutex
	priv    wgtypes.Key
	closed  bool
	applied map[wgtypes.Key]peerConf // what the last successful configure of each peer set
	names   map[wgtypes.Key]string
	byName  map[string]wgtypes.Key
	peerErr map[string]string // peer name → its last Reconcile error
	lastErr string
	metrics *metrics
}

// New creates or adopts the WAN device in the current network namespace,
// loading or creating the node's key in cfg.StateDir. The implementation is
// the kernel's WireGuard where the kernel has it, else wireguard-go over TUN
// (cfg.Impl can force one). Every later kernel change (routes) goes to this
// namespace whichever thread calls.
func New(cfg Config) (*Transport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	priv, err := LoadOrCreateKey(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("wan: read the current network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("wan: open a netlink socket: %w", err)
	}
	t := &Transport{cfg: cfg, log: cfg.Log.With("component", "wan", "device", cfg.Name), nl: h, ns: ns, priv: priv,
		applied: map[wgtypes.Key]peerConf{}, names: map[wgtypes.Key]string{}, byName: map[string]wgtypes.Key{},
		peerErr: map[string]string{}, metrics: newMetrics()}
	fail := func(err error) (*Transport, error) {
		h.Close()
		_ = ns.Close()
		return nil, err
	}
	existing, addErr, err := probeKernelLink(h, cfg.Name, cfg.MTU, cfg.Impl)
	if err != nil {
		return fail(fmt.Errorf("wan: %w", err))
	}
	impl, reason, err := choose(cfg.Impl, existing, addErr)
	if err != nil {
		if addErr == nil && existing == "" && cfg.Impl != ImplUserspace {
			_ = deleteLink(h, cfg.Name)
		}
		return fail(fmt.Errorf("wan: device %s: %w", cfg.Name, err))
	}
	created := existing == "" && impl == ImplKernel
	switch impl {
	case ImplKernel:
		t.be, err = openKernel(cfg.Name)
	default:
		t.be, err = openUserspace(cfg.Name, cfg.MTU, t.log)
	}
	if err == nil {
		err = t.be.setup(priv, int(cfg.Port), cfg.Mark)
		if err != nil {
			_ = t.be.close()
		}
	}
	if err == nil {
		err = t.linkUp()
		if err != nil {
			_ = t.be.close()
		}
	}
	if err != nil {
		if created {
			_ = deleteLink(h, cfg.Name)
		}
		return fail(err)
	}
	t.reason = reason
	t.metrics.impl.WithLabelValues(string(impl)).Set(1)
	t.log.Info("wan transport ready", "impl", impl, "why", reason, "port", cfg.Port, "mtu", cfg.MTU, "publicKey", t.PublicKey())
	return t, nil
}

func deleteLink(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	return h.LinkDel(l)
}

func (t *Transport) linkUp() error {
	l, err := t.nl.LinkByName(t.cfg.Name)
	if err != nil {
		return fmt.Errorf("wan: find device %s: %w", t.cfg.Name, err)
	}
	if l.Attrs().MTU != t.cfg.MTU {
		if err := t.nl.LinkSetMTU(l, t.cfg.MTU); err != nil {
			return fmt.Errorf("wan: set MTU %d on %s: %w", t.cfg.MTU, t.cfg.Name, err)
		}
	}
	if err := t.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("wan: set %s up: %w", t.cfg.Name, err)
	}
	// Loose reverse-path filtering on the device: a standby peer's pod
	// prefixes are routed elsewhere, so strict filtering would drop its
	// probes and what it relays; WireGuard already accepts an inner source
	// only from the peer whose allowed IPs hold it. (The kernel uses the
	// higher of conf/all and the device's value, so 2 loosens a strict
	// node.) Loose filtering passes a packet whose reverse route leaves by
	// another device only if this device has an address, so the node's
	// source address goes on it too (as /32: it adds no route).
	if t.cfg.Source.IsValid() {
		a := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(t.cfg.Source, t.cfg.Source.BitLen()))}
		if err := t.nl.AddrReplace(l, a); err != nil {
			return fmt.Errorf("wan: address %s on %s: %w", t.cfg.Source, t.cfg.Name, err)
		}
	}
	rp := "/proc/sys/net/ipv4/conf/" + t.cfg.Name + "/rp_filter"
	if err := os.WriteFile(rp, []byte("2"), 0o644); err != nil {
		return fmt.Errorf("wan: set %s to 2 (loose): %w", rp, err)
	}
	return nil
}

// Impl is the implementation in use: "kernel" or "userspace".
func (t *Transport) Impl() string { return string(t.be.impl()) }

// ImplReason says why that implementation was chosen.
func (t *Transport) ImplReason() string { return t.reason }

// Name is the device name.
func (t *Transport) Name() string { return t.cfg.Name }

// Port is the UDP listen port.
func (t *Transport) Port() uint16 { return t.cfg.Port }

// PublicKey is the node's public key (base64), the fact to publish as
// strata.io/wan-public-key.
func (t *Transport) PublicKey() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.priv.PublicKey().String()
}

// Reconcile makes the device's peers and the tunnel routes exactly peers.
// It is idempotent: a repeat call with the same peers writes nothing. Each
// peer is validated and applied on its own: a bad or failing peer is
// reported in the returned error (one *PeerError each) and in Status, keeps
// its last good configuration if it had one, and never stops the others.
// An endpoint the device learned from a peer that initiated (NAT) is kept
// unless the wanted endpoint itself changes.
func (t *Transport) Reconcile(peers []Peer) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("wan: transport is closed; create a new one with New")
	}
	start := time.Now()
	err := t.reconcile(peers)
	t.metrics.observe(time.Since(start), err)
	if err != nil {
		t.lastErr = err.Error()
	} else {
		t.lastErr = ""
	}
	return err
}

func (t *Transport) reconcile(peers []Peer) error {
	valid, errs := validatePeers(peers, t.priv.PublicKey().String())
	cur, err := t.be.peers()
	if err != nil {
		return err
	}
	onDev := make(map[wgtypes.Key]devPeer, len(cur))
	for _, d := range cur {
		slices.SortFunc(d.allowedIPs, comparePrefix)
		onDev[d.key] = d
	}
	errFor := map[string]string{}
	for _, e := range errs {
		var pe *PeerError
		if errors.As(e, &pe) {
			errFor[pe.Peer] = pe.Err.Error()
		}
	}
	keep := map[wgtypes.Key]bool{}
	// A rejected peer keeps its last good configuration.
	for name := range errFor {
		if k, ok := t.byName[name]; ok {
			keep[k] = true
		}
	}
	for _, p := range valid {
		k, _ := parseKey(p.PublicKey)
		ka := p.Keepalive
		switch ka {
		case 0:
			ka = t.cfg.Keepalive
		case NoKeepalive:
			ka = 0
		}
		want := peerConf{key: k, endpoint: p.Endpoint, keepalive: ka, allowedIPs: p.AllowedIPs, routes: p.Routes}
		keep[k] = true
		d, on := onDev[k]
		prev, had := t.applied[k]
		send := want
		if on && had && prev.endpoint == want.endpoint {
			send.endpoint = netip.AddrPort{} // unchanged wish: keep what the device learned
		}
		if on && had && send.endpoint == (netip.AddrPort{}) && d.keepalive == want.keepalive &&
			slices.Equal(d.allowedIPs, want.allowedIPs) && (!want.endpoint.IsValid() || d.endpoint.IsValid()) {
			t.applied[k] = want // routes are ours alone: they may change with nothing on the device
			t.setName(k, p.Name)
			continue
		}
		if err := t.be.configure(send); err != nil {
			err = &PeerError{Peer: p.Name, Err: fmt.Errorf("configure on %s: %w", t.cfg.Name, err)}
			errs = append(errs, err)
			errFor[p.Name] = err.(*PeerError).Err.Error()
			if !had {
				delete(keep, k)
			}
			continue
		}
		t.applied[k] = want
		t.setName(k, p.Name)
	}
	for _, d := range cur {
		if keep[d.key] {
			continue
		}
		if err := t.be.configure(peerConf{key: d.key, remove: true}); err != nil {
			name := t.names[d.key]
			if name == "" {
				name = d.key.String()
			}
			errs = append(errs, &PeerError{Peer: name, Err: fmt.Errorf("remove from %s: %w", t.cfg.Name, err)})
			continue
		}
	}
	for k := range t.applied {
		if !keep[k] {
			delete(t.applied, k)
			delete(t.byName, t.names[k])
			delete(t.names, k)
		}
	}
	t.peerErr = errFor
	if err := t.syncRoutes(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (t *Transport) setName(k wgtypes.Key, name string) {
	if old, ok := t.names[k]; ok && old != name {
		delete(t.byName, old)
	}
	if ok, had := t.byName[name]; had && ok != k {
		delete(t.names, ok)
	}
	t.names[k], t.byName[name] = name, k
}

// wantRoutes is one route per routed prefix of every applied peer, except
// a prefix holding the peer's own endpoint: routing that into the tunnel
// would loop the tunnel's own packets.
func (t *Transport) wantRoutes() map[netip.Prefix]bool {
	out := map[netip.Prefix]bool{}
	for _, pc := range t.applied {
		for _, p := range pc.routes {
			if pc.endpoint.IsValid() && p.Contains(pc.endpoint.Addr()) {
				continue
			}
			out[p] = true
		}
	}
	return out
}

func (t *Transport) route(p netip.Prefix, idx int) *netlink.Route {
	r := &netlink.Route{LinkIndex: idx, Dst: prefixNet(p), Protocol: rtproto.WAN, Table: t.cfg.Table, Scope: netlink.SCOPE_LINK}
	if t.cfg.Source.IsValid() && t.cfg.Source.Is4() == p.Addr().Is4() {
		r.Src = t.cfg.Source.AsSlice()
	}
	return r
}

func (t *Transport) syncRoutes() error {
	l, err := t.nl.LinkByName(t.cfg.Name)
	if err != nil {
		return fmt.Errorf("wan: find device %s for its routes: %w", t.cfg.Name, err)
	}
	idx := l.Attrs().Index
	have, err := nlretry.Dump(func() ([]netlink.Route, error) {
		return t.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: t.cfg.Table, Protocol: rtproto.WAN},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return fmt.Errorf("wan: dump routes with protocol %d: %w", rtproto.WAN, err)
	}
	want := t.wantRoutes()
	var errs []error
	for _, r := range have {
		p := netPrefix(r.Dst)
		if want[p] && r.LinkIndex == idx && srcMatches(r.Src, t.route(p, idx).Src) {
			delete(want, p)
			continue
		}
		if err := t.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("wan: delete route %s: %w", p, err))
		}
	}
	ps := make([]netip.Prefix, 0, len(want))
	for p := range want {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return comparePrefix(ps[i], ps[j]) < 0 })
	for _, p := range ps {
		if err := t.nl.RouteReplace(t.route(p, idx)); err != nil {
			errs = append(errs, fmt.Errorf("wan: route %s dev %s: %w", p, t.cfg.Name, err))
		}
	}
	return errors.Join(errs...)
}

func srcMatches(a, b net.IP) bool { return (len(a) == 0 && len(b) == 0) || a.Equal(b) }

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func netPrefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// PeerStatus is one peer as the device sees it (the agent API's type).
type PeerStatus = api.WANDevicePeer

// Status is the transport for `strata status`.
type Status struct {
	Device     string       `json:"device"`
	Impl       string       `json:"impl"`
	ImplReason string       `json:"implReason"`
	Port       uint16       `json:"port"`
	PublicKey  string       `json:"publicKey"`
	Peers      []PeerStatus `json:"peers"`
	// Rejected lists peers whose last Reconcile failed and that have no
	// configuration on the device.
	Rejected  map[string]string `json:"rejected,omitempty"`
	LastError string            `json:"lastError,omitempty"`
}

// Status reads the device.
func (t *Transport) Status() (Status, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Status{Device: t.cfg.Name, Impl: t.Impl(), ImplReason: t.reason, Port: t.cfg.Port, PublicKey: t.priv.PublicKey().String(), LastError: t.lastErr}
	cur, err := t.be.peers()
	if err != nil {
		return s, err
	}
	seen := map[string]bool{}
	for _, d := range cur {
		name := t.names[d.key]
		seen[name] = true
		s.Peers = append(s.Peers, PeerStatus{Name: name, PublicKey: d.key.String(), Endpoint: d.endpoint, AllowedIPs: d.allowedIPs,
			LastHandshake: d.lastHandshake, RxBytes: d.rx, TxBytes: d.tx, Error: t.peerErr[name]})
	}
	sort.Slice(s.Peers, func(i, j int) bool { return s.Peers[i].Name < s.Peers[j].Name })
	for name, e := range t.peerErr {
		if !seen[name] {
			if s.Rejected == nil {
				s.Rejected = map[string]string{}
			}
			s.Rejected[name] = e
		}
	}
	return s, nil
}

// EndpointOf is the outer address the device last saw for the peer that
// owns inner address a (the longest allowed prefix holding it): for a
// NATed peer, its public mapping. It serves the reflector.
func (t *Transport) EndpointOf(a netip.Addr) (netip.AddrPort, bool) {
	t.mu.Lock()
	cur, err := t.be.peers()
	t.mu.Unlock()
	if err != nil {
		return netip.AddrPort{}, false
	}
	best, bits := netip.AddrPort{}, -1
	for _, d := range cur {
		for _, p := range d.allowedIPs {
			if p.Contains(a) && p.Bits() > bits {
				best, bits = d.endpoint, p.Bits()
			}
		}
	}
	return best, bits >= 0 && best.IsValid()
}

// RotateKey makes a new private key, stores it, and puts it on the device.
// Peers keep the old public key until they read the new one from the node
// annotation, so handshakes with each peer fail between now and then:
// publish the returned key at once. Sessions already up last until their
// next rekey (at most 2 minutes).
func (t *Transport) RotateKey() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return "", fmt.Errorf("wan: generate a new key: %w", err)
	}
	if err := writeKey(t.cfg.StateDir+"/"+KeyFile, k); err != nil {
		return "", err
	}
	if err := t.be.setKey(k); err != nil {
		return "", fmt.Errorf("wan: set the new key on %s (the new key is stored and is used from the next start): %w", t.cfg.Name, err)
	}
	t.priv = k
	return k.PublicKey().String(), nil
}

// Close releases the transport. A kernel device and its routes stay, so a
// restarting agent adopts them without a gap; a userspace device ends with
// it (its TUN link and routes go away).
func (t *Transport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	err := t.be.close()
	t.nl.Close()
	_ = t.ns.Close()
	return err
}
