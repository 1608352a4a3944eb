package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/nsutil"
)

// streamChunk is how many paths go into one AddPathStream message.
const streamChunk = 2000

// Speaker is an embedded BGP speaker. No gobgp or protobuf type crosses its
// API. It is safe for concurrent use.
type Speaker struct {
	cfg Config
	log *slog.Logger

	srv     *server.BgpServer
	sockDir string
	conn    *grpc.ClientConn
	client  api.GobgpApiClient

	rib *rib
	// evMu serialises RIB changes with their publication, so subscribers
	// see the changes of gobgp's events and of re-judging in order.
	evMu sync.Mutex

	mu      sync.Mutex
	prot    Protected // the node's facts for the import policy
	bad     map[netip.Addr]badUpdates
	eor     map[netip.Addr]bool // End-of-RIB received in the current session
	peers   map[netip.Addr]PeerConfig
	since   map[netip.Addr]time.Time
	flaps   map[netip.Addr]uint32
	state   map[netip.Addr]SessionState
	subs    map[int]func([]Route)
	adv     map[netip.Prefix]struct{} // originated prefixes
	advMu   sync.Mutex                // serialises Advertise/Withdraw (bulk loads hold exports back)
	nextSub int
	md5Base md5Counters
	started bool
	stopped bool
	cancel  context.CancelFunc
}

// New builds a speaker; Start brings it up.
func New(cfg Config, logger *slog.Logger) (*Speaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bgp config: %w", err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Speaker{
		cfg:   cfg,
		log:   logger.With("component", "bgp"),
		rib:   newRIB(),
		peers: map[netip.Addr]PeerConfig{},
		since: map[netip.Addr]time.Time{},
		flaps: map[netip.Addr]uint32{},
		state: map[netip.Addr]SessionState{},
		subs:  map[int]func([]Route){},
		adv:   map[netip.Prefix]struct{}{},
		bad:   map[netip.Addr]badUpdates{},
		eor:   map[netip.Addr]bool{},
		prot:  Protected{PodCIDRs: slices.Clone(cfg.PodCIDRs)},
	}, nil
}

// Start runs the embedded server. It listens only when Config.ListenPort > 0.
func (s *Speaker) Start(ctx context.Context) (err error) {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("bgp: speaker already started")
	}
	s.started = true
	s.mu.Unlock()

	// The gRPC API is reached over a private unix socket only for
	// AddPathStream, the one batch entry point gobgp has.
	dir, err := os.MkdirTemp("", "strata-bgp-")
	if err != nil {
		return fmt.Errorf("bgp: make socket dir: %w", err)
	}
	s.sockDir = dir
	sock := filepath.Join(dir, "api.sock")
	s.srv = server.NewBgpServer(
		server.GrpcListenAddress("unix://"+sock),
		server.LoggerOption(&slogAdapter{l: s.log}),
	)
	// Undo everything on failure: no half-started server, no socket dir.
	defer func() {
		if err == nil {
			return
		}
		if s.cancel != nil {
			s.cancel()
		}
		if s.conn != nil {
			_ = s.conn.Close()
		}
		s.srv.Stop()
		_ = os.RemoveAll(dir)
		s.mu.Lock()
		s.stopped = true
		s.mu.Unlock()
	}()
	if err := s.serve(); err != nil {
		return err
	}
	listen := int32(-1)
	if s.cfg.ListenPort > 0 {
		listen = int32(s.cfg.ListenPort)
		disableMPTCPListeners(s.log)
	}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:             s.cfg.ASN,
		RouterId:        s.cfg.RouterID.String(),
		ListenPort:      listen,
		ListenAddresses: s.cfg.ListenAddresses,
	}}); err != nil {
		return fmt.Errorf("bgp: start (router-id %s, asn %d, port %d): %w", s.cfg.RouterID, s.cfg.ASN, s.cfg.ListenPort, err)
	}
	if err := s.exportLocalOnly(ctx); err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	// The node's subnets are known before the first path is judged:
	// without them the LAN route would get through.
	pr, err := readProtected(s.cfg.NetNS, s.cfg.PodCIDRs, s.cfg.UnderlayIPs)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.prot = pr
	s.mu.Unlock()
	go s.watchProtected(wctx)
	if err := s.srv.WatchEvent(wctx, &api.WatchEventRequest{
		Peer: &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{
			{Type: api.WatchEventRequest_Table_Filter_POST_POLICY, Init: true},
			{Type: api.WatchEventRequest_Table_Filter_EOR},
		}},
	}, s.onEvent); err != nil {
		return fmt.Errorf("bgp: watch events: %w", err)
	}
	if err := waitForFile(ctx, sock); err != nil {
		return fmt.Errorf("bgp: api socket: %w", err)
	}
	// WaitForReady: the socket may exist a moment before gobgp accepts on it.
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)))
	if err != nil {
		return fmt.Errorf("bgp: dial api socket: %w", err)
	}
	s.conn = conn
	s.client = api.NewGobgpApiClient(conn)
	s.md5Base = readMD5Counters(s.cfg.NetNS)
	s.log.Info("bgp speaker started", "router_id", s.cfg.RouterID, "asn", s.cfg.ASN, "listen_port", s.cfg.ListenPort)
	return nil
}

// exportLocalOnly makes the node a leaf: it advertises only what it
// originates and never passes one peer's routes to another (no transit).
func (s *Speaker) exportLocalOnly(ctx context.Context) error {
	const name = localOnlyPolicy
	if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{
		Name: name,
		Statements: []*api.Statement{{
			Name:       name + "-accept",
			Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
			Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
		}},
	}}); err != nil {
		return fmt.Errorf("bgp: add export policy: %w", err)
	}
	return s.setExport(ctx, true)
}

const localOnlyPolicy = "strata-local-only"

// setExport opens the export policy (local routes only) or holds every
// export back (used while a bulk load fills the RIB).
func (s *Speaker) setExport(ctx context.Context, open bool) error {
	a := &api.PolicyAssignment{Name: "global", Direction: api.PolicyDirection_EXPORT, DefaultAction: api.RouteAction_REJECT}
	if open {
		a.Policies = []*api.Policy{{Name: localOnlyPolicy}}
	}
	if err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: a}); err != nil {
		return fmt.Errorf("bgp: assign export policy: %w", err)
	}
	return nil
}

// serve runs gobgp's main loop. Management operations (StartBgp, AddPeer)
// execute on that loop's goroutine, so pinning it to the namespace makes the
// listener and its MD5 keys live there.
func (s *Speaker) serve() error {
	if s.cfg.NetNS == "" {
		go s.srv.Serve()
		return nil
	}
	target, err := netns.GetFromPath(s.cfg.NetNS)
	if err != nil {
		return fmt.Errorf("bgp: open netns %s: %w", s.cfg.NetNS, err)
	}
	errc := make(chan error, 1)
	go func() {
		// The thread stays locked until the goroutine ends, so the runtime
		// discards it instead of reusing a thread in the wrong namespace.
		runtime.LockOSThread()
		err := netns.Set(target)
		_ = target.Close()
		errc <- err
		if err != nil {
			return
		}
		s.srv.Serve()
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("bgp: enter netns %s: %w", s.cfg.NetNS, err)
	}
	return nil
}

// StopMode says how Stop treats established sessions.
type StopMode int

const (
	// StopCease sends a Cease NOTIFICATION: peers drop our routes at once.
	// Use it when the node leaves BGP for good (drain, role change).
	StopCease StopMode = iota
	// StopGraceful resets the TCP connections without a NOTIFICATION, the
	// way a crash would, so graceful-restart peers keep our routes (helper
	// mode) until we come back and send End-of-RIB or the restart time ends.
	StopGraceful
)

// Stop shuts the speaker down.
func (s *Speaker) Stop(ctx context.Context, mode StopMode) error {
	s.mu.Lock()
	if !s.started || s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	var errs []error
	abortDone := make(chan struct{})
	stopped := make(chan struct{})
	if mode == StopGraceful {
		if err := s.abortSessions(); err != nil {
			errs = append(errs, err)
		}
		// A peer may reconnect to the listener before gobgp closes it; keep
		// resetting until the server is down so no session lives long
		// enough to receive StopBgp's Cease.
		go func() {
			defer close(abortDone)
			for {
				select {
				case <-stopped:
					return
				case <-time.After(5 * time.Millisecond):
					_ = s.abortSessions()
				}
			}
		}()
	} else {
		close(abortDone)
	}
	if s.cancel != nil {
		s.cancel()
	}
	if s.conn != nil {
		_ = s.conn.Close()
	}
	s.srv.Stop()
	close(stopped)
	<-abortDone
	_ = os.RemoveAll(s.sockDir)
	s.log.Info("bgp speaker stopped", "graceful", mode == StopGraceful)
	return errors.Join(errs...)
}

// abortSessions destroys the BGP TCP sockets (SOCK_DESTROY, an RST) so gobgp
// has no connection left to send a Cease on.
func (s *Speaker) abortSessions() error {
	s.mu.Lock()
	peers := make(map[netip.Addr]PeerConfig, len(s.peers))
	for a, p := range s.peers {
		peers[a] = p
	}
	s.mu.Unlock()
	var errs []error
	// netlink's sock_diag requests open their socket in the calling thread's
	// namespace, so the whole walk runs inside the speaker's namespace.
	err := s.inNS(func() error {
		socks, err := nlretry.Dump(func() ([]*netlink.Socket, error) { return netlink.SocketDiagTCP(netlink.FAMILY_V4) })
		if err != nil {
			return fmt.Errorf("bgp: list tcp sockets: %w", err)
		}
		for _, sk := range socks {
			remote, ok := netip.AddrFromSlice(sk.ID.Destination)
			if !ok {
				continue
			}
			p, ok := peers[remote.Unmap()]
			if !ok {
				continue
			}
			rport := uint16(179)
			if p.RemotePort != 0 {
				rport = p.RemotePort
			}
			if sk.ID.DestinationPort != rport && int(sk.ID.SourcePort) != s.cfg.ListenPort {
				continue
			}
			local := &net.TCPAddr{IP: sk.ID.Source, Port: int(sk.ID.SourcePort)}
			rem := &net.TCPAddr{IP: sk.ID.Destination, Port: int(sk.ID.DestinationPort)}
			if err := netlink.SocketDestroy(local, rem); err != nil {
				errs = append(errs, fmt.Errorf("bgp: reset session %s -> %s: %w", local, rem, err))
			}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Speaker) inNS(fn func() error) error {
	if s.cfg.NetNS == "" {
		return fn()
	}
	return nsutil.NS{Name: s.cfg.NetNS, Path: s.cfg.NetNS}.Do(fn)
}

func secs(d time.Duration) uint64 { return uint64(d / time.Second) }

func (s *Speaker) apiPeer(p PeerConfig) *api.Peer {
	hold := p.HoldTime
	if hold == 0 {
		hold = defaultHoldTime
	}
	keep := p.KeepaliveTime
	if keep == 0 {
		keep = hold / 3
	}
	retry := p.ConnectRetry
	if retry == 0 {
		retry = 5 * time.Second
	}
	fam4 := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	fam6 := &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	peer := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			LocalAsn:        p.LocalASN,
			AuthPassword:    p.Password,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      secs(retry),
			HoldTime:          secs(hold),
			KeepaliveInterval: max(secs(keep), 1),
		}},
		Transport: &api.Transport{
			PassiveMode: p.Passive,
			RemotePort:  uint32(p.RemotePort),
		},
	}
	if p.LocalAddress.IsValid() {
		peer.Transport.LocalAddress = p.LocalAddress.String()
	}
	if p.MultihopTTL > 1 {
		peer.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.MultihopTTL)}
	}
	var afs []*api.AfiSafi
	for _, f := range []*api.Family{fam4, fam6} {
		af := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true},
			// Per family: gobgp counts and limits each family on its own.
			PrefixLimits: &api.PrefixLimit{Family: f, MaxPrefixes: p.maxPrefixes()}}
		if p.GracefulRestart {
			af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		afs = append(afs, af)
	}
	peer.AfiSafis = afs
	rt := p.RestartTime
	if rt == 0 {
		rt = defaultRestartTime
	}
	// Every session carries the GR capability, so peers send End-of-RIB
	// (the installer waits for it after a restart). Without
	// GracefulRestart it is helper only: no forwarding state is claimed,
	// so peers drop our routes when we go away.
	peer.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(secs(rt)), HelperOnly: !p.GracefulRestart}
	return peer
}

// AddPeer configures a new neighbour.
func (s *Speaker) AddPeer(ctx context.Context, p PeerConfig) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("bgp peer %s: %w", p.Address, err)
	}
	p.Address = p.Address.Unmap()
	s.mu.Lock()
	if _, ok := s.peers[p.Address]; ok {
		s.mu.Unlock()
		return fmt.Errorf("bgp peer %s: already configured (use UpdatePeer)", p.Address)
	}
	s.mu.Unlock()
	if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p)}); err != nil {
		return fmt.Errorf("bgp: add peer %s (asn %d): %w", p.Address, p.ASN, err)
	}
	s.mu.Lock()
	s.peers[p.Address] = p
	s.state[p.Address] = StateIdle
	s.since[p.Address] = time.Now()
	s.mu.Unlock()
	s.log.Info("bgp peer added", "peer", p.Address, "asn", p.ASN, "md5", p.Password != "", "graceful_restart", p.GracefulRestart, "passive", p.Passive)
	return nil
}

// UpdatePeer changes a neighbour in place. Changes gobgp cannot apply to a
// live session (ASN, password, transport) re-create the peer; the speaker
// itself keeps running.
func (s *Speaker) UpdatePeer(ctx context.Context, p PeerConfig) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("bgp peer %s: %w", p.Address, err)
	}
	p.Address = p.Address.Unmap()
	s.mu.Lock()
	old, ok := s.peers[p.Address]
	s.mu.Unlock()
	if !ok {
		return s.AddPeer(ctx, p)
	}
	if old.Equal(p) {
		return nil
	}
	if old.sameSession(p) {
		// Only the import policy changed: judge the peer's paths again,
		// the session stays up.
		s.mu.Lock()
		s.peers[p.Address] = p
		s.mu.Unlock()
		s.rejudge()
		s.log.Info("bgp peer import policy changed", "peer", p.Address, "allow", p.Import.Allow)
		return nil
	}
	if err := s.RemovePeer(ctx, p.Address); err != nil {
		return err
	}
	return s.AddPeer(ctx, p)
}

// RemovePeer deletes a neighbour (with a Cease) and drops its routes.
func (s *Speaker) RemovePeer(ctx context.Context, addr netip.Addr) error {
	addr = addr.Unmap()
	s.mu.Lock()
	_, ok := s.peers[addr]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
		return fmt.Errorf("bgp: remove peer %s: %w", addr, err)
	}
	s.mu.Lock()
	delete(s.peers, addr)
	delete(s.state, addr)
	delete(s.since, addr)
	delete(s.flaps, addr)
	delete(s.bad, addr)
	delete(s.eor, addr)
	s.mu.Unlock()
	s.evMu.Lock()
	s.publish(s.rib.dropPeer(addr))
	s.evMu.Unlock()
	s.log.Info("bgp peer removed", "peer", addr)
	return nil
}

// PeerConfigs returns the configured neighbours.
func (s *Speaker) PeerConfigs() []PeerConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PeerConfig, 0, len(s.peers))
	for _, p := range s.peers {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b PeerConfig) int { return a.Address.Compare(b.Address) })
	return out
}

// checkAdvertisement refuses what cannot be encoded, without encoding it.
func checkAdvertisement(a Advertisement) error {
	if !a.Prefix.IsValid() {
		return fmt.Errorf("prefix %q is not valid (use e.g. 10.244.1.0/24)", a.Prefix)
	}
	p := a.Prefix.Masked()
	if !a.NextHop.IsValid() {
		return nil
	}
	if p.Addr().Is4() && !a.NextHop.Is4() {
		return fmt.Errorf("prefix %s: next hop %s must be IPv4", p, a.NextHop)
	}
	if !p.Addr().Is4() && (!a.NextHop.Is6() || a.NextHop.Is4In6()) {
		return fmt.Errorf("prefix %s: next hop %s must be IPv6", p, a.NextHop)
	}
	return nil
}

// nativePath returns an advertisement's NLRI and BGP path attributes.
func nativePath(a Advertisement) (bgp.AddrPrefixInterface, []bgp.PathAttributeInterface, error) {
	if err := checkAdvertisement(a); err != nil {
		return nil, nil, err
	}
	p := a.Prefix.Masked()
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	var nlri bgp.AddrPrefixInterface
	if p.Addr().Is4() {
		nlri = bgp.NewIPAddrPrefix(uint8(p.Bits()), p.Addr().String())
		nh := "0.0.0.0"
		if a.NextHop.IsValid() {
			nh = a.NextHop.String()
		}
		attrs = append(attrs, bgp.NewPathAttributeNextHop(nh))
	} else {
		nlri = bgp.NewIPv6AddrPrefix(uint8(p.Bits()), p.Addr().String())
		nh := "::"
		if a.NextHop.IsValid() {
			nh = a.NextHop.String()
		}
		attrs = append(attrs, bgp.NewPathAttributeMpReachNLRI(nh, []bgp.AddrPrefixInterface{nlri}))
	}
	if len(a.Communities) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(a.Communities))
	}
	if a.LocalPref > 0 {
		attrs = append(attrs, bgp.NewPathAttributeLocalPref(a.LocalPref))
	}
	return nlri, attrs, nil
}

// buildPath is the plain gobgp API form of a path (protobuf Any messages),
// used by the one-call-per-prefix baseline.
func buildPath(a Advertisement, withdraw bool) (*api.Path, error) {
	nlri, attrs, err := nativePath(a)
	if err != nil {
		return nil, err
	}
	return apiutil.NewPath(nlri, withdraw, attrs, time.Now())
}

var (
	familyIPv4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyIPv6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// attrKey identifies IPv4 advertisements whose path attributes are equal.
type attrKey struct {
	nextHop     netip.Addr
	communities string
	localPref   uint32
}

// pathEncoder builds paths in gobgp's binary form (NlriBinary and
// PattrsBinary): gobgp decodes those straight from BGP wire bytes, where the
// protobuf form costs an Any message per NLRI and per attribute on both
// sides of the API. IPv4 prefixes with equal attributes share one encoded
// attribute list, so only the NLRI is encoded per prefix. IPv6 carries its
// NLRI inside MP_REACH and is encoded whole.
type pathEncoder struct {
	shared map[attrKey][][]byte
}

func newPathEncoder() *pathEncoder { return &pathEncoder{shared: map[attrKey][][]byte{}} }

func (e *pathEncoder) path(a Advertisement, withdraw bool) (*api.Path, error) {
	p := a.Prefix.Masked()
	if p.IsValid() && p.Addr().Is4() && (!a.NextHop.IsValid() || a.NextHop.Is4()) {
		k := attrKey{nextHop: a.NextHop, localPref: a.LocalPref}
		if len(a.Communities) > 0 {
			k.communities = fmt.Sprint(a.Communities)
		}
		attrs, ok := e.shared[k]
		if !ok {
			_, native, err := nativePath(a)
			if err != nil {
				return nil, err
			}
			if attrs, err = serializeAttrs(native); err != nil {
				return nil, err
			}
			e.shared[k] = attrs
		}
		// An IPv4 NLRI on the wire: the length in bits, then only the
		// bytes the length covers.
		addr := p.Addr().As4()
		nlri := make([]byte, 1+(p.Bits()+7)/8)
		nlri[0] = byte(p.Bits())
		copy(nlri[1:], addr[:])
		return &api.Path{NlriBinary: nlri, PattrsBinary: attrs, Family: familyIPv4, IsWithdraw: withdraw}, nil
	}
	nlri, native, err := nativePath(a)
	if err != nil {
		return nil, err
	}
	nb, err := nlri.Serialize()
	if err != nil {
		return nil, fmt.Errorf("prefix %s: encode nlri: %w", p, err)
	}
	attrs, err := serializeAttrs(native)
	if err != nil {
		return nil, err
	}
	fam := familyIPv4
	if p.Addr().Is6() {
		fam = familyIPv6
	}
	return &api.Path{NlriBinary: nb, PattrsBinary: attrs, Family: fam, IsWithdraw: withdraw}, nil
}

func serializeAttrs(attrs []bgp.PathAttributeInterface) ([][]byte, error) {
	out := make([][]byte, len(attrs))
	for i, a := range attrs {
		b, err := a.Serialize()
		if err != nil {
			return nil, fmt.Errorf("encode path attribute %s: %w", a.GetType(), err)
		}
		out[i] = b
	}
	return out, nil
}

// Advertise originates prefixes. Many prefixes are sent in batches that
// share attributes, so peers receive few large UPDATEs.
func (s *Speaker) Advertise(ctx context.Context, ads ...Advertisement) error {
	return s.stream(ctx, ads, false)
}

// Withdraw stops originating prefixes.
func (s *Speaker) Withdraw(ctx context.Context, prefixes ...netip.Prefix) error {
	ads := make([]Advertisement, len(prefixes))
	for i, p := range prefixes {
		ads[i] = Advertisement{Prefix: p}
	}
	return s.stream(ctx, ads, true)
}

// bulkThreshold is the batch size from which Advertise loads the RIB with
// exports held back and then sends the table with one soft reset: gobgp
// turns each propagated path into its own UPDATE, but a soft reset goes out
// as UPDATEs packing many prefixes that share attributes.
const bulkThreshold = 512

func (s *Speaker) stream(ctx context.Context, ads []Advertisement, withdraw bool) (err error) {
	if s.client == nil {
		return errors.New("bgp: speaker not started (call Start first)")
	}
	if len(ads) == 0 {
		return nil
	}
	s.advMu.Lock()
	defer s.advMu.Unlock()
	// Check everything first: a bad prefix fails the call before any path
	// reaches the RIB.
	for _, a := range ads {
		if err := checkAdvertisement(a); err != nil {
			return fmt.Errorf("bgp: %w", err)
		}
	}
	// Only for prefixes not yet advertised: holding exports back while an
	// already advertised prefix is re-sent would withdraw it for a moment.
	if !withdraw && len(ads) >= bulkThreshold && s.noneAdvertised(ads) {
		if err := s.setExport(ctx, false); err == nil {
			defer func() {
				if rerr := s.setExport(context.WithoutCancel(ctx), true); rerr != nil {
					err = errors.Join(err, rerr)
					return
				}
				if rerr := s.srv.ResetPeer(context.WithoutCancel(ctx), &api.ResetPeerRequest{Address: "all", Soft: true, Direction: api.ResetPeerRequest_OUT}); rerr != nil {
					err = errors.Join(err, fmt.Errorf("bgp: send bulk load to peers: %w", rerr))
				}
			}()
		}
	}
	err = s.sendPaths(ctx, ads, withdraw)
	if err != nil {
		verb := "advertise"
		if withdraw {
			verb = "withdraw"
		}
		return fmt.Errorf("bgp: %s %d prefixes: %w", verb, len(ads), err)
	}
	s.mu.Lock()
	for _, a := range ads {
		if withdraw {
			delete(s.adv, a.Prefix.Masked())
		} else {
			s.adv[a.Prefix.Masked()] = struct{}{}
		}
	}
	s.mu.Unlock()
	return nil
}

// sendPaths encodes and streams paths to gobgp chunk by chunk over one
// AddPathStream call, so only one chunk's encoding is alive at a time.
func (s *Speaker) sendPaths(ctx context.Context, ads []Advertisement, withdraw bool) error {
	st, err := s.client.AddPathStream(ctx)
	if err != nil {
		return fmt.Errorf("open path stream: %w", err)
	}
	enc := newPathEncoder()
	for len(ads) > 0 {
		n := min(len(ads), streamChunk)
		// A fresh slice per chunk: gRPC may still read a sent message.
		paths := make([]*api.Path, n)
		for i, a := range ads[:n] {
			if paths[i], err = enc.path(a, withdraw); err != nil {
				_, _ = st.CloseAndRecv()
				return err
			}
		}
		if err := st.Send(&api.AddPathStreamRequest{TableType: api.TableType_GLOBAL, Paths: paths}); err != nil {
			// The server's reason, if it gave one, comes with the close.
			_, cerr := st.CloseAndRecv()
			return errors.Join(fmt.Errorf("send paths: %w", err), cerr)
		}
		ads = ads[n:]
	}
	_, err = st.CloseAndRecv()
	return err
}

func (s *Speaker) noneAdvertised(ads []Advertisement) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range ads {
		if _, ok := s.adv[a.Prefix.Masked()]; ok {
			return false
		}
	}
	return true
}

// AdvertiseEach originates prefixes with one AddPath call each: gobgp's
// plain API, kept as the benchmark baseline.
func (s *Speaker) AdvertiseEach(ctx context.Context, ads ...Advertisement) error {
	for _, a := range ads {
		p, err := buildPath(a, false)
		if err != nil {
			return fmt.Errorf("bgp: %w", err)
		}
		if _, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p}); err != nil {
			return fmt.Errorf("bgp: advertise %s: %w", a.Prefix, err)
		}
	}
	return nil
}

// Watch calls fn with the current learned best routes, then with every
// change, until ctx ends. Calls are serialised; a slow fn delays later
// changes, never loses them.
func (s *Speaker) Watch(ctx context.Context, fn func([]Route)) {
	s.mu.Lock()
	id := s.nextSub
	s.nextSub++
	s.subs[id] = fn
	snap := s.rib.snapshot()
	s.mu.Unlock()
	if len(snap) > 0 {
		fn(snap)
	}
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		delete(s.subs, id)
		s.mu.Unlock()
	}()
}

// RestartState says how far the peers are with their initial updates.
type RestartState struct {
	// Peers is how many peers are configured; Waiting are those that have
	// not sent End-of-RIB in their current session.
	Peers   int
	Waiting []netip.Addr
	// RestartTime is the longest graceful-restart time of the peers (120 s
	// when none is set): how long routes of an earlier run are kept.
	RestartTime time.Duration
}

// GracefulRestartState reports which peers have sent End-of-RIB.
func (s *Speaker) GracefulRestartState() RestartState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := RestartState{Peers: len(s.peers)}
	for a, p := range s.peers {
		if !s.eor[a] {
			st.Waiting = append(st.Waiting, a)
		}
		rt := p.RestartTime
		if rt == 0 {
			rt = defaultRestartTime
		}
		st.RestartTime = max(st.RestartTime, rt)
	}
	if st.RestartTime == 0 {
		st.RestartTime = defaultRestartTime
	}
	slices.SortFunc(st.Waiting, netip.Addr.Compare)
	return st
}

// Learned returns the current learned best routes.
func (s *Speaker) Learned() []Route { return s.rib.snapshot() }

func (s *Speaker) publish(routes []Route) {
	if len(routes) == 0 {
		return
	}
	s.mu.Lock()
	subs := make([]func([]Route), 0, len(s.subs))
	for _, f := range s.subs {
		subs = append(subs, f)
	}
	s.mu.Unlock()
	for _, f := range subs {
		f(routes)
	}
}

// onEvent runs on gobgp's single watch goroutine, so path and peer events
// arrive in order.
func (s *Speaker) onEvent(ev *api.WatchEventResponse) {
	if pe := ev.GetPeer(); pe != nil {
		s.onPeerEvent(pe)
		return
	}
	t := ev.GetTable()
	if t == nil {
		return
	}
	s.evMu.Lock()
	defer s.evMu.Unlock()
	var changed []Route
	for _, p := range t.Paths {
		peer, err := netip.ParseAddr(p.NeighborIp)
		if err != nil || p.IsFromExternal {
			continue
		}
		peer = peer.Unmap()
		s.mu.Lock()
		cfg, known := s.peers[peer]
		prot := s.prot
		s.mu.Unlock()
		if !known {
			continue // our own originated paths
		}
		if p.Nlri == nil && len(p.NlriBinary) == 0 {
			s.mu.Lock()
			first := !s.eor[peer]
			s.eor[peer] = true
			s.mu.Unlock()
			if first {
				s.log.Info("bgp: End-of-RIB received", "peer", peer)
			}
			continue
		}
		prefix, c, err := decodePath(p)
		if err != nil {
			s.badUpdate(peer, err)
			continue
		}
		if !p.IsWithdraw {
			v := JudgeImport(prefix, c.NextHop, cfg.Import, prot)
			c.Reject, c.Detail = v.Reason, v.Detail
		}
		if rt, ok := s.rib.update(peer, prefix, c, p.IsWithdraw); ok {
			changed = append(changed, rt)
		}
	}
	s.publish(changed)
}

// badUpdates is one peer's count of paths that could not be used.
type badUpdates struct {
	n    uint64
	last string
}

func (s *Speaker) badUpdate(peer netip.Addr, err error) {
	s.mu.Lock()
	b := s.bad[peer]
	b.n++
	b.last = err.Error()
	s.bad[peer] = b
	s.mu.Unlock()
	// Counted and shown in status; the log line is for the first only, so
	// a peer sending garbage cannot flood it.
	if b.n == 1 {
		s.log.Warn("bgp: skip undecodable path (counted in status)", "peer", peer, "err", err)
	}
}

// rejudge applies the current import policies and node facts to every held
// path and publishes what changed.
func (s *Speaker) rejudge() {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	s.mu.Lock()
	peers := make(map[netip.Addr]ImportPolicy, len(s.peers))
	for a, p := range s.peers {
		peers[a] = p.Import
	}
	prot := s.prot
	s.mu.Unlock()
	s.publish(s.rib.rejudge(func(peer netip.Addr, prefix netip.Prefix, c candidate) ImportVerdict {
		return JudgeImport(prefix, c.NextHop, peers[peer], prot)
	}))
}

// refreshProtected reads the node's addresses again and reports whether
// they changed.
func (s *Speaker) refreshProtected() bool {
	pr, err := readProtected(s.cfg.NetNS, s.cfg.PodCIDRs, s.cfg.UnderlayIPs)
	if err != nil {
		// Keep the last known facts: judging against none would let a
		// LAN route through.
		s.log.Warn("bgp: import policy keeps the last known node subnets", "err", err)
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if pr.equal(s.prot) {
		return false
	}
	s.prot = pr
	return true
}

// watchProtected follows the node's addresses: a subnet added later rejects
// learned routes that now collide with it, one removed accepts them again.
func (s *Speaker) watchProtected(ctx context.Context) {
	every := s.cfg.ProtectedRefresh
	if every <= 0 {
		every = 5 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.refreshProtected() {
				s.rejudge()
			}
		}
	}
}

func (s *Speaker) onPeerEvent(pe *api.WatchEventResponse_PeerEvent) {
	if pe.Type != api.WatchEventResponse_PeerEvent_STATE || pe.Peer == nil || pe.Peer.State == nil {
		return
	}
	addr, err := netip.ParseAddr(pe.Peer.State.NeighborAddress)
	if err != nil {
		return
	}
	addr = addr.Unmap()
	st := sessionState(pe.Peer.State.SessionState)
	s.mu.Lock()
	prev, known := s.state[addr]
	if known && prev != st {
		s.state[addr] = st
		s.since[addr] = time.Now()
		if prev == StateEstablished {
			s.flaps[addr]++
		}
		if st != StateEstablished {
			delete(s.eor, addr)
		}
	}
	s.mu.Unlock()
	if !known {
		return
	}
	if prev != st {
		s.log.Info("bgp peer state", "peer", addr, "from", prev, "to", st)
	}
	if prev == StateEstablished && st != StateEstablished {
		s.evMu.Lock()
		s.publish(s.rib.dropPeer(addr))
		s.evMu.Unlock()
	}
}

func sessionState(v api.PeerState_SessionState) SessionState {
	switch v {
	case api.PeerState_IDLE:
		return StateIdle
	case api.PeerState_CONNECT:
		return StateConnect
	case api.PeerState_ACTIVE:
		return StateActive
	case api.PeerState_OPENSENT:
		return StateOpenSent
	case api.PeerState_OPENCONFIRM:
		return StateOpenConfirm
	case api.PeerState_ESTABLISHED:
		return StateEstablished
	}
	return StateUnknown
}

func decodePath(p *api.Path) (netip.Prefix, candidate, error) {
	nlri, err := apiutil.GetNativeNlri(p)
	if err != nil {
		return netip.Prefix{}, candidate{}, fmt.Errorf("NLRI: %w", err)
	}
	prefix, err := netip.ParsePrefix(nlri.String())
	if err != nil {
		return netip.Prefix{}, candidate{}, fmt.Errorf("NLRI %q is not an IP prefix (only IPv4/IPv6 unicast is used): %w", nlri.String(), err)
	}
	var c candidate
	c.LocalPref = 100
	if p.IsWithdraw {
		return prefix, c, nil
	}
	attrs, err := apiutil.GetNativePathAttributes(p)
	if err != nil {
		return netip.Prefix{}, candidate{}, fmt.Errorf("prefix %s: path attributes: %w", prefix, err)
	}
	for _, a := range attrs {
		switch v := a.(type) {
		case *bgp.PathAttributeNextHop:
			c.NextHop, _ = netip.AddrFromSlice(v.Value)
		case *bgp.PathAttributeMpReachNLRI:
			nh := v.Nexthop
			if v.LinkLocalNexthop != nil && (nh == nil || nh.IsUnspecified()) {
				nh = v.LinkLocalNexthop
			}
			c.NextHop, _ = netip.AddrFromSlice(nh)
		case *bgp.PathAttributeLocalPref:
			c.LocalPref = v.Value
		case *bgp.PathAttributeMultiExitDisc:
			c.MED = v.Value
		case *bgp.PathAttributeAsPath:
			for _, seg := range v.Value {
				c.ASPathLen += seg.ASLen()
			}
		}
	}
	c.NextHop = c.NextHop.Unmap()
	return prefix, c, nil
}

// Peers reports every configured neighbour's state.
func (s *Speaker) Peers(ctx context.Context) ([]PeerStatus, error) {
	if s.srv == nil {
		return nil, errors.New("bgp: speaker not started")
	}
	var out []PeerStatus
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		if p.State == nil || p.Conf == nil {
			return
		}
		addr, err := netip.ParseAddr(p.Conf.NeighborAddress)
		if err != nil {
			return
		}
		addr = addr.Unmap()
		st := PeerStatus{Address: addr, ASN: p.Conf.PeerAsn, State: sessionState(p.State.SessionState),
			OverLimit: p.State.AdminState == api.PeerState_PFX_CT}
		for _, af := range p.AfiSafis {
			if af.State != nil {
				st.Accepted += af.State.Accepted
			}
		}
		pc := s.rib.countFrom(addr)
		st.Received, st.Rejected, st.RejectedExample = pc.Accepted, pc.Rejected, pc.Example
		out = append(out, st)
	})
	if err != nil {
		return nil, fmt.Errorf("bgp: list peers: %w", err)
	}
	md5 := readMD5Counters(s.cfg.NetNS)
	s.mu.Lock()
	for i := range out {
		a := out[i].Address
		out[i].Since = s.since[a]
		out[i].Flaps = s.flaps[a]
		out[i].MaxPrefixes = s.peers[a].maxPrefixes()
		out[i].BadUpdates, out[i].LastBadUpdate = s.bad[a].n, s.bad[a].last
		if out[i].State == StateEstablished {
			// The export policy sends only what we originate; gobgp's own
			// counter counts before that policy.
			out[i].Sent = uint64(len(s.adv))
		}
		switch {
		case out[i].OverLimit:
			out[i].Reason = fmt.Sprintf("the peer sent more than maxPrefixes %d: the session was closed (Cease, maximum number of prefixes reached) and stays down; raise spec.maxPrefixes or fix the router's export, and the peer is re-created", out[i].MaxPrefixes)
		case out[i].State != StateEstablished:
			out[i].Reason = downReason(s.peers[a], out[i].State, s.md5Base, md5)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return out, nil
}

func downReason(p PeerConfig, st SessionState, base, now md5Counters) string {
	switch {
	case p.Password != "" && now.Failure > base.Failure:
		return "TCP MD5 signature mismatch (kernel TCPMD5Failure rose by " + strconv.FormatUint(now.Failure-base.Failure, 10) + "): check that both sides use the same password"
	case p.Password != "" && now.NotFound > base.NotFound:
		return "peer connects without a TCP MD5 signature but a password is configured here: set the same password on the peer"
	case p.Password == "" && now.Unexpected > base.Unexpected:
		return "peer signs with TCP MD5 but no password is configured here: set passwordSecretRef"
	case st == StateIdle || st == StateActive || st == StateConnect:
		if p.Passive {
			return "waiting for the peer to connect (passive)"
		}
		return "no TCP session yet: check the peer address is reachable and the peer is configured for this node"
	}
	return "session negotiating (" + string(st) + ")"
}

// disableMPTCPListeners turns off Go's default MPTCP listeners (Go 1.24+):
// an MPTCP socket rejects TCP_MD5SIG and IP_TTL with ENOPROTOOPT, so passive
// sessions with a password would never come up. The runtime re-reads GODEBUG
// when it changes; mains can instead say `//go:debug multipathtcp=0`.
func disableMPTCPListeners(log *slog.Logger) {
	cur := os.Getenv("GODEBUG")
	if strings.Contains(cur, "multipathtcp=") {
		return
	}
	if cur != "" {
		cur += ","
	}
	_ = os.Setenv("GODEBUG", cur+"multipathtcp=0")
	log.Debug("bgp: MPTCP listeners disabled so TCP MD5 works on the BGP listener")
}

func waitForFile(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not appear: %w", path, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// slogAdapter routes gobgp's logs into slog, one level down: gobgp is chatty
// at Info.
type slogAdapter struct {
	l     *slog.Logger
	level gobgplog.LogLevel
}

func attrs(f gobgplog.Fields) []any {
	out := make([]any, 0, 2*len(f))
	for k, v := range f {
		out = append(out, k, v)
	}
	return out
}

func (a *slogAdapter) Panic(msg string, f gobgplog.Fields) { a.l.Error(msg, attrs(f)...); panic(msg) }
func (a *slogAdapter) Fatal(msg string, f gobgplog.Fields) { a.l.Error(msg, attrs(f)...) }
func (a *slogAdapter) Error(msg string, f gobgplog.Fields) { a.l.Error(msg, attrs(f)...) }
func (a *slogAdapter) Warn(msg string, f gobgplog.Fields)  { a.l.Warn(msg, attrs(f)...) }
func (a *slogAdapter) Info(msg string, f gobgplog.Fields)  { a.l.Debug(msg, attrs(f)...) }
func (a *slogAdapter) Debug(msg string, f gobgplog.Fields) {}
func (a *slogAdapter) SetLevel(l gobgplog.LogLevel)        { a.level = l }
func (a *slogAdapter) GetLevel() gobgplog.LogLevel         { return gobgplog.InfoLevel }
