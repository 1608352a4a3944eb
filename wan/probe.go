package wan

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/strata-net/strata/api"
)

// Tunnel prober defaults. A probe goes from this node's probe address to a
// peer's, through the WAN device (the socket is bound to it), so it tests
// the tunnel whatever the kernel routes say: a standby peer is probed too,
// and a failover knows beforehand whether the WAN works.
const (
	DefaultProbePort    = 7948
	DefaultProbePeriod  = 100 * time.Millisecond
	DefaultProbeTimeout = 250 * time.Millisecond // an internet RTT with margin
	// DefaultMaxProbeRate caps probes per second: priority targets are
	// always probed; the others share what is left, in rotation.
	DefaultMaxProbeRate = 1000
	// DefaultReflectEvery is how often the node asks its reachable peers
	// which outer address they see it at.
	DefaultReflectEvery = 10 * time.Second
)

// ProberConfig configures the tunnel prober and reflector.
type ProberConfig struct {
	// Device is the WAN device the socket is bound to (default DeviceName).
	Device string
	// Source is this node's probe address; it must be inside the prefixes
	// peers accept from this node. Required.
	Source netip.Addr
	// Port on every node's probe address (default DefaultProbePort).
	Port         uint16
	Period       time.Duration // default DefaultProbePeriod
	Timeout      time.Duration // default DefaultProbeTimeout
	MaxRate      int           // default DefaultMaxProbeRate
	ReflectEvery time.Duration // default DefaultReflectEvery
	// SeenAt is the reflector: the outer address the device last saw for
	// the peer owning an inner address (Transport.EndpointOf). Nil: this
	// node answers no endpoint questions.
	SeenAt func(inner netip.Addr) (netip.AddrPort, bool)
	// OnResult gets every probe outcome; it must not block long.
	OnResult func(peer string, ok bool, at time.Time)
}

// Prober probes WAN peers through the tunnel, answers their probes, and
// learns this node's outer address from the peers that can see it.
type Prober struct {
	cfg  ProberConfig
	conn *net.UDPConn
	stop chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	targets  []ProbeTarget
	reflect  map[string]netip.Addr // peers asked for this node's outer address
	cursor   int
	seq      uint64
	pending  map[uint64]pendingProbe
	seenBy   map[string]netip.AddrPort // peer → this node's outer address as it sees it
	perPeer  map[string]*PeerProbeCounts
	rejected atomic.Uint64
}

type pendingProbe struct {
	peer  string
	addr  netip.AddrPort
	nonce uint64
	sent  time.Time
	kind  byte
}

// PeerProbeCounts are one peer's probe outcomes since start (the agent
// API's type).
type PeerProbeCounts = api.WANProbeCounts

// Wire format: magic, kind, sequence, nonce (as the native probes, with a
// magic of its own). An endpoint answer carries the address after the
// header; its question is padded to the answer's size, so the reflector
// never sends more than it received (no amplifier, and only members reach
// it: the socket is bound to the tunnel).
const (
	probeMagic     = "STW1"
	probeHeaderLen = 4 + 1 + 8 + 8
	endpointLen    = probeHeaderLen + 1 + 16 + 2
	kindProbe      = 0
	kindProbeReply = 1
	kindAsk        = 2
	kindAnswer     = 3
)

// StartProber opens the probe socket in the calling thread's network
// namespace, bound to the WAN device, and starts probing (no targets yet).
func StartProber(cfg ProberConfig) (*Prober, error) {
	if cfg.Device == "" {
		cfg.Device = DeviceName
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultProbePort
	}
	if cfg.Period == 0 {
		cfg.Period = DefaultProbePeriod
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultProbeTimeout
	}
	if cfg.MaxRate == 0 {
		cfg.MaxRate = DefaultMaxProbeRate
	}
	if cfg.ReflectEvery == 0 {
		cfg.ReflectEvery = DefaultReflectEvery
	}
	if cfg.OnResult == nil {
		cfg.OnResult = func(string, bool, time.Time) {}
	}
	switch {
	case !cfg.Source.IsValid():
		return nil, errors.New("wan prober: source is required: this node's probe address, inside the prefixes its peers accept")
	case cfg.Period < 10*time.Millisecond || cfg.Period > 10*time.Second:
		return nil, fmt.Errorf("wan prober: period=%s: want 10ms..10s (default %s)", cfg.Period, DefaultProbePeriod)
	case cfg.Timeout < 10*time.Millisecond || cfg.Timeout > 5*time.Second:
		return nil, fmt.Errorf("wan prober: timeout=%s: want 10ms..5s (default %s)", cfg.Timeout, DefaultProbeTimeout)
	case cfg.MaxRate < 1:
		return nil, fmt.Errorf("wan prober: maxRate=%d: want >= 1", cfg.MaxRate)
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.BindToDevice(int(fd), cfg.Device) })
		return errors.Join(err, serr)
	}}
	addr := netip.AddrPortFrom(cfg.Source.Unmap(), cfg.Port)
	c, err := lc.ListenPacket(context.Background(), "udp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("wan prober: listen on %s bound to %s (does the device exist, is the probe address on this node?): %w", addr, cfg.Device, err)
	}
	p := &Prober{cfg: cfg, conn: c.(*net.UDPConn), stop: make(chan struct{}), pending: map[uint64]pendingProbe{},
		seenBy: map[string]netip.AddrPort{}, perPeer: map[string]*PeerProbeCounts{}, reflect: map[string]netip.Addr{}}
	p.wg.Add(2)
	go p.readLoop()
	go p.probeLoop()
	return p, nil
}

// SetTargets replaces the peers to probe, and the peers to ask for this
// node's outer address (those with a public endpoint: they saw this node
// come from the internet, not from a relay).
func (p *Prober) SetTargets(targets []ProbeTarget, askEndpoint map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.targets = slices.Clone(targets)
	p.reflect = map[string]netip.Addr{}
	live := map[string]bool{}
	for _, t := range targets {
		live[t.Peer] = true
		if askEndpoint[t.Peer] {
			p.reflect[t.Peer] = t.Addr
		}
	}
	for peer := range p.seenBy {
		if !live[peer] {
			delete(p.seenBy, peer)
		}
	}
}

// SeenBy is this node's outer address as each asked peer last reported
// it. Equal answers from several peers mean the NAT maps one address for
// all destinations; that still does not prove that a stranger can send to
// it (see docs/wan.md), so it is shown, not published.
func (p *Prober) SeenBy() map[string]netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]netip.AddrPort, len(p.seenBy))
	for k, v := range p.seenBy {
		out[k] = v
	}
	return out
}

// Counts are the probe outcomes per peer since start.
func (p *Prober) Counts() map[string]PeerProbeCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]PeerProbeCounts, len(p.perPeer))
	for k, v := range p.perPeer {
		out[k] = *v
	}
	return out
}

// Rejected counts replies that matched no probe sent to their source with
// their nonce.
func (p *Prober) Rejected() uint64 { return p.rejected.Load() }

// Close stops probing and answering.
func (p *Prober) Close() error {
	select {
	case <-p.stop:
		return nil
	default:
	}
	close(p.stop)
	err := p.conn.Close()
	p.wg.Wait()
	return err
}

func (p *Prober) readLoop() {
	defer p.wg.Done()
	buf := make([]byte, 128)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-p.stop:
				return
			default:
				continue
			}
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if n < probeHeaderLen || string(buf[:4]) != probeMagic {
			continue
		}
		switch buf[4] {
		case kindProbe:
			if n == probeHeaderLen {
				buf[4] = kindProbeReply
				_, _ = p.conn.WriteToUDPAddrPort(buf[:probeHeaderLen], from)
			}
		case kindAsk:
			if n == endpointLen && p.cfg.SeenAt != nil {
				p.answer(buf[:endpointLen], from)
			}
		case kindProbeReply:
			if n == probeHeaderLen {
				if peer, ok := p.take(buf[:n], from, kindProbe); ok {
					p.result(peer, true, time.Now())
				}
			}
		case kindAnswer:
			if n == endpointLen {
				if peer, ok := p.take(buf[:n], from, kindAsk); ok {
					if ep, ok := decodeAddrPort(buf[probeHeaderLen:endpointLen]); ok {
						p.mu.Lock()
						p.seenBy[peer] = ep
						p.mu.Unlock()
					}
				}
			}
		}
	}
}

// answer tells a member which outer address the device sees it at. The
// answer is the question's size, written over it.
func (p *Prober) answer(b []byte, from netip.AddrPort) {
	ep, ok := p.cfg.SeenAt(from.Addr())
	if !ok {
		return
	}
	b[4] = kindAnswer
	encodeAddrPort(b[probeHeaderLen:], ep)
	_, _ = p.conn.WriteToUDPAddrPort(b, from)
}

func encodeAddrPort(b []byte, ep netip.AddrPort) {
	a := ep.Addr().Unmap()
	b[0] = 4
	if a.Is6() {
		b[0] = 6
	}
	s := a.As16()
	copy(b[1:17], s[:])
	binary.BigEndian.PutUint16(b[17:19], ep.Port())
}

func decodeAddrPort(b []byte) (netip.AddrPort, bool) {
	if len(b) < 19 || (b[0] != 4 && b[0] != 6) {
		return netip.AddrPort{}, false
	}
	var s [16]byte
	copy(s[:], b[1:17])
	a := netip.AddrFrom16(s)
	if b[0] == 4 {
		if !a.Is4In6() {
			return netip.AddrPort{}, false
		}
		a = a.Unmap()
	}
	port := binary.BigEndian.Uint16(b[17:19])
	if port == 0 || a.IsUnspecified() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a, port), true
}

// take matches a reply with its pending request: same sequence, nonce and
// kind, from the address asked. A forgery is counted and leaves the
// request pending.
func (p *Prober) take(b []byte, from netip.AddrPort, kind byte) (string, bool) {
	seq := binary.BigEndian.Uint64(b[5:13])
	nonce := binary.BigEndian.Uint64(b[13:21])
	p.mu.Lock()
	defer p.mu.Unlock()
	pd, ok := p.pending[seq]
	if !ok {
		return "", false
	}
	if pd.nonce != nonce || pd.addr != from || pd.kind != kind {
		p.rejected.Add(1)
		return "", false
	}
	delete(p.pending, seq)
	return pd.peer, true
}

func (p *Prober) result(peer string, ok bool, at time.Time) {
	p.mu.Lock()
	c := p.perPeer[peer]
	if c == nil {
		c = &PeerProbeCounts{}
		p.perPeer[peer] = c
	}
	if ok {
		c.OK++
	} else {
		c.Failed++
	}
	p.mu.Unlock()
	p.cfg.OnResult(peer, ok, at)
}

func (p *Prober) probeLoop() {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.Period)
	defer t.Stop()
	var lastAsk time.Time
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.expire(now)
			for _, tg := range p.next() {
				p.send(tg.Peer, tg.Addr, kindProbe, now)
			}
			if now.Sub(lastAsk) >= p.cfg.ReflectEvery {
				lastAsk = now
				p.mu.Lock()
				ask := make(map[string]netip.Addr, len(p.reflect))
				for k, v := range p.reflect {
					ask[k] = v
				}
				p.mu.Unlock()
				for peer, a := range ask {
					p.send(peer, a, kindAsk, now)
				}
			}
		}
	}
}

// next is this period's targets: every priority target, then the others
// in rotation up to the rate cap.
func (p *Prober) next() []ProbeTarget {
	p.mu.Lock()
	defer p.mu.Unlock()
	budget := max(1, int(float64(p.cfg.MaxRate)*p.cfg.Period.Seconds()))
	var out, rest []ProbeTarget
	for _, t := range p.targets {
		if t.Priority {
			out = append(out, t)
		} else {
			rest = append(rest, t)
		}
	}
	n := min(len(rest), max(0, budget-len(out)))
	for i := range n {
		out = append(out, rest[(p.cursor+i)%len(rest)])
	}
	if len(rest) > 0 {
		p.cursor = (p.cursor + n) % len(rest)
	}
	return out
}

func (p *Prober) send(peer string, to netip.Addr, kind byte, now time.Time) {
	size := probeHeaderLen
	if kind == kindAsk {
		size = endpointLen
	}
	b := make([]byte, size)
	_, _ = rand.Read(b[13:21])
	addr := netip.AddrPortFrom(to.Unmap(), p.cfg.Port)
	p.mu.Lock()
	p.seq++
	seq := p.seq
	p.pending[seq] = pendingProbe{peer: peer, addr: addr, nonce: binary.BigEndian.Uint64(b[13:21]), sent: now, kind: kind}
	p.mu.Unlock()
	copy(b, probeMagic)
	b[4] = kind
	binary.BigEndian.PutUint64(b[5:13], seq)
	// A send error (no session yet) is a failed probe once it times out.
	_, _ = p.conn.WriteToUDPAddrPort(b, addr)
}

func (p *Prober) expire(now time.Time) {
	var failed []string
	p.mu.Lock()
	for seq, pd := range p.pending {
		if now.Sub(pd.sent) >= p.cfg.Timeout {
			if pd.kind == kindProbe {
				failed = append(failed, pd.peer)
			}
			delete(p.pending, seq)
		}
	}
	p.mu.Unlock()
	slices.Sort(failed)
	for _, peer := range failed {
		p.result(peer, false, now)
	}
}
