package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/api"
	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/rtproto"
	"github.com/strata-net/strata/topology"
	"github.com/strata-net/strata/vxlan"
	"github.com/strata-net/strata/wan"
)

// WAN settings (--wan).
const (
	// WANAuto: on when the device can be made (kernel WireGuard, else
	// userspace over TUN), else off with the reason in status.
	WANAuto = "auto"
	// WANOn: the agent stops when the device cannot be made.
	WANOn = "on"
	// WANOff: no WAN device; the node publishes no WAN key, so no peer
	// plans a WAN path to it.
	WANOff = "off"
)

// WANConfig is the WAN transport's part of the agent's configuration.
type WANConfig struct {
	// Setting is auto, on or off (--wan).
	Setting string
	// Port is the WireGuard UDP port (--wan-port).
	Port uint16
	// Impl forces kernel or userspace WireGuard (--wan-impl); empty: auto.
	Impl wan.Impl
	// PublicEndpoint is where the internet reaches this node's WAN port (an
	// EIP, an ENS public IP, or a port forward on the site router):
	// --public-endpoint, else the node's strata.io/public-endpoint
	// annotation. Zero: behind NAT (this node initiates, with keepalives).
	PublicEndpoint netip.AddrPort
	// Table holds the routes into the WAN device. The rule at
	// wanRulePriority, ahead of the main table, makes them win over a
	// routing protocol's routes for the same prefixes (BGP keeps its
	// learned routes, proto 202, in main for the hold time after a silent
	// leased-line cut), and leaves those routes in place for the way back.
	Table int
	// ProbePort is the tunnel prober's UDP port on the probe address.
	ProbePort uint16
	// ProbeTimeout bounds one tunnel probe (an internet round trip).
	ProbeTimeout time.Duration
}

func (c *WANConfig) defaults() {
	if c.Setting == "" {
		c.Setting = WANOff
	}
	if c.Port == 0 {
		c.Port = wan.DefaultPort
	}
	if c.Table == 0 {
		c.Table = 251
	}
	if c.ProbePort == 0 {
		c.ProbePort = wan.DefaultProbePort
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = wan.DefaultProbeTimeout
	}
}

func (c *WANConfig) validate() error {
	var errs []error
	switch c.Setting {
	case WANAuto, WANOn, WANOff:
	default:
		errs = append(errs, fmt.Errorf("--wan=%q: want auto, on or off", c.Setting))
	}
	switch c.Impl {
	case wan.ImplAuto, wan.ImplKernel, wan.ImplUserspace:
	default:
		errs = append(errs, fmt.Errorf("--wan-impl=%q: want kernel, userspace or empty (auto)", c.Impl))
	}
	if c.PublicEndpoint.IsValid() && (c.PublicEndpoint.Port() == 0 || c.PublicEndpoint.Addr().IsUnspecified() || c.PublicEndpoint.Addr().IsLoopback()) {
		errs = append(errs, fmt.Errorf("--public-endpoint=%s: want the ip:port the internet reaches this node's WAN port at (e.g. an EIP 203.0.113.11:%d)", c.PublicEndpoint, wan.DefaultPort))
	}
	if c.Table < 1 || c.Table == 253 || c.Table == 254 || c.Table == 255 {
		errs = append(errs, fmt.Errorf("--wan-table=%d: want a table of its own, not 253-255 (default, main, local)", c.Table))
	}
	return errors.Join(errs...)
}

// The WAN part of /status (the API package defines it for `strata status`).
type (
	WANStatus     = api.WAN
	WANPeerStatus = api.WANPeer
)

// wanPath is the agent's WAN: the device, its prober, and what the last
// programming could not apply.
type wanPath struct {
	cfg   WANConfig
	log   *slog.Logger
	cache string // last seen endpoints of peers, kept across restarts

	mu       sync.Mutex // guards all below: status reads them from another goroutine
	t        *wan.Transport
	prober   *wan.Prober
	off      string
	declared netip.AddrPort // this node's published public endpoint
	errs     []string
	lastSeen map[string]netip.AddrPort
}

func newWANPath(cfg Config, log *slog.Logger) *wanPath {
	return &wanPath{cfg: cfg.WAN, log: log.With("component", "wan"), cache: filepath.Join(cfg.StateDir, "wan-peers.json"),
		lastSeen: map[string]netip.AddrPort{}, off: "not started yet"}
}

// transport is the device, or nil when the WAN is off.
func (w *wanPath) transport() *wan.Transport {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.t
}

// startWAN makes the WAN device (unless --wan=off), installs the rule that
// puts its routes ahead of main, and completes this node's facts with its
// public key and declared endpoint. With --wan=auto a device that cannot
// be made leaves the WAN off, with the reason in status and metrics.
func (a *Agent) startWAN(self *topology.NodeFacts) error {
	c, w := a.cfg.WAN, a.wan
	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "strata_wan_up",
		Help: "1 when this node's WAN device runs; 0 when --wan=off or the device could not be made (strata status says why)."})
	a.reg.MustRegister(up)
	self.WANPublicKey = ""
	setOff := func(why string) {
		w.mu.Lock()
		w.off = why
		w.mu.Unlock()
	}
	if c.Setting == WANOff {
		setOff("--wan=off")
		return removeWANRouting(c.Table)
	}
	t, err := wan.New(wan.Config{Port: c.Port, StateDir: a.cfg.StateDir, Impl: c.Impl, Source: self.ProbeIP,
		Table: c.Table, Mark: a.cfg.ProbeMark, Log: a.log})
	if err != nil {
		if c.Setting == WANOn {
			return fmt.Errorf("--wan=on: %w", err)
		}
		setOff("--wan=auto and the device cannot be made: " + err.Error())
		w.log.Warn("WAN off: the device cannot be made", "err", err)
		return removeWANRouting(c.Table)
	}
	if err := ensureWANRule(c.Table); err != nil {
		_ = t.Close()
		return err
	}
	a.reg.MustRegister(t, w)
	up.Set(1)
	self.WANPublicKey = t.PublicKey()
	if c.PublicEndpoint.IsValid() {
		self.PublicEndpoint = c.PublicEndpoint
	}
	w.loadLastSeen()
	w.mu.Lock()
	w.t, w.off, w.declared = t, "", self.PublicEndpoint
	w.mu.Unlock()
	return nil
}

// startWANProber probes the WAN peers through the tunnel from this node's
// probe address (once the first programming put it on the node) and feeds
// the results to the decider as ProbeWAN.
func (a *Agent) startWANProber() error {
	t := a.wan.transport()
	if t == nil {
		return nil
	}
	self := a.self.Name
	p, err := wan.StartProber(wan.ProberConfig{Device: t.Name(), Source: a.self.ProbeIP, Port: a.cfg.WAN.ProbePort,
		Period: a.cfg.ProbePeriod, Timeout: a.cfg.WAN.ProbeTimeout, SeenAt: t.EndpointOf,
		OnResult: func(peer string, ok bool, at time.Time) {
			a.post(func() {
				a.decider.Observe(topology.ProbeResult{From: self, To: peer, Kind: topology.ProbeWAN, OK: ok, At: at})
			})
		}})
	if err != nil {
		return fmt.Errorf("wan: %w", err)
	}
	a.wan.mu.Lock()
	a.wan.prober = p
	a.wan.mu.Unlock()
	return nil
}

func (w *wanPath) close() {
	if w == nil {
		return
	}
	w.mu.Lock()
	t, p := w.t, w.prober
	w.prober = nil
	w.mu.Unlock()
	if p != nil {
		_ = p.Close()
	}
	if t != nil {
		w.refreshLastSeen()
		_ = t.Close()
	}
}

// wanPrograms copies the plan's programs into the WAN's terms.
func wanPrograms(plan *topology.Plan, peers []topology.PeerProgram, lastSeen map[string]netip.AddrPort) []wan.Program {
	out := make([]wan.Program, 0, len(peers))
	for _, pp := range peers {
		p := wan.Program{Peer: pp.Peer, WAN: pp.Path == topology.PathWAN, PodPrefixes: pp.PodPrefixes,
			PublicKey: pp.WANPublicKey, Endpoint: pp.WANEndpoint, Relay: pp.Relay, LastSeen: lastSeen[pp.Peer]}
		if np, ok := plan.Node(pp.Peer); ok {
			p.ProbeIP, p.Gateway = np.Facts.ProbeIP, np.Facts.WANGateway
		}
		out = append(out, p)
	}
	return out
}

// programWAN makes the WAN device's peers and routes follow the plan. A
// program the WAN cannot apply is reported (status, strata_wan_peer_error)
// and stops nothing; only a device failure fails the programming.
func (a *Agent) programWAN(plan *topology.Plan, peers []topology.PeerProgram) error {
	w := a.wan
	t := w.transport()
	if t == nil {
		return nil
	}
	w.refreshLastSeen()
	w.mu.Lock()
	progs := wanPrograms(plan, peers, w.lastSeen)
	w.mu.Unlock()
	res := wan.PeersFor(wan.Self{Reachable: a.self.PublicEndpoint.IsValid()}, progs)
	err := t.Reconcile(res.Peers)
	var msgs []string
	for _, e := range res.Errors {
		msgs = append(msgs, e.Error())
	}
	var hard []error
	for _, e := range flatten(err) {
		var pe *wan.PeerError
		if errors.As(e, &pe) {
			msgs = append(msgs, e.Error())
		} else {
			hard = append(hard, e)
		}
	}
	w.mu.Lock()
	if !slices.Equal(msgs, w.errs) && len(msgs) > 0 {
		w.log.Warn("WAN programs not applied; the others are", "errors", msgs)
	}
	w.errs = msgs
	prober := w.prober
	w.mu.Unlock()
	if prober != nil {
		ask := map[string]bool{}
		for _, p := range res.Peers {
			for _, pr := range progs {
				if pr.Peer == p.Name && pr.Endpoint.IsValid() {
					ask[p.Name] = true
				}
			}
		}
		prober.SetTargets(res.Probes, ask)
	}
	return errors.Join(hard...)
}

func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// refreshLastSeen records where the device last saw each peer, so a
// restart (a userspace device dies with the agent) can send to a NAT'd
// peer's mapping at once instead of waiting for the peer to re-initiate.
func (w *wanPath) refreshLastSeen() {
	t := w.transport()
	if t == nil {
		return
	}
	st, err := t.Status()
	if err != nil {
		return
	}
	w.mu.Lock()
	changed := false
	for _, p := range st.Peers {
		if p.Name != "" && p.Endpoint.IsValid() && !p.LastHandshake.IsZero() && w.lastSeen[p.Name] != p.Endpoint {
			w.lastSeen[p.Name] = p.Endpoint
			changed = true
		}
	}
	w.mu.Unlock()
	if changed {
		w.saveLastSeen()
	}
}

func (w *wanPath) saveLastSeen() {
	w.mu.Lock()
	b, err := json.Marshal(w.lastSeen)
	w.mu.Unlock()
	if err != nil {
		return
	}
	tmp := w.cache + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		_ = os.Rename(tmp, w.cache)
	}
}

func (w *wanPath) loadLastSeen() {
	b, err := os.ReadFile(w.cache)
	if err != nil {
		return
	}
	m := map[string]netip.AddrPort{}
	if json.Unmarshal(b, &m) != nil {
		w.log.Warn("cached WAN endpoints unreadable; peers behind NAT are reached once they initiate", "file", w.cache)
		return
	}
	w.lastSeen = m
}

// status is the WAN for /status.
func (w *wanPath) status() *WANStatus {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	st := &WANStatus{Setting: w.cfg.Setting, Off: w.off, PublicEndpoint: w.declared}
	t := w.t
	w.mu.Unlock()
	if t == nil {
		return st
	}
	st.Impl, st.ImplReason, st.PublicKey, st.Port = t.Impl(), t.ImplReason(), t.PublicKey(), t.Port()
	ts, err := t.Status()
	if err != nil {
		st.LastError = err.Error()
	} else {
		st.LastError = ts.LastError
	}
	w.mu.Lock()
	st.Errors = slices.Clone(w.errs)
	prober := w.prober
	w.mu.Unlock()
	var counts map[string]wan.PeerProbeCounts
	if prober != nil {
		counts = prober.Counts()
		st.SeenAs = prober.SeenBy()
	}
	now := time.Now()
	for _, p := range ts.Peers {
		ps := WANPeerStatus{WANDevicePeer: p, Probes: counts[p.Name]}
		if !p.LastHandshake.IsZero() {
			age := now.Sub(p.LastHandshake).Seconds()
			ps.HandshakeAgeSeconds = &age
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}

var descWANProbes = prometheus.NewDesc("strata_wan_probes_total",
	"Tunnel probes to a WAN peer by result (ok, failed); failures to a gateway move its relayed pairs to another.", []string{"peer", "result"}, nil)

// Describe and Collect export the tunnel prober's counts.
func (w *wanPath) Describe(ch chan<- *prometheus.Desc) { ch <- descWANProbes }

func (w *wanPath) Collect(ch chan<- prometheus.Metric) {
	w.mu.Lock()
	p := w.prober
	w.mu.Unlock()
	if p == nil {
		return
	}
	for peer, c := range p.Counts() {
		ch <- prometheus.MustNewConstMetric(descWANProbes, prometheus.CounterValue, float64(c.OK), peer, "ok")
		ch <- prometheus.MustNewConstMetric(descWANProbes, prometheus.CounterValue, float64(c.Failed), peer, "failed")
	}
}

// ensureWANRule adds "lookup <table>" at wanRulePriority: after the probe
// rule (marked packets, the tunnel's own outer packets among them, follow
// the underlay's default route), before main.
func ensureWANRule(table int) error {
	rules, err := nlretry.Dump(func() ([]netlink.Rule, error) { return netlink.RuleList(netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("wan: list rules: %w", err)
	}
	for _, r := range rules {
		if r.Priority == wanRulePriority {
			if r.Table == table && r.Mark == 0 && r.Src == nil && r.Dst == nil {
				return nil
			}
			if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("wan: replace rule %d: %w", wanRulePriority, err)
			}
		}
	}
	r := netlink.NewRule()
	r.Priority, r.Table = wanRulePriority, table
	if err := netlink.RuleAdd(r); err != nil {
		return fmt.Errorf("wan: rule %d lookup %d: %w", wanRulePriority, table, err)
	}
	return nil
}

// removeWANRouting undoes ensureWANRule and the WAN routes a previous run
// left (a kernel device outlives its agent): with the WAN off, nothing may
// route pods into a device nobody configures.
func removeWANRouting(table int) error {
	rules, err := nlretry.Dump(func() ([]netlink.Rule, error) { return netlink.RuleList(netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("wan: list rules: %w", err)
	}
	for _, r := range rules {
		if r.Priority == wanRulePriority && r.Table == table {
			if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("wan: remove rule %d: %w", wanRulePriority, err)
			}
		}
	}
	routes, err := nlretry.Dump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: table, Protocol: rtproto.WAN}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return fmt.Errorf("wan: list routes of table %d: %w", table, err)
	}
	for _, r := range routes {
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("wan: remove route %s: %w", r.Dst, err)
		}
	}
	return nil
}

// wanPodMTU is the pod MTU when the WAN may carry pod traffic: pods get no
// more than the WAN device's MTU, since any pair may fail over to it.
func wanPodMTU(setting string, underlayMTU int) int {
	mtu := underlayMTU - vxlan.Overhead
	if setting != WANOff {
		mtu = min(mtu, wan.DefaultMTU)
	}
	return mtu
}
