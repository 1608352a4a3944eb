// Package probe measures what topology decides from. It runs hashicorp/
// memberlist gossip between agents over the underlay (encrypted; membership,
// node-IP liveness and node facts) and native pod-path probes: small UDP
// echoes from this node's pod-side probe address to peers' probe addresses,
// forced onto the native path so a recovered line is seen even while the
// pair's traffic uses VXLAN. It reports facts and probe results through
// callbacks and decides nothing.
package probe

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/topology"
)

// Defaults and bounds. See docs/topology.md for the detection times they give.
const (
	DefaultProbePeriod   = 100 * time.Millisecond
	DefaultProbeTimeout  = 200 * time.Millisecond
	DefaultProbePort     = 7947
	DefaultGossipPort    = 7946
	DefaultMaxProbeRate  = 1000 // probes per second per node, all pools together
	DefaultGossipProbe   = 200 * time.Millisecond
	DefaultGossipTimeout = 100 * time.Millisecond
	DefaultSuspicionMult = 3
)

// Config configures one node's prober.
type Config struct {
	// Facts are this node's facts; Name and Pool are required, ProbeIP is
	// needed to probe (and to be probed).
	Facts topology.NodeFacts
	// BindAddr is the underlay address gossip listens on (required).
	BindAddr string
	// GossipPort defaults to 7946; 0 picks DefaultGossipPort, -1 a free port.
	GossipPort int
	// Keyring encrypts gossip (see ParseKeyring/LoadKeyring). Required
	// unless Insecure is set.
	Keyring *memberlist.Keyring
	// Insecure allows unencrypted gossip. Only for tests and labs.
	Insecure bool
	// NS, when set, is the network namespace every socket lives in (the
	// lab runs one agent per namespace); nil means the current one.
	NS *nsutil.NS

	// ProbePort is the UDP port of native probes (default 7947) on every
	// node's probe address.
	ProbePort int
	// Period between two probes towards the same remote pool (default
	// 100 ms, bounds 20 ms..10 s).
	Period time.Duration
	// Timeout of one probe (default 200 ms, bounds 10 ms..5 s).
	Timeout time.Duration
	// MaxProbeRate caps probes per second for all pools together (default
	// 1000); with more pools than MaxProbeRate*Period, pools take turns.
	MaxProbeRate int
	// Mark is set as SO_MARK on probe packets so a policy rule can send
	// them through the native routing table even while the pair's traffic
	// uses the VXLAN device. 0 sets no mark.
	Mark uint32
	// Device, when set, binds the probe socket to the underlay interface
	// (SO_BINDTODEVICE), so probes can never leave through the overlay.
	Device string

	// Gossip tuning (defaults are LAN/leased-line scale).
	GossipProbeInterval time.Duration // default 200 ms, bounds 50 ms..10 s
	GossipProbeTimeout  time.Duration // default 100 ms, < GossipProbeInterval
	SuspicionMult       int           // default 3, bounds 1..10

	// OnProbe receives every probe result: native pod-path results and
	// node-IP liveness (memberlist join/leave). It must not block long.
	OnProbe func(topology.ProbeResult)
	// OnFacts receives the facts a peer publishes over gossip.
	OnFacts func(topology.NodeFacts)
	Logger  *slog.Logger
}

func (c *Config) setDefaults() {
	if c.GossipPort == 0 {
		c.GossipPort = DefaultGossipPort
	}
	if c.ProbePort == 0 {
		c.ProbePort = DefaultProbePort
	}
	if c.Period == 0 {
		c.Period = DefaultProbePeriod
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultProbeTimeout
	}
	if c.MaxProbeRate == 0 {
		c.MaxProbeRate = DefaultMaxProbeRate
	}
	if c.GossipProbeInterval == 0 {
		c.GossipProbeInterval = DefaultGossipProbe
	}
	if c.GossipProbeTimeout == 0 {
		c.GossipProbeTimeout = DefaultGossipTimeout
	}
	if c.SuspicionMult == 0 {
		c.SuspicionMult = DefaultSuspicionMult
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.OnProbe == nil {
		c.OnProbe = func(topology.ProbeResult) {}
	}
	if c.OnFacts == nil {
		c.OnFacts = func(topology.NodeFacts) {}
	}
}

func (c *Config) validate() error {
	between := func(name string, v, lo, hi time.Duration) error {
		if v < lo || v > hi {
			return fmt.Errorf("probe config: %s=%s: want %s..%s", name, v, lo, hi)
		}
		return nil
	}
	switch {
	case c.Facts.Name == "" || c.Facts.Pool == "":
		return errors.New("probe config: Facts.Name and Facts.Pool are required: the prober reports per node and per pool")
	case c.BindAddr == "":
		return errors.New("probe config: BindAddr is required: the node's underlay IP that gossip listens on")
	case c.Keyring == nil && !c.Insecure:
		return errors.New("probe config: refusing unencrypted gossip: give a Keyring (from a Secret or file, see LoadKeyring) or set Insecure explicitly")
	case c.Keyring != nil && c.Insecure:
		return errors.New("probe config: both Keyring and Insecure set: choose one")
	case c.ProbePort < 1 || c.ProbePort > 65535:
		return fmt.Errorf("probe config: ProbePort=%d: want 1..65535", c.ProbePort)
	case c.MaxProbeRate < 1:
		return fmt.Errorf("probe config: MaxProbeRate=%d: want >= 1", c.MaxProbeRate)
	case c.SuspicionMult < 1 || c.SuspicionMult > 10:
		return fmt.Errorf("probe config: SuspicionMult=%d: want 1..10", c.SuspicionMult)
	case c.GossipProbeTimeout >= c.GossipProbeInterval:
		return fmt.Errorf("probe config: GossipProbeTimeout=%s must be below GossipProbeInterval=%s", c.GossipProbeTimeout, c.GossipProbeInterval)
	}
	return errors.Join(
		between("Period", c.Period, 20*time.Millisecond, 10*time.Second),
		between("Timeout", c.Timeout, 10*time.Millisecond, 5*time.Second),
		between("GossipProbeInterval", c.GossipProbeInterval, 50*time.Millisecond, 10*time.Second),
		between("GossipProbeTimeout", c.GossipProbeTimeout, 10*time.Millisecond, 5*time.Second),
	)
}

// ProbeRate is the native probes per second one node sends with cfg in a
// cluster of pools pools. It does not depend on the number of nodes: each
// tick probes one member per pool, rotating, capped by MaxProbeRate.
func ProbeRate(cfg Config, pools int) float64 {
	cfg.setDefaults()
	r := float64(pools) / cfg.Period.Seconds()
	return math.Min(r, float64(cfg.MaxProbeRate))
}

// Prober is one node's gossip member and native prober.
type Prober struct {
	cfg  Config
	ml   *memberlist.Memberlist
	conn *net.UDPConn
	meta []byte
	// spill: this node's WAN facts when the metadata had no room for them;
	// they go with its prefix set answers.
	spill *wanFacts

	mu       sync.Mutex
	facts    topology.NodeFacts
	peers    map[string]*peerState // alive members with readable facts
	byPool   map[string][]string   // sorted names with a probe IP, rebuilt when dirty
	dirty    bool
	cursor   map[string]int
	poolTurn int
	seq      uint64
	pending  map[uint64]pending
	asked    map[string]bool // peers whose prefix request is queued for an answer

	deliverMu sync.Mutex    // keeps OnFacts calls in the order of the state they report
	requests  chan string   // peers asking for this node's prefix set
	kick      chan struct{} // a peer's prefix set is wanted now
	pulls     chan struct{} // bounds concurrent prefix requests

	rejectedFacts   atomic.Uint64
	rejectedReplies atomic.Uint64

	stop chan struct{}
	wg   sync.WaitGroup
}

// peerState is what the prober holds of one alive member.
type peerState struct {
	facts   topology.NodeFacts // the summary: no PodPrefixes
	want    prefixSetRef       // the prefix set the summary names
	have    []netip.Prefix     // the last prefix set received
	haveWAN *wanFacts          // and the WAN facts it carried (summary too big for them)
	haveRef prefixSetRef       // its digest
	gen     uint64             // bumped with every summary
	asked   time.Time          // last prefix request sent
}

func (ps *peerState) complete() bool { return ps.want == ps.haveRef }

type pending struct {
	to    string
	addr  netip.AddrPort // where the probe went: the only source a reply is taken from
	nonce uint64
	sent  time.Time
}

// Stats counts what the prober refused.
type Stats struct {
	// RejectedFacts: gossip metadata or messages that were unreadable,
	// oversized, misnamed, or a prefix set that does not match its digest.
	RejectedFacts uint64
	// RejectedReplies: native probe replies from an address other than the
	// one probed, or with a wrong nonce (forged or stray).
	RejectedReplies uint64
}

// Stats returns the prober's counters.
func (p *Prober) Stats() Stats {
	return Stats{RejectedFacts: p.rejectedFacts.Load(), RejectedReplies: p.rejectedReplies.Load()}
}

// Start validates cfg, opens the sockets (in cfg.NS when set) and starts
// gossip and probing. Call Join to meet peers and Close to stop.
func Start(cfg Config) (*Prober, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := newProber(cfg)
	meta, spill, err := encodeMeta(cfg.Facts)
	if err != nil {
		return nil, err
	}
	p.meta, p.spill = meta, spill
	inNS := func(fn func() error) error {
		if cfg.NS == nil {
			return fn()
		}
		return cfg.NS.Do(fn)
	}
	if err := inNS(func() error { return p.listenProbes() }); err != nil {
		return nil, err
	}
	var mcfg *memberlist.Config
	if err := inNS(func() error {
		mcfg, err = p.memberlistConfig()
		return err
	}); err != nil {
		_ = p.conn.Close()
		return nil, err
	}
	p.ml, err = memberlist.Create(mcfg)
	if err != nil {
		_ = p.conn.Close()
		return nil, fmt.Errorf("start gossip on %s:%d: %w", cfg.BindAddr, cfg.GossipPort, err)
	}
	p.wg.Add(4)
	go p.readLoop()
	go p.probeLoop()
	go p.pullLoop()
	go p.answerLoop()
	return p, nil
}

func newProber(cfg Config) *Prober {
	return &Prober{cfg: cfg, facts: cfg.Facts, peers: map[string]*peerState{}, cursor: map[string]int{},
		pending: map[uint64]pending{}, asked: map[string]bool{}, requests: make(chan string, 256),
		kick: make(chan struct{}, 1), pulls: make(chan struct{}, 4), stop: make(chan struct{})}
}

func (p *Prober) memberlistConfig() (*memberlist.Config, error) {
	c := memberlist.DefaultLANConfig()
	c.Name = p.cfg.Facts.Name
	c.BindAddr = p.cfg.BindAddr
	port := p.cfg.GossipPort
	if port < 0 {
		port = 0
	}
	c.ProbeInterval = p.cfg.GossipProbeInterval
	c.ProbeTimeout = p.cfg.GossipProbeTimeout
	c.SuspicionMult = p.cfg.SuspicionMult
	c.GossipInterval = 50 * time.Millisecond
	c.PushPullInterval = 15 * time.Second
	c.TCPTimeout = 2 * time.Second
	c.GossipToTheDeadTime = 15 * time.Second
	c.Keyring = p.cfg.Keyring
	c.Logger = log.New(slogWriter{p.cfg.Logger}, "", 0)
	c.Delegate = delegate{p}
	c.Events = events{p}
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{p.cfg.BindAddr}, BindPort: port, Logger: c.Logger})
	if err != nil {
		return nil, fmt.Errorf("gossip listen on %s:%d: %w", p.cfg.BindAddr, port, err)
	}
	c.BindPort = nt.GetAutoBindPort()
	c.AdvertisePort = c.BindPort
	c.Transport = &nsTransport{NetTransport: nt, ns: p.cfg.NS}
	return c, nil
}

// nsTransport makes memberlist's outgoing TCP connections inside the
// prober's namespace; the listeners were opened there already.
type nsTransport struct {
	*memberlist.NetTransport
	ns *nsutil.NS
}

func (t *nsTransport) dial(fn func() (net.Conn, error)) (net.Conn, error) {
	if t.ns == nil {
		return fn()
	}
	var c net.Conn
	err := t.ns.Do(func() (err error) { c, err = fn(); return err })
	return c, err
}

func (t *nsTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.dial(func() (net.Conn, error) { return t.NetTransport.DialTimeout(addr, timeout) })
}

func (t *nsTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.dial(func() (net.Conn, error) { return t.NetTransport.DialAddressTimeout(a, timeout) })
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	w.l.Debug("memberlist", "msg", string(b))
	return len(b), nil
}

func (p *Prober) listenProbes() error {
	if !p.cfg.Facts.ProbeIP.IsValid() {
		return fmt.Errorf("node %s has no probe address (%s): reserve one address of the node's pod space", p.cfg.Facts.Name, topology.AnnotationProbeIP)
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if p.cfg.Mark != 0 {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, int(p.cfg.Mark))
			}
			if serr == nil && p.cfg.Device != "" {
				serr = syscall.BindToDevice(int(fd), p.cfg.Device)
			}
		})
		return errors.Join(err, serr)
	}}
	addr := netip.AddrPortFrom(p.cfg.Facts.ProbeIP, uint16(p.cfg.ProbePort))
	c, err := lc.ListenPacket(context.Background(), "udp", addr.String())
	if err != nil {
		return fmt.Errorf("listen for native probes on %s (is the probe address configured on this node?): %w", addr, err)
	}
	p.conn = c.(*net.UDPConn)
	return nil
}

// Join meets the given gossip peers ("ip:port"). It returns how many it
// reached; one is enough, gossip finds the rest.
func (p *Prober) Join(addrs []string) (int, error) {
	n, err := p.ml.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("join gossip peers %v: %w", addrs, err)
	}
	return n, nil
}

// GossipAddr is this member's gossip address ("ip:port").
func (p *Prober) GossipAddr() string {
	n := p.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// NumMembers is the number of alive gossip members, this node included.
func (p *Prober) NumMembers() int { return p.ml.NumMembers() }

// SetFacts publishes new facts for this node over gossip.
func (p *Prober) SetFacts(f topology.NodeFacts) error {
	meta, spill, err := encodeMeta(f)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.facts, p.meta, p.spill = f, meta, spill
	p.mu.Unlock()
	return p.ml.UpdateNode(5 * time.Second)
}

// Close leaves the gossip group and stops everything.
func (p *Prober) Close() error {
	select {
	case <-p.stop:
		return nil
	default:
	}
	close(p.stop)
	err := p.ml.Leave(time.Second)
	err = errors.Join(err, p.ml.Shutdown(), p.conn.Close())
	p.wg.Wait()
	return err
}

// Wire format of a probe: magic, kind (request/reply), sequence number,
// nonce. The replier echoes the request. The nonce is random per probe and
// a reply counts only if it comes from the address probed with the nonce
// sent, so no host that did not receive the request can make a dead path
// look healthy.
const (
	probeMagic = "STP2"
	probeLen   = 4 + 1 + 8 + 8
	kindReq    = 0
	kindReply  = 1
)

func (p *Prober) readLoop() {
	defer p.wg.Done()
	buf := make([]byte, 64)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			select {
			case <-p.stop:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n != probeLen || string(buf[:4]) != probeMagic {
			continue
		}
		switch buf[4] {
		case kindReq:
			buf[4] = kindReply
			_, _ = p.conn.WriteToUDPAddrPort(buf[:probeLen], from)
		case kindReply:
			if to, ok := p.takeReply(buf[:probeLen], from); ok {
				p.cfg.OnProbe(topology.ProbeResult{From: p.cfg.Facts.Name, To: to, Kind: topology.ProbeNative, OK: true, At: time.Now()})
			}
		}
	}
}

// takeReply matches a reply with its pending probe: same sequence, same
// nonce, from the address probed. Anything else is counted and dropped,
// and leaves the probe pending (a forgery must not cancel the real reply).
func (p *Prober) takeReply(b []byte, from netip.AddrPort) (string, bool) {
	seq := binary.BigEndian.Uint64(b[5:13])
	nonce := binary.BigEndian.Uint64(b[13:21])
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	p.mu.Lock()
	defer p.mu.Unlock()
	pd, ok := p.pending[seq]
	if !ok {
		return "", false // late (already expired) or unknown: not evidence either way
	}
	if pd.nonce != nonce || pd.addr != from {
		p.rejectedReplies.Add(1)
		return "", false
	}
	delete(p.pending, seq)
	return pd.to, true
}

func (p *Prober) probeLoop() {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.Period)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.expire(now)
			for _, tg := range p.nextTargets() {
				p.send(tg, now)
			}
		}
	}
}

type target struct {
	name string
	addr netip.AddrPort
}

// nextTargets picks, for each pool whose turn it is, the next member of
// that pool in rotation.
func (p *Prober) nextTargets() []target {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dirty || p.byPool == nil {
		p.byPool = map[string][]string{}
		for name, ps := range p.peers {
			if f := ps.facts; f.ProbeIP.IsValid() && f.Pool != "" {
				p.byPool[f.Pool] = append(p.byPool[f.Pool], name)
			}
		}
		for _, names := range p.byPool {
			slices.Sort(names)
		}
		p.dirty = false
	}
	pools := make([]string, 0, len(p.byPool))
	for pool := range p.byPool {
		pools = append(pools, pool)
	}
	slices.Sort(pools)
	perTick := max(1, int(float64(p.cfg.MaxProbeRate)*p.cfg.Period.Seconds()))
	if perTick > len(pools) {
		perTick = len(pools)
	}
	out := make([]target, 0, perTick)
	for i := range perTick {
		pool := pools[(p.poolTurn+i)%len(pools)]
		names := p.byPool[pool]
		c := p.cursor[pool] % len(names)
		p.cursor[pool] = c + 1
		f := p.peers[names[c]].facts
		out = append(out, target{name: names[c], addr: netip.AddrPortFrom(f.ProbeIP.Unmap(), uint16(p.cfg.ProbePort))})
	}
	if len(pools) > 0 {
		p.poolTurn = (p.poolTurn + perTick) % len(pools)
	}
	return out
}

func (p *Prober) send(tg target, now time.Time) {
	var b [probeLen]byte
	_, _ = rand.Read(b[13:]) // crypto/rand never fails (Go 1.24+)
	p.mu.Lock()
	p.seq++
	seq := p.seq
	p.pending[seq] = pending{to: tg.name, addr: tg.addr, nonce: binary.BigEndian.Uint64(b[13:]), sent: now}
	p.mu.Unlock()
	copy(b[:], probeMagic)
	b[4] = kindReq
	binary.BigEndian.PutUint64(b[5:], seq)
	// A send error (no route while the line is down) is a failed probe;
	// expire reports it when the timeout passes.
	_, _ = p.conn.WriteToUDPAddrPort(b[:], tg.addr)
}

func (p *Prober) expire(now time.Time) {
	var failed []string
	p.mu.Lock()
	for seq, pd := range p.pending {
		if now.Sub(pd.sent) >= p.cfg.Timeout {
			failed = append(failed, pd.to)
			delete(p.pending, seq)
		}
	}
	p.mu.Unlock()
	for _, to := range failed {
		p.cfg.OnProbe(topology.ProbeResult{From: p.cfg.Facts.Name, To: to, Kind: topology.ProbeNative, OK: false, At: now})
	}
}

// delegate publishes this node's facts as memberlist metadata and carries
// prefix set requests and answers.
type delegate struct{ p *Prober }

func (d delegate) NodeMeta(limit int) []byte {
	d.p.mu.Lock()
	defer d.p.mu.Unlock()
	if len(d.p.meta) > limit {
		return nil
	}
	return slices.Clone(d.p.meta)
}
func (d delegate) NotifyMsg(b []byte)                       { d.p.handleMsg(b) }
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

// events turns membership changes into facts and node-IP liveness.
type events struct{ p *Prober }

func (e events) NotifyJoin(n *memberlist.Node)   { e.p.member(n.Name, n.Meta, true) }
func (e events) NotifyUpdate(n *memberlist.Node) { e.p.member(n.Name, n.Meta, true) }
func (e events) NotifyLeave(n *memberlist.Node)  { e.p.member(n.Name, n.Meta, false) }

// member records a member's summary (or its leaving). Unreadable facts
// are counted and ignored: they stop nothing else, and the member's last
// good facts, if any, stay.
func (p *Prober) member(name string, meta []byte, alive bool) {
	if name == p.cfg.Facts.Name {
		return
	}
	now := time.Now()
	if !alive {
		p.mu.Lock()
		delete(p.peers, name)
		p.dirty = true
		p.mu.Unlock()
		p.cfg.OnProbe(topology.ProbeResult{From: p.cfg.Facts.Name, To: name, Kind: topology.ProbeNodeIP, OK: false, At: now})
		return
	}
	f, ref, inline, err := decodeMeta(name, meta)
	if err != nil {
		p.rejectedFacts.Add(1)
		p.cfg.Logger.Warn("ignoring gossip member with unreadable facts", "node", name, "err", err)
		return
	}
	p.mu.Lock()
	ps := p.peers[name]
	if ps == nil {
		ps = &peerState{}
		p.peers[name] = ps
	}
	ps.facts, ps.want = f, ref
	ps.gen++
	if inline != nil || (ref.Count == 0 && !ref.WAN) {
		ps.have, ps.haveRef, ps.haveWAN = inline, ref, nil
	}
	gen, complete := ps.gen, ps.complete()
	p.dirty = true
	p.mu.Unlock()
	if complete {
		p.deliver(name, gen)
	} else {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	p.cfg.OnProbe(topology.ProbeResult{From: p.cfg.Facts.Name, To: name, Kind: topology.ProbeNodeIP, OK: true, At: now})
}

// deliver reports a peer's complete facts if its state is still the one
// numbered gen and its prefix set matches its summary.
func (p *Prober) deliver(name string, gen uint64) {
	p.deliverMu.Lock()
	defer p.deliverMu.Unlock()
	p.mu.Lock()
	ps := p.peers[name]
	if ps == nil || ps.gen != gen || !ps.complete() {
		p.mu.Unlock()
		return
	}
	f := ps.facts
	f.PodPrefixes = slices.Clone(ps.have)
	if ps.want.WAN && ps.haveWAN != nil {
		ps.haveWAN.apply(&f)
	}
	p.mu.Unlock()
	p.cfg.OnFacts(f)
}

// handleMsg takes one user message from memberlist (already decrypted and
// authenticated by the keyring). It never blocks: answers are queued.
func (p *Prober) handleMsg(b []byte) {
	req, set, ref, err := decodeMsg(b)
	if err != nil {
		p.rejectedFacts.Add(1)
		p.cfg.Logger.Debug("ignoring gossip message", "err", err)
		return
	}
	if req != nil {
		p.mu.Lock()
		queued := p.asked[req.From]
		if !queued && len(p.asked) < cap(p.requests) {
			p.asked[req.From] = true
			p.requests <- req.From // cannot block: at most cap entries are queued
		}
		p.mu.Unlock()
		return
	}
	// A prefix set is taken only when it is the one the owner's summary
	// names: whoever sends it, it cannot be another.
	p.mu.Lock()
	ps := p.peers[set.Node]
	if ps == nil || ref != ps.want {
		p.mu.Unlock()
		if ps != nil {
			p.rejectedFacts.Add(1)
			p.cfg.Logger.Debug("ignoring a prefix set its owner's summary does not name (stale or forged)", "node", set.Node)
		}
		return
	}
	ps.have, ps.haveRef, ps.haveWAN = set.Prefixes, ref, set.WAN
	gen := ps.gen
	p.mu.Unlock()
	p.deliver(set.Node, gen)
}

// prefixRetry is how long a prefix request may go unanswered before it is
// sent again.
const prefixRetry = time.Second

// pullLoop asks each peer whose summary names a prefix set it does not
// hold for that set, at most once per prefixRetry and peer, and at most
// cap(p.pulls) at a time.
func (p *Prober) pullLoop() {
	defer p.wg.Done()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		case <-p.kick:
		}
		now := time.Now()
		var want []string
		p.mu.Lock()
		for name, ps := range p.peers {
			if !ps.complete() && now.Sub(ps.asked) >= prefixRetry {
				want = append(want, name)
			}
		}
		p.mu.Unlock()
		if len(want) == 0 {
			continue
		}
		nodes := p.members()
		for _, name := range want {
			n, ok := nodes[name]
			if !ok {
				continue
			}
			select {
			case p.pulls <- struct{}{}:
			default:
				continue // busy: the next round asks
			}
			p.mu.Lock()
			if ps := p.peers[name]; ps != nil {
				ps.asked = now
			}
			p.mu.Unlock()
			p.wg.Add(1)
			go func() {
				defer func() { <-p.pulls; p.wg.Done() }()
				if err := p.ml.SendReliable(n, encodeRequest(p.cfg.Facts.Name)); err != nil {
					p.cfg.Logger.Debug("prefix set request failed; retrying", "peer", name, "err", err)
				}
			}()
		}
	}
}

// answerLoop sends this node's prefix set to each peer that asked.
func (p *Prober) answerLoop() {
	defer p.wg.Done()
	for {
		var to string
		select {
		case <-p.stop:
			return
		case to = <-p.requests:
		}
		p.mu.Lock()
		delete(p.asked, to)
		msg := encodePrefixSet(p.facts.Name, p.facts.PodPrefixes, p.spill)
		p.mu.Unlock()
		n, ok := p.members()[to]
		if !ok {
			continue // not (or no longer) a member: no answer
		}
		if err := p.ml.SendReliable(n, msg); err != nil {
			p.cfg.Logger.Debug("prefix set answer failed; the peer asks again", "peer", to, "err", err)
		}
	}
}

func (p *Prober) members() map[string]*memberlist.Node {
	ms := p.ml.Members()
	out := make(map[string]*memberlist.Node, len(ms))
	for _, n := range ms {
		out[n.Name] = n
	}
	return out
}
